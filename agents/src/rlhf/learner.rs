//! Policy-gradient learners at token level, on R(x, y) = r(x, y) − β log π(y|x)/p(y|x) paid per
//! token (the score at the last real token; see `gradgym_envs::text::token_rewards`). The state
//! before token t is (x, y_<t); the action is y_t; the episode ends at the response's last real
//! token. The same three algorithms as on the classic tasks, chosen by `rl.algo`:
//!
//! - `ppo` (Schulman et al. 2017 as Ziegler et al. 2019 and Stiennon et al. 2020 run it): GAE(λ)
//!   over tokens from a value function that starts as the reward model (its own network, body
//!   and head, as in Stiennon et al.), advantages whitened over the batch's real tokens, then
//!   `update_epochs` passes of `num_minibatches` shuffled minibatches of prompts, each a clipped
//!   surrogate step for the policy (or, with `ppo_loss = "kl"`, the KL-penalised `L^KLPEN`,
//!   its β fixed or adapted after each update) and a clipped value-loss step for the value
//!   function; CleanRL's `target_kl` ends the epochs early.
//! - `reinforce`: one step per batch on the reward-to-go G_t minus the learned baseline V(s_t)
//!   (the value function fitted to G_t).
//! - `a2c`: one step per batch on GAE(λ) advantages.
//!
//! And two that sample `num_generations` (k) responses per prompt and use no value function
//! (`gradgym_algorithms::group`), with PPO's clipped surrogate over the same `update_epochs`
//! and `num_minibatches`:
//! - `rloo`: each sequence's advantage is its KL-penalised reward less the mean of the other
//!   k − 1 rewards of its group, on every token; the loss sums each sequence's tokens.
//! - `grpo`: each sequence's advantage is its score standardised within its group; the KL to
//!   the reference is not in the reward but in the loss, β times the k3 estimate per token, and
//!   the loss averages each sequence's tokens.
//!
//! PPO's, A2C's and REINFORCE's losses are means over real response tokens; RLOO's and GRPO's
//! weigh them per sequence (`gradgym_algorithms::group::token_weights`). Prompt and padding
//! positions are masked out of every loss.

use anyhow::Result;
use gradgym_algorithms::advantages::{Shape, gae, reward_to_go};
use gradgym_algorithms::group::{
    Weighting, centred_advantages, grpo_advantages, rloo_advantages, token_weights,
};
use gradgym_algorithms::kl::KlController;
use gradgym_algorithms::losses::{
    policy_gradient_loss, ppo_clip_loss_trl, ppo_kl_loss_trl, reference_k3_penalty, value_loss,
    weighted_clip_loss_trl,
};
use gradgym_envs::rng::Stream;
use gradgym_envs::text::token_rewards;
use tch::nn::{Optimizer, OptimizerConfig};
use tch::{Kind, Tensor, nn};

use gradgym_envs::text::PROMPT_LEN;

use super::reward::shuffle;
use super::sequences::{
    Sequences, TokenStats, rows_f64, scores, token_logprobs, token_stats, token_stats_with,
    token_values, vec_f64,
};
use crate::backend::native::{Adam, clip_grad_norm};
use crate::config::rlhf::{RlConfig, ScaleRewards, TextAlgo};
use crate::config::{BackendKind, PpoLoss};
use crate::nn::gpt::Gpt;
use crate::nn::gpt_native::{Batch, Head, NativeGpt, Outputs, Tape};

/// One batch of responses with everything the update needs.
#[derive(Debug)]
pub struct TokenRollout {
    pub seqs: Sequences,
    /// `[B, T]` log π_old of each response token (0 at padding).
    pub old_logprobs: Tensor,
    /// `[B, T]` V(s_t) before each token (0 for RLOO and GRPO, which have no value function).
    pub old_values: Tensor,
    /// `[B, T]` log p of each response token under the frozen reference (0 at padding).
    pub ref_logprobs: Tensor,
    /// `[B, T]` advantages (whitened over the batch's real tokens when `norm_adv`, for PPO,
    /// A2C and REINFORCE alike, as on the classic tasks; RLOO's and GRPO's, per group, never).
    pub advantages: Tensor,
    /// RLOO and GRPO: `[B, T]` each real token's weight in the loss over the whole batch
    /// (`gradgym_algorithms::group::token_weights`).
    pub token_weights: Option<Tensor>,
    /// β of the KL to the reference for this batch (GRPO's loss reads it).
    pub beta: f64,
    /// `[B, T]` value targets.
    pub returns: Tensor,
    /// Per sequence: the reward model's score (normalised; less the missing-`<eos>` penalty).
    pub scores: Vec<f64>,
    /// Per sequence: KL k1 = Σₜ (log π − log p) and k3 = Σₜ ((ρ − 1) − log ρ), ρ = p/π.
    pub kl_k1: Vec<f64>,
    pub kl_k3: Vec<f64>,
    /// Per sequence: the mean true entropy of π over its tokens.
    pub entropy: Vec<f64>,
    /// Per sequence: the total reward Σ R_t = score − β k1.
    pub total_reward: Vec<f64>,
    /// The rollout's own forward passes of the policy and the value function, with their
    /// graphs: the first gradient step of [`TokenLearner::update`] when it covers the whole
    /// batch in order (one minibatch) and neither network changed since (else recomputed).
    graphs: Option<RolloutGraphs>,
    /// The same for the native backend: the rollout's passes of the policy and the value
    /// function, their outputs and activations (each valid for the weights it ran, see
    /// [`Tape`]). The update that uses them takes them, so that their buffers go back to the
    /// pool after its first step instead of staying alive through the later ones.
    native: std::sync::Mutex<Option<NativePasses>>,
}

/// See [`TokenRollout`]'s `native`.
#[derive(Debug)]
struct NativePasses {
    policy: (Outputs, Tape),
    /// None for RLOO and GRPO.
    value: Option<(Outputs, Tape)>,
}

/// See [`TokenRollout`]'s `graphs`.
#[derive(Debug)]
struct RolloutGraphs {
    /// Each parameter of the policy and the value function: (storage, version). An optimiser
    /// step, or any other write, changes a version; another network, a storage.
    params: Vec<(usize, i64)>,
    stats: TokenStats,
    values: Tensor,
}

/// What [`RolloutGraphs::params`] compares.
fn param_versions(policy: &Gpt, value: &Gpt) -> Vec<(usize, i64)> {
    policy
        .vs
        .trainable_variables()
        .iter()
        .chain(value.vs.trainable_variables().iter())
        .map(|t| (t.data_ptr() as usize, t.internal_version()))
        .collect()
}

/// What an update measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenUpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    /// TRL's `policy/approxkl_avg`, `½ mean((log ρ)²)` over the update's gradient steps
    /// ([`gradgym_algorithms::losses::TrlRatioStats`]).
    pub approx_kl: f64,
    /// TRL's `policy/clipfrac_avg`: the share of tokens whose gradient the clip took.
    pub clipfrac: f64,
    /// Mean |V − target| over real tokens before the update.
    pub value_error: f64,
    pub explained_variance: f64,
    pub gradient_steps: usize,
    /// PPO-KL's β toward the old policy in this update's steps (`ppo_loss = "kl"`; else 0).
    pub kl_coef: f64,
    /// PPO-KL: the k3 estimate of KL[π_old ‖ π] over the batch's real tokens after the update,
    /// what the adaptive β reads (else 0).
    pub kl_after: f64,
}

/// The learner: the policy, its value function and their optimisers (RLOO and GRPO keep the
/// value function, untouched, so that the learner's shape is one).
pub struct TokenLearner {
    pub algo: TextAlgo,
    pub config: RlConfig,
    pub policy: Gpt,
    pub value: Gpt,
    policy_opt: Optimizer,
    value_opt: Optimizer,
    /// The native backend's state, when it runs (`rl.backend`).
    native: Option<Native>,
    /// PPO-KL's β toward the old policy (`rl.ppo_loss = "kl"`), updated after each update.
    ppo_kl: KlController,
}

/// The native backend ([`crate::nn::gpt_native`]): host copies of both networks, which its
/// gradient steps change (and write back into [`TokenLearner::policy`] and
/// [`TokenLearner::value`] after every update), and their Adam moments (PyTorch's Adam, the
/// same settings as the libtorch backend's).
struct Native {
    policy: NativeGpt,
    value: NativeGpt,
    policy_adam: Adam,
    value_adam: Adam,
    /// The tch models' parameter versions when the copies were last written into them: if
    /// those moved, something else changed the weights, and the copies are read again.
    synced: Vec<(usize, i64)>,
}

/// A batch's tokens on the host for the native passes: the inputs (positions 0 … P + T − 2)
/// and the response tokens they predict, `[B, P + T − 1]` and `[B, T]`, and the whole rows.
struct HostSeqs {
    inputs: Vec<i64>,
    targets: Vec<i64>,
    tokens: Vec<i64>,
    b: usize,
    t: usize,
}

impl HostSeqs {
    fn of(seqs: &Sequences) -> Self {
        let (b, t) = (seqs.lengths.len(), seqs.width);
        let l = PROMPT_LEN + t;
        let tokens = Vec::<i64>::try_from(
            seqs.tokens
                .to_device(tch::Device::Cpu)
                .contiguous()
                .view([-1]),
        )
        .expect("int64 tokens");
        assert_eq!(tokens.len(), b * l);
        let mut inputs = Vec::with_capacity(b * (l - 1));
        let mut targets = Vec::with_capacity(b * t);
        for row in tokens.chunks_exact(l) {
            inputs.extend_from_slice(&row[..l - 1]);
            targets.extend_from_slice(&row[PROMPT_LEN..]);
        }
        Self {
            inputs,
            targets,
            tokens,
            b,
            t,
        }
    }

    /// The passes' batch over the inputs, reading the positions that predict response tokens.
    fn batch(&self) -> Batch<'_> {
        Batch {
            tokens: &self.inputs,
            b: self.b,
            l: PROMPT_LEN + self.t - 1,
            from: PROMPT_LEN - 1,
        }
    }

    /// Rows `index` of the batch.
    fn rows(&self, index: &[i64]) -> Self {
        let (l, t) = (PROMPT_LEN + self.t, self.t);
        let pick = |v: &[i64], w: usize| -> Vec<i64> {
            index
                .iter()
                .flat_map(|&i| v[i as usize * w..(i as usize + 1) * w].iter().copied())
                .collect()
        };
        Self {
            inputs: pick(&self.inputs, l - 1),
            targets: pick(&self.targets, t),
            tokens: pick(&self.tokens, l),
            b: index.len(),
            t,
        }
    }
}

/// `[B, T]` host floats as a tensor on `device`, times `mask`.
fn masked_tensor(v: &[f32], b: usize, t: usize, mask: &Tensor) -> Tensor {
    Tensor::from_slice(v)
        .view([b as i64, t as i64])
        .to_device(mask.device())
        * mask
}

/// A host tensor's floats.
fn host_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        t.to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]),
    )
    .expect("floats")
}

impl TokenLearner {
    /// `policy` starts as the SFT model, `value` as the reward model (both copied by the caller).
    pub fn new(
        algo: impl Into<TextAlgo>,
        config: RlConfig,
        policy: Gpt,
        value: Gpt,
    ) -> Result<Self> {
        let algo = algo.into();
        let policy_opt = nn::adam(0.9, 0.999, 0.0).build(&policy.vs, config.learning_rate)?;
        let value_opt = nn::adam(0.9, 0.999, 0.0).build(&value.vs, config.value_learning_rate)?;
        let device = policy.vs.device();
        let native = match config.backend.resolve(device) {
            BackendKind::Native => {
                anyhow::ensure!(
                    device == tch::Device::Cpu,
                    "field `rl.backend`: `native` runs on the CPU only, and the models are on {device:?}"
                );
                let (p, v) = (NativeGpt::of(&policy), NativeGpt::of(&value));
                Some(Native {
                    // tch's Adam, as the libtorch backend builds it: ε = 1e-8.
                    policy_adam: Adam::new(p.len(), config.learning_rate, 1e-8),
                    value_adam: Adam::new(v.len(), config.value_learning_rate, 1e-8),
                    policy: p,
                    value: v,
                    synced: param_versions(&policy, &value),
                })
            }
            _ => None,
        };
        Ok(Self {
            algo,
            ppo_kl: config.ppo_kl(),
            config,
            policy,
            value,
            policy_opt,
            value_opt,
            native,
        })
    }

    /// The learner as RLHF starts it (Stiennon et al. 2020): the policy a copy of the SFT model,
    /// the value function a copy of the reward model, body and head.
    pub fn from_models(
        algo: impl Into<TextAlgo>,
        config: RlConfig,
        sft: &Gpt,
        reward_model: &Gpt,
    ) -> Result<Self> {
        Self::new(algo, config, sft.duplicate()?, reward_model.duplicate()?)
    }

    /// PPO with the KL-penalised surrogate (`rl.ppo_loss = "kl"`).
    pub fn kl_penalised(&self) -> bool {
        self.algo == TextAlgo::Ppo && self.config.ppo_loss == PpoLoss::Kl
    }

    /// Sets both optimisers' learning rates to `frac` times the config's (`learning_rate` for
    /// the policy, `value_learning_rate` for the value function), on either backend: what
    /// `rl.anneal_lr` calls before each update.
    pub fn scale_learning_rates(&mut self, frac: f64) {
        let (lr, vlr) = (
            self.config.learning_rate * frac,
            self.config.value_learning_rate * frac,
        );
        self.policy_opt.set_lr(lr);
        self.value_opt.set_lr(vlr);
        if let Some(n) = self.native.as_mut() {
            n.policy_adam.lr = lr;
            n.value_adam.lr = vlr;
        }
    }

    /// The backend that runs the passes: `native` or `libtorch`.
    pub fn backend(&self) -> BackendKind {
        if self.native.is_some() {
            BackendKind::Native
        } else {
            BackendKind::Libtorch
        }
    }

    /// The native copies of the policy and the value function, when they are the tch
    /// models' weights (nothing else wrote to those since).
    fn native_in_sync(&self) -> Option<&Native> {
        self.native
            .as_ref()
            .filter(|n| n.synced == param_versions(&self.policy, &self.value))
    }

    /// Scores and advantages of `responses` to `prompts` sampled from the current policy.
    pub fn rollout(
        &self,
        reference: &Gpt,
        reward_model: &Gpt,
        prompts: &[&[u32]],
        responses: &[&[u32]],
        beta: f64,
    ) -> TokenRollout {
        let device = self.policy.vs.device();
        let seqs = Sequences::pack(prompts, responses, device);
        // The policy's and value function's passes are the first step's (see `graphs`): with
        // their graphs when that step can use them.
        let keep = self.minibatches() == 1;
        let entropy_grad = self.config.ent_coef != 0.0;
        let grouped = self.algo.grouped();
        let zeros = || Tensor::zeros_like(&seqs.mask);
        let learner_passes = || {
            (
                token_stats_with(&self.policy, &seqs, entropy_grad),
                if grouped {
                    zeros()
                } else {
                    token_values(&self.value, &seqs)
                },
            )
        };
        let mut tapes = None;
        let _one = self.native.is_some().then(LibtorchThreads::one);
        let (stats, values, ref_lp, raw_scores) = if self.native.is_some() {
            let threads = LibtorchThreads::count();
            let host = HostSeqs::of(&seqs);
            let (b, t) = (host.b, host.t);
            // The learner's own copies when they hold the current weights, else fresh ones.
            let fresh;
            let (np, nv) = match self.native_in_sync() {
                Some(n) => (&n.policy, &n.value),
                None => {
                    fresh = (NativeGpt::of(&self.policy), NativeGpt::of(&self.value));
                    (&fresh.0, &fresh.1)
                }
            };
            let lm = Head::Lm {
                targets: &host.targets,
            };
            let (pol, ptape) = np.forward(host.batch(), lm, keep, threads);
            let value_pass =
                (!grouped).then(|| nv.forward(host.batch(), Head::Scalar, keep, threads));
            let (pol_main, pol_entropy) = (pol.main.clone(), pol.entropy.clone());
            let values = match &value_pass {
                Some((val, _)) => masked_tensor(&val.main, b, t, &seqs.mask),
                None => zeros(),
            };
            tapes = match (ptape, value_pass) {
                (Some(pt), Some((val, Some(vt)))) => Some(NativePasses {
                    policy: (pol, pt),
                    value: Some((val, vt)),
                }),
                (Some(pt), None) => Some(NativePasses {
                    policy: (pol, pt),
                    value: None,
                }),
                _ => None,
            };
            let (refo, _) = NativeGpt::of(reference).forward(host.batch(), lm, false, threads);
            // The reward model reads each row at its last real token.
            let last: Vec<usize> = seqs.lengths.iter().map(|n| PROMPT_LEN + n - 1).collect();
            let from = last.iter().copied().min().unwrap_or(0);
            let l = PROMPT_LEN + t;
            let (rmo, _) = NativeGpt::of(reward_model).forward(
                Batch {
                    tokens: &host.tokens,
                    b,
                    l,
                    from,
                },
                Head::Scalar,
                false,
                threads,
            );
            let raw: Vec<f32> = last
                .iter()
                .enumerate()
                .map(|(i, &p)| rmo.main[i * (l - from) + p - from])
                .collect();
            (
                TokenStats {
                    logprobs: masked_tensor(&pol_main, b, t, &seqs.mask),
                    entropy: masked_tensor(&pol_entropy, b, t, &seqs.mask),
                },
                values,
                masked_tensor(&refo.main, b, t, &seqs.mask),
                Tensor::from_slice(&raw),
            )
        } else {
            let (stats, values) = if keep {
                learner_passes()
            } else {
                tch::no_grad(learner_passes)
            };
            let (ref_lp, raw_scores) = tch::no_grad(|| {
                (
                    token_logprobs(reference, &seqs),
                    scores(reward_model, &seqs),
                )
            });
            (stats, values, ref_lp, raw_scores)
        };
        let lp = rows_f64(&stats.logprobs);
        let lr = rows_f64(&ref_lp);
        let ent = rows_f64(&stats.entropy);
        let raw = vec_f64(&raw_scores);
        let (b, t) = (seqs.lengths.len(), seqs.width);
        let mut rewards = vec![0f32; b * t];
        let mut out_scores = Vec::with_capacity(b);
        let (mut k1, mut k3, mut entropy, mut total) = (vec![], vec![], vec![], vec![]);
        for i in 0..b {
            let n = seqs.lengths[i];
            let tr = token_rewards(
                responses[i],
                &lp[i][..n],
                &lr[i][..n],
                raw[i],
                beta,
                self.config.missing_eos_penalty,
            );
            for (j, r) in tr.rewards.iter().enumerate() {
                rewards[i * t + j] = *r as f32;
            }
            k1.push(tr.kl);
            k3.push(
                (0..n)
                    .map(|j| {
                        let log_rho = lr[i][j] - lp[i][j];
                        log_rho.exp() - 1.0 - log_rho
                    })
                    .sum(),
            );
            entropy.push(ent[i][..n].iter().sum::<f64>() / n as f64);
            total.push(tr.rewards.iter().sum());
            out_scores.push(tr.score);
        }
        let (advantages, returns, weights) = if grouped {
            let k = self.config.generations();
            let (per_sequence, weighting) = match self.algo {
                TextAlgo::Rloo => (rloo_advantages(&total, k), Weighting::SequenceSum),
                _ => (
                    match self.config.scale_rewards {
                        ScaleRewards::Group => grpo_advantages(&out_scores, k),
                        ScaleRewards::None => centred_advantages(&out_scores, k),
                    },
                    Weighting::SequenceMean,
                ),
            };
            let w = token_weights(&seqs.lengths, weighting);
            // A value per sequence on each of its real tokens, `[B, T]`.
            let spread = |v: &[f64]| -> Tensor {
                let mut out = vec![0f32; b * t];
                for i in 0..b {
                    out[i * t..i * t + seqs.lengths[i]].fill(v[i] as f32);
                }
                Tensor::from_slice(&out)
                    .view([b as i64, t as i64])
                    .to_device(device)
            };
            (spread(&per_sequence), zeros(), Some(spread(&w)))
        } else {
            let v = rows_f64(&values);
            // Time-major [T, B] for the advantage functions.
            let mut tm_r = vec![0f32; b * t];
            let mut tm_v = vec![0f32; b * t];
            let mut tm_next = vec![0f32; b * t];
            let mut dones = vec![true; b * t];
            for i in 0..b {
                let n = seqs.lengths[i];
                for j in 0..n {
                    let k = j * b + i;
                    tm_r[k] = rewards[i * t + j];
                    tm_v[k] = v[i][j] as f32;
                    tm_next[k] = if j + 1 < n { v[i][j + 1] as f32 } else { 0.0 };
                    dones[k] = j + 1 == n;
                }
            }
            let shape = Shape {
                num_steps: t,
                num_envs: b,
            };
            let gamma = self.config.gamma as f32;
            let (adv, ret) = match self.algo {
                TextAlgo::Reinforce => {
                    let zeros = vec![0f32; b * t];
                    let g = reward_to_go(shape, &tm_r, &zeros, &dones, gamma);
                    let a: Vec<f32> = g.iter().zip(&tm_v).map(|(g, v)| g - v).collect();
                    (a, g)
                }
                TextAlgo::A2c | TextAlgo::Ppo => gae(
                    shape,
                    &tm_r,
                    &tm_v,
                    &tm_next,
                    &dones,
                    gamma,
                    self.config.gae_lambda as f32,
                ),
                TextAlgo::Rloo | TextAlgo::Grpo => unreachable!("grouped above"),
            };
            let to_bt = |x: &[f32]| -> Tensor {
                let mut out = vec![0f32; b * t];
                for i in 0..b {
                    for j in 0..seqs.lengths[i] {
                        out[i * t + j] = x[j * b + i];
                    }
                }
                Tensor::from_slice(&out)
                    .view([b as i64, t as i64])
                    .to_device(device)
            };
            let mut advantages = to_bt(&adv);
            if self.config.norm_adv {
                advantages = whiten(&advantages, &seqs.mask);
            }
            (advantages, to_bt(&ret), None)
        };
        let old_logprobs = stats.logprobs.detach();
        let old_values = values.detach();
        let graphs = (keep
            && stats.logprobs.requires_grad()
            && (grouped || values.requires_grad()))
        .then(|| RolloutGraphs {
            params: param_versions(&self.policy, &self.value),
            stats,
            values,
        });
        TokenRollout {
            returns,
            advantages,
            old_logprobs,
            old_values,
            ref_logprobs: ref_lp.detach(),
            token_weights: weights,
            beta,
            graphs,
            native: std::sync::Mutex::new(tapes),
            scores: out_scores,
            kl_k1: k1,
            kl_k3: k3,
            entropy,
            total_reward: total,
            seqs,
        }
    }

    /// Minibatches per epoch.
    fn minibatches(&self) -> usize {
        minibatches_of(self.algo, &self.config)
    }

    /// The gradient steps of one batch; `rng` orders PPO's minibatches.
    pub fn update(&mut self, r: &TokenRollout, rng: &mut Stream) -> Result<TokenUpdateStats> {
        self.update_until(r, rng, None)
    }

    /// [`TokenLearner::update`], stopped before any gradient step once `interrupt` is set (an
    /// [`crate::error::Interrupted`] error): an update of many epochs can take minutes, and a
    /// signal should not wait for it. The steps already taken stay in the networks; the
    /// pipeline saves no network of an interrupted run.
    pub fn update_until(
        &mut self,
        r: &TokenRollout,
        rng: &mut Stream,
        interrupt: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<TokenUpdateStats> {
        let mut stats = self.update_steps(r, rng, interrupt)?;
        if self.kl_penalised() {
            // Schulman et al.'s d: the KL from the policy that sampled the batch to the one the
            // update left, over the batch's real tokens (the steps' own estimates are each
            // taken before its step, the first always 0).
            let d = tch::no_grad(|| {
                // After native passes, on one thread as their copies are (see `LibtorchThreads`).
                let _one = self.native.is_some().then(LibtorchThreads::one);
                // The native backend's copy holds the weights the update left: its forward
                // pass on the passes' threads, not libtorch's on one.
                let new_lp = match self.native_in_sync() {
                    Some(n) => {
                        let host = HostSeqs::of(&r.seqs);
                        let lm = Head::Lm {
                            targets: &host.targets,
                        };
                        let threads = LibtorchThreads::count();
                        let (out, _) = n.policy.forward(host.batch(), lm, false, threads);
                        masked_tensor(&out.main, host.b, host.t, &r.seqs.mask)
                    }
                    None => token_logprobs(&self.policy, &r.seqs),
                };
                let log_ratio =
                    (new_lp - &r.old_logprobs).masked_select(&r.seqs.mask.to_kind(Kind::Bool));
                ((log_ratio.exp() - 1.0) - &log_ratio)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[])
            });
            stats.kl_after = d;
            self.ppo_kl.update(d);
        }
        Ok(stats)
    }

    /// The gradient steps of [`TokenLearner::update_until`].
    fn update_steps(
        &mut self,
        r: &TokenRollout,
        rng: &mut Stream,
        interrupt: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<TokenUpdateStats> {
        // Said here by its cause, before a gradient step would report a non-finite loss.
        if let Some(i) = r.scores.iter().position(|v| !v.is_finite()) {
            anyhow::bail!(
                "rl: the reward model's score of sequence {i} is not finite ({})",
                r.scores[i]
            );
        }
        if let Some(i) = r.total_reward.iter().position(|v| !v.is_finite()) {
            anyhow::bail!(
                "rl: the reward of sequence {i} is not finite ({}): its score {} less β times its KL {} overflowed; lower rl.beta",
                r.total_reward[i],
                r.scores[i],
                r.kl_k1[i]
            );
        }
        // Rewards finite in f64 but huge (β·KL) overflow later: cast to f32 for GAE, or, above
        // about 1.8e19 (√ of f32's largest), in whitening's squares, which would then leave
        // every advantage 0 and the value loss to overflow. The same cause, named the same way.
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) != 0;
        if !finite(&r.old_values) {
            anyhow::bail!(
                "rl: the value function's predictions for this batch are not finite; lower rl.value_learning_rate"
            );
        }
        let limit = (f32::MAX as f64).sqrt();
        let largest = r
            .total_reward
            .iter()
            .fold(0f64, |a, v| a.max(v.abs()))
            .max(r.returns.abs().max().double_value(&[]));
        if !finite(&r.advantages) || !finite(&r.returns) || largest > limit {
            anyhow::bail!(
                "rl: the batch's rewards (score less β times KL, up to {largest:e} in size) overflowed the advantages' float32 arithmetic (squares past {limit:.1e}); lower rl.beta"
            );
        }
        let Some(mut native) = self.native.take() else {
            return self.update_with(None, r, rng, interrupt);
        };
        // libtorch on one thread for the copies in and out too: on two, they would leave its
        // pool spinning into the passes' threads or the next generation's.
        let _one = LibtorchThreads::one();
        if native.synced != param_versions(&self.policy, &self.value) {
            native.policy.read_from(&self.policy);
            native.value.read_from(&self.value);
        }
        // The native state goes back into the learner however the update ends (an error, an
        // interrupt, or a panic a caller catches), with the steps taken written into the tch
        // models.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.update_with(Some(&mut native), r, rng, interrupt)
        }));
        native.policy.write_to(&self.policy);
        native.value.write_to(&self.value);
        native.synced = param_versions(&self.policy, &self.value);
        self.native = Some(native);
        out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn update_with(
        &mut self,
        mut native: Option<&mut Native>,
        r: &TokenRollout,
        rng: &mut Stream,
        interrupt: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<TokenUpdateStats> {
        let b = r.seqs.lengths.len();
        let epochs = if self.algo.clipped() {
            self.config.update_epochs
        } else {
            1
        };
        let grouped = self.algo.grouped();
        let minibatches = self.minibatches();
        let device = self.policy.vs.device();
        let threads = LibtorchThreads::count();
        let mut stats = TokenUpdateStats::default();
        let mask = r.seqs.mask.to_kind(Kind::Bool);
        let sel = |x: &Tensor| x.masked_select(&mask);
        if grouped {
            // No value function.
            stats.value_error = f64::NAN;
            stats.explained_variance = f64::NAN;
        } else {
            let v = vec_f64(&sel(&r.old_values));
            let g = vec_f64(&sel(&r.returns));
            stats.value_error =
                v.iter().zip(&g).map(|(a, b)| (a - b).abs()).sum::<f64>() / v.len() as f64;
            // CleanRL's 1 − Var(g − v)/Var(g).
            let centred_ss = |x: &[f64]| {
                let mean = x.iter().sum::<f64>() / x.len() as f64;
                x.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            };
            let var_g = centred_ss(&g);
            let residual: Vec<f64> = v.iter().zip(&g).map(|(a, b)| b - a).collect();
            let var_e = centred_ss(&residual);
            stats.explained_variance = if var_g == 0.0 {
                f64::NAN
            } else {
                1.0 - var_e / var_g
            };
        }
        // The rollout's passes, if they are still those of the current networks.
        let mut graphs = r
            .graphs
            .as_ref()
            .filter(|g| minibatches == 1 && g.params == param_versions(&self.policy, &self.value));
        let mut passes = native.as_ref().filter(|_| minibatches == 1).and_then(|n| {
            let mut slot = r.native.lock().unwrap_or_else(|e| e.into_inner());
            slot.take_if(|p| {
                p.policy.1.version() == n.policy.version()
                    && p.value
                        .as_ref()
                        .is_none_or(|v| v.1.version() == n.value.version())
            })
        });
        let host = native.is_some().then(|| HostSeqs::of(&r.seqs));
        // With one minibatch every step sees the whole batch in order: its real-token
        // targets are selected once.
        let zero = || Tensor::zeros([0], (Kind::Float, device));
        let weights = |x: &Option<Tensor>| x.as_ref().map_or_else(zero, sel);
        let whole = (minibatches == 1).then(|| {
            (
                sel(&r.advantages),
                sel(&r.old_logprobs),
                sel(&r.returns),
                sel(&r.old_values),
                sel(&r.ref_logprobs),
                weights(&r.token_weights),
            )
        });
        let entropy_grad = self.config.ent_coef != 0.0;
        let kl_loss = self.kl_penalised();
        let kl_coef = self.ppo_kl.beta();
        let (mut n, mut pl, mut vl, mut ak, mut cf) = (0usize, 0.0, 0.0, 0.0, 0.0);
        // CleanRL's k3 approximate KL of the last step, before it (what `target_kl` reads).
        let mut k3_last = 0.0;
        'epochs: for _ in 0..epochs {
            let mut order: Vec<i64> = (0..b as i64).collect();
            if minibatches > 1 {
                shuffle(&mut order, rng);
            }
            let size = b.div_ceil(minibatches);
            for chunk in order.chunks(size) {
                crate::error::check_interrupt(interrupt, || {
                    format!(
                        "in an RL update, after {n} of its {} gradient steps",
                        epochs * b.div_ceil(size)
                    )
                })?;
                let rows;
                let host_rows;
                let (seqs, hs, m, adv, old_lp, returns, old_v, ref_lp, w) = match &whole {
                    Some((adv, old_lp, returns, old_v, ref_lp, w)) => (
                        &r.seqs,
                        host.as_ref(),
                        mask.shallow_clone(),
                        adv.shallow_clone(),
                        old_lp.shallow_clone(),
                        returns.shallow_clone(),
                        old_v.shallow_clone(),
                        ref_lp.shallow_clone(),
                        w.shallow_clone(),
                    ),
                    None => {
                        let index = Tensor::from_slice(chunk).to_device(device);
                        rows = r.seqs.rows(&index);
                        host_rows = host.as_ref().map(|h| h.rows(chunk));
                        let m = rows.mask.to_kind(Kind::Bool);
                        let pick = |x: &Tensor| x.index_select(0, &index).masked_select(&m);
                        // RLOO's and GRPO's weights are the whole batch's: 1/B of each sequence,
                        // here 1/(rows in the minibatch).
                        let scale = b as f64 / chunk.len() as f64;
                        let w = r
                            .token_weights
                            .as_ref()
                            .map_or_else(zero, |w| pick(w) * scale);
                        let picked = (
                            pick(&r.advantages),
                            pick(&r.old_logprobs),
                            pick(&r.returns),
                            pick(&r.old_values),
                            pick(&r.ref_logprobs),
                        );
                        (
                            &rows,
                            host_rows.as_ref(),
                            m,
                            picked.0,
                            picked.1,
                            picked.2,
                            picked.3,
                            picked.4,
                            w,
                        )
                    }
                };
                let reused = graphs.take();
                // Owned here: the rollout's buffers go back to the pool after this step.
                let (reused_policy, reused_value) = match passes.take() {
                    Some(p) => (Some(p.policy), p.value),
                    None => (None, None),
                };

                // The passes' outputs. Native: host outputs made leaves of the loss's graph,
                // whose gradients its backward pass takes; libtorch: tensors with graphs.
                let mut owned_policy = None;
                let mut native_policy = None;
                let (new_lp, entropy) = match (native.as_deref(), hs) {
                    (Some(nat), Some(hs)) => {
                        let (out, tape) =
                            reused_or_run(reused_policy.as_ref(), &mut owned_policy, || {
                                let targets = &hs.targets;
                                nat.policy
                                    .forward(hs.batch(), Head::Lm { targets }, true, threads)
                            });
                        let lp = leaf(&out.main, hs, device);
                        let ent = entropy_grad.then(|| leaf(&out.entropy, hs, device));
                        native_policy = Some((
                            lp.shallow_clone(),
                            ent.as_ref().map(|e| e.shallow_clone()),
                            tape,
                        ));
                        (lp, ent)
                    }
                    _ => match reused {
                        Some(g) => (
                            g.stats.logprobs.shallow_clone(),
                            entropy_grad.then(|| g.stats.entropy.shallow_clone()),
                        ),
                        None if entropy_grad => {
                            let st = token_stats(&self.policy, seqs);
                            (st.logprobs, Some(st.entropy))
                        }
                        None => (token_logprobs(&self.policy, seqs), None),
                    },
                };
                let new_lp = new_lp.masked_select(&m);
                let (policy_loss, ratio) = match self.algo {
                    TextAlgo::Ppo => {
                        let clip_coef = self.config.clip_coef;
                        let (loss, rs) = if kl_loss {
                            ppo_kl_loss_trl(&new_lp, &old_lp, &adv, kl_coef, clip_coef)
                        } else {
                            ppo_clip_loss_trl(&new_lp, &old_lp, &adv, clip_coef)
                        };
                        (loss, Some(rs))
                    }
                    TextAlgo::Rloo | TextAlgo::Grpo => {
                        let (loss, rs) = weighted_clip_loss_trl(
                            &new_lp,
                            &old_lp,
                            &adv,
                            &w,
                            self.config.clip_coef,
                        );
                        let loss = if self.algo == TextAlgo::Grpo && r.beta != 0.0 {
                            loss + reference_k3_penalty(&new_lp, &ref_lp, &w) * r.beta
                        } else {
                            loss
                        };
                        (loss, Some(rs))
                    }
                    TextAlgo::Reinforce | TextAlgo::A2c => {
                        (policy_gradient_loss(&new_lp, &adv), None)
                    }
                };
                // Without an entropy bonus (0 · entropy) the entropy is not computed at all.
                let loss = match entropy {
                    Some(entropy) => {
                        let entropy = entropy.masked_select(&m).mean(Kind::Float);
                        &policy_loss - entropy * self.config.ent_coef
                    }
                    None => policy_loss.shallow_clone(),
                };
                let lv = loss.double_value(&[]);
                anyhow::ensure!(
                    lv.is_finite(),
                    "rl: non-finite policy loss ({lv}); lower rl.learning_rate"
                );
                match (native.as_deref_mut(), native_policy) {
                    (Some(nat), Some((lp, ent, tape))) => {
                        loss.backward();
                        native_step(
                            &mut nat.policy,
                            &mut nat.policy_adam,
                            (tape, &lp, ent.as_ref()),
                            threads,
                            self.config.max_grad_norm,
                        );
                    }
                    _ => self
                        .policy_opt
                        .backward_step_clip_norm(&loss, self.config.max_grad_norm),
                }
                // RLOO and GRPO have no value function to step.
                let vv = if grouped {
                    f64::NAN
                } else {
                    let mut owned_value = None;
                    let mut native_value = None;
                    let new_v = match (native.as_deref(), hs) {
                        (Some(nat), Some(hs)) => {
                            let (out, tape) =
                                reused_or_run(reused_value.as_ref(), &mut owned_value, || {
                                    nat.value.forward(hs.batch(), Head::Scalar, true, threads)
                                });
                            let v = leaf(&out.main, hs, device);
                            native_value = Some((v.shallow_clone(), tape));
                            v
                        }
                        _ => match reused {
                            Some(g) => g.values.shallow_clone(),
                            None => token_values(&self.value, seqs),
                        },
                    }
                    .masked_select(&m);
                    let clip = (self.algo == TextAlgo::Ppo && self.config.clip_vloss)
                        .then_some(self.config.clip_coef);
                    let raw = value_loss(&new_v, &returns, &old_v, clip);
                    let vv = raw.double_value(&[]);
                    let vloss = raw * self.config.vf_coef;
                    anyhow::ensure!(
                        vv.is_finite(),
                        "rl: non-finite value loss ({vv}); lower rl.value_learning_rate"
                    );
                    match (native.as_deref_mut(), native_value) {
                        (Some(nat), Some((v, tape))) => {
                            vloss.backward();
                            native_step(
                                &mut nat.value,
                                &mut nat.value_adam,
                                (tape, &v, None),
                                threads,
                                self.config.max_grad_norm,
                            );
                        }
                        _ => self
                            .value_opt
                            .backward_step_clip_norm(&vloss, self.config.max_grad_norm),
                    }
                    vv
                };
                n += 1;
                pl += policy_loss.double_value(&[]);
                vl += vv;
                if let Some(rs) = ratio {
                    ak += rs.approxkl;
                    cf += rs.clipfrac;
                    k3_last = rs.k3;
                }
            }
            if let Some(target) = self.config.target_kl
                && self.algo.clipped()
                && k3_last > target
            {
                break 'epochs;
            }
        }
        if kl_loss {
            stats.kl_coef = kl_coef;
        }
        let n_f = n as f64;
        stats.policy_loss = pl / n_f;
        stats.value_loss = vl / n_f;
        stats.approx_kl = ak / n_f;
        stats.clipfrac = cf / n_f;
        stats.gradient_steps = n;
        Ok(stats)
    }
}

/// libtorch on one thread while the native passes run, its thread count back on drop: the
/// small operators between the passes (the losses, their gradients) then open no parallel
/// region, after which libtorch's idle threads would spin for a while on the cores the passes
/// use. The passes themselves take the thread count from [`LibtorchThreads::count`].
struct LibtorchThreads {
    before: i32,
    /// The thread-local count as it was (an enclosing guard's).
    outer: Option<usize>,
}

thread_local! {
    static NATIVE_THREADS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl LibtorchThreads {
    fn one() -> Self {
        let before = tch::get_num_threads();
        let outer = NATIVE_THREADS.with(|t| t.get());
        // Inside another guard libtorch is already on one thread: keep that guard's count.
        let count = outer.unwrap_or(before.max(1) as usize);
        NATIVE_THREADS.with(|t| t.set(Some(count)));
        tch::set_num_threads(1);
        Self { before, outer }
    }

    /// The threads the native passes run on: libtorch's count (as it was before the
    /// outermost [`Self::one`]).
    fn count() -> usize {
        NATIVE_THREADS
            .with(|t| t.get())
            .unwrap_or_else(|| tch::get_num_threads().max(1) as usize)
    }
}

impl Drop for LibtorchThreads {
    fn drop(&mut self) {
        NATIVE_THREADS.with(|t| t.set(self.outer));
        tch::set_num_threads(self.before);
    }
}

/// The rollout's pass (`reused`), or a fresh one from `run` kept in `owned`.
fn reused_or_run<'a>(
    reused: Option<&'a (Outputs, Tape)>,
    owned: &'a mut Option<(Outputs, Tape)>,
    run: impl FnOnce() -> (Outputs, Option<Tape>),
) -> (&'a Outputs, &'a Tape) {
    let (out, tape) = match reused {
        Some(p) => p,
        None => {
            let (o, t) = run();
            owned.insert((o, t.expect("kept")))
        }
    };
    (out, tape)
}

/// One native gradient step of `model`: the gradients the loss left on the pass's output
/// leaves (`main`, and `entropy` when the loss read it) through the backward pass of `tape`,
/// clipped to `max_grad_norm`, then Adam.
fn native_step(
    model: &mut NativeGpt,
    adam: &mut Adam,
    (tape, main, entropy): (&Tape, &Tensor, Option<&Tensor>),
    threads: usize,
    max_grad_norm: f64,
) {
    let d_main = host_f32(&main.grad());
    let d_entropy = entropy.map(|e| host_f32(&e.grad()));
    let mut grad = model.backward(tape, &d_main, d_entropy.as_deref(), threads);
    clip_grad_norm(&mut grad, max_grad_norm);
    adam.update(model.params_mut(), &grad);
    crate::nn::gpt_native::recycle(grad);
}

/// Host outputs `[B, T]` as a leaf tensor that collects its gradient.
fn leaf(v: &[f32], hs: &HostSeqs, device: tch::Device) -> Tensor {
    Tensor::from_slice(v)
        .view([hs.b as i64, hs.t as i64])
        .to_device(device)
        .set_requires_grad(true)
}

/// Minibatches per epoch of `algo` under `config`.
fn minibatches_of(algo: TextAlgo, config: &RlConfig) -> usize {
    if algo.clipped() {
        config.num_minibatches.max(1)
    } else {
        1
    }
}

/// `(x − mean)/std` over the positions `mask` marks (others 0), as TRL and Stiennon whiten
/// advantages over real tokens only.
pub fn whiten(x: &Tensor, mask: &Tensor) -> Tensor {
    let n = mask.sum(Kind::Float).clamp_min(1.0);
    let mean = (x * mask).sum(Kind::Float) / &n;
    let centred = (x - &mean) * mask;
    let var = centred.square().sum(Kind::Float) / (&n - 1.0).clamp_min(1.0);
    centred / (var.sqrt() + 1e-8)
}
