//! The native backend: CleanRL's actor-critic, its losses and Adam in plain Rust on the CPU.
//!
//! One step: actor and critic forward ([`crate::nn::mlp::Mlp::forward`]); the head's
//! log π(a|s) and entropy ([`crate::nn::heads`]); the loss and ∂L/∂log π, ∂L/∂V from
//! `gradgym_algorithms::loss_grads`; the head's closed-form backward to ∂L/∂logits (or ∂L/∂mean
//! and ∂L/∂log σ); the MLPs' backward; global grad-norm clip; Adam. The parameters are one flat
//! vector in the layout of [`crate::nn::ActorCritic`].
//!
//! Adam and the clip follow libtorch's (`torch::optim::Adam` with β = (0.9, 0.999), no weight
//! decay; tch's `clip_grad_norm`: scale by `max / (‖g‖ + 1e-6)` when that is below 1).
//! The tests compare one step's gradients, and the parameters after a run of steps, with the
//! libtorch backend started from the same weights.

use gradgym_algorithms::loss_grads::{
    normalize_advantages, policy_gradient_loss, ppo_clip_loss, ppo_kl_loss, value_loss,
};
use gradgym_algorithms::losses::RatioStats;
use gradgym_envs::rng::Stream;

use super::{Backend, Minibatch, Objective, PolicyLoss, StepReport, ValueLoss};
use crate::config::TrainConfig;
use crate::error::{NonFiniteLoss, finite};
use crate::nn::actor_critic::{ActorCritic, Policy};
use crate::nn::heads::{self, Head};
use crate::nn::init;

/// Adam as libtorch computes it, over one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Adam {
    pub lr: f64,
    pub eps: f64,
    pub beta1: f64,
    pub beta2: f64,
    step: i32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    pub fn new(len: usize, lr: f64, eps: f64) -> Self {
        Self {
            lr,
            eps,
            beta1: 0.9,
            beta2: 0.999,
            step: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> i32 {
        self.step
    }

    /// `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
    /// `θ ← θ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32]) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step);
        let bias2 = 1.0 - self.beta2.powi(self.step);
        let step_size = (self.lr / bias1) as f32;
        let bias2_sqrt = bias2.sqrt() as f32;
        let k = [
            step_size,
            bias2_sqrt,
            self.beta1 as f32,
            self.beta2 as f32,
            self.eps as f32,
        ];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2. The same operations on wider vectors (each one
            // correctly rounded, none contracted): the same bits.
            return unsafe { apply_avx2(params, grads, &mut self.m, &mut self.v, k) };
        }
        apply(params, grads, &mut self.m, &mut self.v, k);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 5]) {
    apply(params, grads, m, v, k);
}

/// One Adam step elementwise, with `k` = [lr/(1 − β₁ᵗ), √(1 − β₂ᵗ), β₁, β₂, ε].
#[inline(always)]
fn apply(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 5]) {
    let [step_size, bias2_sqrt, b1, b2, eps] = k;
    for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
        *m = *m * b1 + g * (1.0 - b1);
        *v = *v * b2 + g * g * (1.0 - b2);
        let denom = v.sqrt() / bias2_sqrt + eps;
        *p -= step_size * (*m / denom);
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (tch's rule).
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) {
    let norm = grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
}

/// Buffers reused across steps.
#[derive(Default, Debug)]
struct Work {
    actor_acts: Vec<Vec<f32>>,
    critic_acts: Vec<Vec<f32>>,
    /// Categorical: log-softmax `[n, k]`.
    log_p: Vec<f32>,
    logprobs: Vec<f32>,
    entropy: Vec<f32>,
    weights: Vec<f32>,
    g_logprob: Vec<f32>,
    g_value: Vec<f32>,
    d: Vec<f32>,
    scratch: Vec<f32>,
}

pub struct Native {
    /// Where actor, critic and log σ live in `params`.
    net: ActorCritic,
    params: Vec<f32>,
    grads: Vec<f32>,
    adam: Adam,
    work: Work,
}

impl Native {
    pub fn new(config: &TrainConfig, obs_dim: usize, head: Head, rng: &mut Stream) -> Self {
        Self::with_layout(
            obs_dim,
            head,
            &config.hidden_sizes,
            config.log_std_init,
            config.learning_rate,
            config.adam_eps,
            rng,
        )
    }

    /// The layout of [`ActorCritic::new`] with the weights of [`init::actor_critic`]: the
    /// same weights as the libtorch backend's network from the same arguments.
    pub fn with_layout(
        obs_dim: usize,
        head: Head,
        hidden: &[usize],
        log_std_init: f64,
        learning_rate: f64,
        adam_eps: f64,
        rng: &mut Stream,
    ) -> Self {
        let net = ActorCritic::new(obs_dim, head, hidden);
        let params = init::actor_critic(&net, log_std_init, rng);
        let len = net.len;
        Self {
            net,
            grads: vec![0.0; len],
            adam: Adam::new(len, learning_rate, adam_eps),
            params,
            work: Work::default(),
        }
    }

    /// Every parameter, flat.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// ∂L/∂θ of the last step, before clipping.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Computes the loss of `objective` on `b` and, if it is finite, its gradient into
    /// `self.grads` (unclipped). The parameters do not change.
    pub fn gradient(
        &mut self,
        b: &Minibatch,
        objective: &Objective,
        step: usize,
    ) -> Result<StepReport, NonFiniteLoss> {
        let n = b.len;
        let w = &mut self.work;
        let net = &self.net;
        net.actor
            .forward(&self.params, &b.obs, n, &mut w.actor_acts);
        net.critic
            .forward(&self.params, &b.obs, n, &mut w.critic_acts);
        let out = w.actor_acts.last().expect("actor output");
        let values = w.critic_acts.last().expect("critic output");
        w.logprobs.resize(n, 0.0);
        w.entropy.resize(n, 0.0);
        match net.head {
            Head::Categorical { n: k } => {
                w.log_p.resize(n * k, 0.0);
                heads::categorical_log_probs(
                    out,
                    k,
                    &b.actions_discrete[..n],
                    &mut w.log_p,
                    &mut w.logprobs,
                    &mut w.entropy,
                );
            }
            Head::Gaussian { .. } => heads::gaussian_log_probs(
                out,
                net.log_std(&self.params)
                    .expect("a Gaussian head has a log-std"),
                &b.actions_continuous,
                &mut w.logprobs,
                &mut w.entropy,
            ),
        }

        w.weights.clear();
        w.weights.extend_from_slice(&b.weights[..n]);
        if objective.baseline {
            for (x, v) in w.weights.iter_mut().zip(values) {
                *x -= v;
            }
        }
        if objective.normalize {
            normalize_advantages(&mut w.weights);
        }
        w.g_logprob.resize(n, 0.0);
        let (policy_loss, ratio) = match objective.policy {
            PolicyLoss::Gradient => (
                policy_gradient_loss(&w.logprobs, &w.weights, &mut w.g_logprob),
                RatioStats::default(),
            ),
            PolicyLoss::Clip { clip_coef } => ppo_clip_loss(
                &w.logprobs,
                &b.old_logprobs,
                &w.weights,
                clip_coef,
                &mut w.g_logprob,
            ),
            PolicyLoss::KlPenalty { beta, clip_coef } => ppo_kl_loss(
                &w.logprobs,
                &b.old_logprobs,
                &w.weights,
                beta,
                clip_coef,
                &mut w.g_logprob,
            ),
        };
        w.g_value.resize(n, 0.0);
        let value_loss = match objective.value {
            ValueLoss::None => 0.0,
            ValueLoss::Squared => {
                value_loss(values, &b.returns, &b.old_values, None, &mut w.g_value)
            }
            ValueLoss::Clipped { clip_coef } => value_loss(
                values,
                &b.returns,
                &b.old_values,
                Some(clip_coef),
                &mut w.g_value,
            ),
        };
        let entropy = w.entropy.iter().map(|&h| h as f64).sum::<f64>() / n as f64;
        let loss = policy_loss - objective.ent_coef * entropy + objective.vf_coef * value_loss;
        finite("loss", loss, step)?;

        // Backward.
        self.grads.fill(0.0);
        let g_entropy = (-objective.ent_coef / n as f64) as f32;
        match net.head {
            Head::Categorical { n: k } => {
                w.d.resize(n * k, 0.0);
                heads::categorical_backward(
                    &w.log_p,
                    k,
                    &b.actions_discrete[..n],
                    &w.entropy,
                    &w.g_logprob,
                    g_entropy,
                    &mut w.d,
                );
            }
            Head::Gaussian { dim } => {
                let at = net.log_std.expect("a Gaussian head has a log-std");
                w.d.resize(n * dim, 0.0);
                heads::gaussian_backward(
                    out,
                    &self.params[at..at + dim],
                    &b.actions_continuous,
                    &w.g_logprob,
                    g_entropy,
                    &mut w.d,
                    &mut self.grads[at..at + dim],
                );
            }
        }
        net.actor.backward(
            &self.params,
            &w.actor_acts,
            n,
            &mut w.d,
            &mut w.scratch,
            &mut self.grads,
        );
        if objective.value != ValueLoss::None {
            let vf = objective.vf_coef as f32;
            w.d.clear();
            w.d.extend(w.g_value.iter().map(|g| g * vf));
            net.critic.backward(
                &self.params,
                &w.critic_acts,
                n,
                &mut w.d,
                &mut w.scratch,
                &mut self.grads,
            );
        }
        Ok(StepReport {
            policy_loss,
            value_loss,
            entropy,
            ratio,
        })
    }
}

impl Backend for Native {
    fn step(
        &mut self,
        b: &Minibatch,
        objective: &Objective,
        step: usize,
    ) -> Result<StepReport, NonFiniteLoss> {
        let report = self.gradient(b, objective, step)?;
        if objective.max_grad_norm > 0.0 {
            clip_grad_norm(&mut self.grads, objective.max_grad_norm);
        }
        self.adam.update(&mut self.params, &self.grads);
        Ok(report)
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.adam.lr = lr;
    }

    fn snapshot(&self) -> Policy {
        Policy::new(&self.net, self.params.clone())
    }

    fn name(&self) -> &'static str {
        "native"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::libtorch::Libtorch;
    use crate::nn::torch::TorchActorCritic;
    use gradgym_envs::rng;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Tensor, nn};

    const OBS: usize = 5;
    const HIDDEN: [usize; 2] = [16, 8];

    fn pair(head: Head, lr: f64) -> (Native, Libtorch) {
        let native = Native::with_layout(
            OBS,
            head,
            &HIDDEN,
            -0.3,
            lr,
            1e-5,
            &mut rng::stream(4, "init", 0),
        );
        let net = TorchActorCritic::new(
            OBS,
            head,
            &HIDDEN,
            -0.3,
            Device::Cpu,
            &mut rng::stream(4, "init", 0),
        );
        let opt = nn::Adam {
            eps: 1e-5,
            ..Default::default()
        }
        .build(&net.vs, lr)
        .unwrap();
        (native, Libtorch { net, opt })
    }

    /// Every parameter (or its gradient) of the libtorch network in the native layout:
    /// actor, critic, log σ; weights `W [outputs, inputs]` transposed.
    fn flat(t: &Libtorch, grad: bool) -> Vec<f32> {
        let mut out = Vec::new();
        let mut push = |x: &Tensor| {
            // An untouched parameter (the critic without a value loss) has no gradient: zeros.
            let mut x = match grad {
                true if x.grad().defined() => x.grad(),
                true => x.zeros_like(),
                false => x.shallow_clone(),
            };
            if x.dim() == 2 {
                x = x.transpose(0, 1);
            }
            out.extend(Vec::<f32>::try_from(x.contiguous().view([-1])).unwrap());
        };
        for mlp in [&t.net.actor, &t.net.critic] {
            for l in &mlp.layers {
                push(&l.ws);
                push(l.bs.as_ref().unwrap());
            }
        }
        if let Some(s) = &t.net.log_std {
            push(s);
        }
        out
    }

    fn batch(head: Head, n: usize, seed: u64) -> Minibatch {
        let mut r = rng::stream(seed, "test", 0);
        let mut normals = |k: usize, s: f64| -> Vec<f32> {
            (0..k)
                .map(|_| (rng::standard_normal(&mut r) * s) as f32)
                .collect()
        };
        let obs = normals(n * OBS, 1.0);
        let (actions_discrete, actions_continuous, old_logprobs) = match head {
            Head::Categorical { n: k } => (
                (0..n).map(|i| ((i * 7) % k) as i64).collect(),
                Vec::new(),
                normals(n, 0.3)
                    .iter()
                    .map(|d| d - (k as f32).ln())
                    .collect(),
            ),
            Head::Gaussian { dim } => (Vec::new(), normals(n * dim, 0.8), normals(n, 0.5)),
        };
        Minibatch {
            len: n,
            obs,
            actions_discrete,
            actions_continuous,
            old_logprobs,
            old_values: normals(n, 1.0),
            weights: normals(n, 2.0),
            returns: normals(n, 2.0),
        }
    }

    fn objectives() -> Vec<Objective> {
        let base = Objective {
            policy: PolicyLoss::Gradient,
            value: ValueLoss::Squared,
            baseline: false,
            normalize: false,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.0,
        };
        vec![
            base,
            Objective {
                baseline: true,
                normalize: true,
                ent_coef: 0.1,
                ..base
            },
            Objective {
                value: ValueLoss::None,
                ..base
            },
            Objective {
                policy: PolicyLoss::Clip { clip_coef: 0.2 },
                value: ValueLoss::Clipped { clip_coef: 0.2 },
                normalize: true,
                ..base
            },
            Objective {
                policy: PolicyLoss::KlPenalty {
                    beta: 0.7,
                    clip_coef: 0.2,
                },
                ..base
            },
        ]
    }

    const HEADS: [Head; 2] = [Head::Categorical { n: 3 }, Head::Gaussian { dim: 2 }];

    #[test]
    fn both_backends_start_from_the_same_weights() {
        for head in HEADS {
            let (native, torch) = pair(head, 1e-3);
            assert_eq!(native.params(), flat(&torch, false).as_slice());
            let (a, b) = (native.snapshot(), torch.snapshot());
            assert_eq!(a.params, b.params);
            assert_eq!(a.log_std, b.log_std);
        }
    }

    #[test]
    fn gradients_match_autograd_for_every_objective_and_head() {
        for head in HEADS {
            for (k, objective) in objectives().iter().enumerate() {
                // lr = 0: the libtorch step leaves the weights alone and keeps the gradients.
                let (mut native, mut torch) = pair(head, 0.0);
                let b = batch(head, 64, k as u64);
                let ours = native.gradient(&b, objective, 0).unwrap();
                let theirs = torch.step(&b, objective, 0).unwrap();
                let what = format!("{head:?}, objective {k}");
                for (x, y, name) in [
                    (ours.policy_loss, theirs.policy_loss, "policy loss"),
                    (ours.value_loss, theirs.value_loss, "value loss"),
                    (ours.entropy, theirs.entropy, "entropy"),
                    (ours.ratio.approx_kl, theirs.ratio.approx_kl, "approx_kl"),
                    (ours.ratio.clipfrac, theirs.ratio.clipfrac, "clipfrac"),
                ] {
                    assert!(
                        (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                        "{what}: {name} {x} vs {y}"
                    );
                }
                let autograd = flat(&torch, true);
                let scale = autograd.iter().fold(0.0f32, |m, g| m.max(g.abs()));
                assert!(scale > 1e-3, "{what}: gradient too small to compare");
                for (i, (g, a)) in native.grads().iter().zip(&autograd).enumerate() {
                    assert!(
                        (g - a).abs() <= 1e-4 * scale,
                        "{what}: ∂L/∂θ[{i}] native {g}, autograd {a} (max |g| {scale})"
                    );
                }
                if objective.value == ValueLoss::None {
                    let critic = native.net.critic.layers[0].w;
                    assert!(
                        native.grads()[critic..critic + 10]
                            .iter()
                            .all(|&g| g == 0.0)
                    );
                }
            }
        }
    }

    #[test]
    fn a_hundred_clipped_adam_steps_stay_with_libtorch() {
        for head in HEADS {
            let (mut native, mut torch) = pair(head, 3e-3);
            let objective = Objective {
                max_grad_norm: 0.5,
                ..objectives()[3]
            };
            for step in 0..100 {
                let b = batch(head, 32, 100 + step % 4);
                let lr = 3e-3 * (1.0 - step as f64 / 100.0);
                native.set_learning_rate(lr);
                torch.set_learning_rate(lr);
                native.step(&b, &objective, step as usize).unwrap();
                torch.step(&b, &objective, step as usize).unwrap();
            }
            let theirs = flat(&torch, false);
            let start = pair(head, 0.0).0.params().to_vec();
            let mut moved = 0.0f32;
            for ((x, y), s) in native.params().iter().zip(&theirs).zip(&start) {
                assert!((x - y).abs() < 2e-4, "{head:?}: native {x}, libtorch {y}");
                moved = moved.max((y - s).abs());
            }
            assert!(moved > 0.05, "the steps did move the weights ({moved})");
        }
    }

    #[test]
    fn a_non_finite_loss_is_refused_and_changes_nothing() {
        let (mut native, _) = pair(Head::Categorical { n: 3 }, 1e-3);
        let mut b = batch(Head::Categorical { n: 3 }, 8, 0);
        b.weights[3] = f32::NAN;
        let before = native.params().to_vec();
        let e = native.step(&b, &objectives()[0], 7).unwrap_err();
        assert_eq!((e.what, e.step), ("loss", 7));
        assert_eq!(native.params(), before.as_slice());
    }

    /// The memory check counts the network's parameters without building it: the count must
    /// be the network's, for every env's spaces and more than one depth.
    #[test]
    fn the_configs_parameter_count_is_the_networks() {
        for env_id in gradgym_envs::ENV_IDS {
            let spec = gradgym_envs::spec(env_id).unwrap();
            for hidden in [vec![64, 64], vec![7], vec![3, 5, 2]] {
                let config = crate::config::TrainConfig {
                    env_id: env_id.to_string(),
                    hidden_sizes: hidden.clone(),
                    ..Default::default()
                };
                let native = Native::with_layout(
                    spec.observation_space.dim(),
                    match spec.action_space {
                        gradgym_envs::Space::Discrete { n } => Head::Categorical { n: n as usize },
                        ref b => Head::Gaussian { dim: b.dim() },
                    },
                    &hidden,
                    0.0,
                    1e-3,
                    1e-5,
                    &mut rng::stream(1, "init", 0),
                );
                assert_eq!(
                    config.parameter_count(),
                    native.params().len() as u128,
                    "{env_id} {hidden:?}"
                );
            }
        }
    }
}
