//! The estimator study: every gradient estimator on small MDPs whose exact gradient is known,
//! at several sample sizes, measured the same way. This is what `gradgym estimators` runs and
//! what the unbiasedness tests call.
//!
//! An estimator maps a batch of M trajectories to one estimate of ∇J(θ). Every estimator goes
//! through the production losses of [`crate::losses`], with θ in a tch tensor and the gradient
//! from autodiff: `policy_gradient_loss` (REINFORCE family, actor-critic, GAE) or the PPO
//! surrogates. Weights come from the production [`crate::advantages`] functions or from exact
//! tables. The losses average over the H·M entries of a batch, so an estimate is `−H · ∇loss`.
//!
//! J discounts from t = 0, so every weight at step t carries γ^t (dropping it is a negative
//! control: the common practical estimator, biased for this J).

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::advantages::{Shape, gae, reward_to_go};
use crate::exact::{Tables, TabularMdp, softmax_policy};
use crate::losses::{policy_gradient_loss, ppo_clip_loss, ppo_kl_loss};
use gradgym_envs::rng::{self, Stream};

/// A random MDP from `seed`: 2–5 states, 2–4 actions, horizon 1–`max_horizon`, γ ∈ [0.8, 1],
/// transitions and start distribution bounded away from 0, rewards in [−1, 1]; and a θ drawn
/// from a standard normal.
pub fn random_case(seed: u64, max_horizon: usize) -> (TabularMdp, Vec<f64>) {
    let mut r = rng::stream(seed, "mdp", 0);
    let pick = |r: &mut Stream, lo: usize, hi: usize| {
        lo + (rng::uniform01(r) * (hi - lo + 1) as f64) as usize
    };
    let (ns, na, h) = (
        pick(&mut r, 2, 5),
        pick(&mut r, 2, 4),
        pick(&mut r, 1, max_horizon),
    );
    let gamma = rng::uniform(&mut r, 0.8, 1.0);
    let simplex = |r: &mut Stream, n: usize| {
        let w: Vec<f64> = (0..n).map(|_| rng::uniform(r, 0.05, 1.0)).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|x| x / s).collect::<Vec<_>>()
    };
    let transitions = (0..ns * na).flat_map(|_| simplex(&mut r, ns)).collect();
    let rewards = (0..ns * na)
        .map(|_| rng::uniform(&mut r, -1.0, 1.0))
        .collect();
    let start = simplex(&mut r, ns);
    let theta = (0..ns * na).map(|_| rng::standard_normal(&mut r)).collect();
    (
        TabularMdp {
            states: ns,
            actions: na,
            horizon: h,
            gamma,
            transitions,
            rewards,
            start,
        },
        theta,
    )
}

/// M trajectories: `[H, M]` arrays, row t holds step t of every trajectory.
#[derive(Clone, Debug)]
pub struct Batch {
    pub m: usize,
    pub states: Vec<usize>,
    pub actions: Vec<i64>,
    pub rewards: Vec<f32>,
}

/// Draws M trajectories of the softmax policy of `theta`.
pub fn sample(mdp: &TabularMdp, theta: &[f64], m: usize, r: &mut Stream) -> Batch {
    let (ns, na, h) = (mdp.states, mdp.actions, mdp.horizon);
    let pi = softmax_policy(theta, na);
    let draw = |r: &mut Stream, probs: &[f64]| {
        let u = rng::uniform01(r);
        let mut c = 0.0;
        for (k, p) in probs.iter().enumerate() {
            c += p;
            if u < c {
                return k;
            }
        }
        probs.len() - 1
    };
    let mut b = Batch {
        m,
        states: vec![0; h * m],
        actions: vec![0; h * m],
        rewards: vec![0.0; h * m],
    };
    for i in 0..m {
        let mut s = draw(r, &mdp.start);
        for t in 0..h {
            let a = draw(r, &pi[s * na..(s + 1) * na]);
            b.states[t * m + i] = s;
            b.actions[t * m + i] = a as i64;
            b.rewards[t * m + i] = mdp.rewards[s * na + a] as f32;
            s = draw(
                r,
                &mdp.transitions[(s * na + a) * ns..(s * na + a + 1) * ns],
            );
        }
    }
    b
}

/// The estimators of the study. `biased` ones are the negative controls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Estimator {
    /// Williams 1992: R(τ) Σ_t ∇log π.
    TotalReturn,
    /// Σ_t γ^t G_t ∇log π (causality).
    RewardToGo,
    /// Σ_t γ^t (G_t − b(s_t)) ∇log π with an arbitrary b(s) = 2 sin(3s + 1).
    StateBaseline,
    /// Σ_t γ^t (G_t − V_w(s_t)) ∇log π with V_w a state-value critic fitted by the production
    /// `value_loss` and Adam on an independent sample (the learners' baseline path).
    LearnedBaseline,
    /// Σ_t γ^t Q^π_t(s_t, a_t) ∇log π, exact Q.
    ExactQ,
    /// Σ_t γ^t A^π_t(s_t, a_t) ∇log π, exact A.
    ExactAdvantage,
    /// Σ_t γ^t GAE(λ)_t ∇log π with the exact V^π_t.
    Gae(f32),
    /// Trajectories from θ′ ≠ θ, weighted by Π_t π_θ/π_θ′.
    ImportanceSampling,
    /// PPO's clipped surrogate at θ = θ′ with exact advantages.
    PpoClipAtOld,
    /// PPO's KL-penalised surrogate (β = 0.7) at θ = θ′ with exact advantages.
    PpoKlAtOld,
    /// Negative control (i): an action-dependent baseline b(s, a) = 4(a + 1), uncorrected.
    ActionBaseline,
    /// Negative control (iii): reward-to-go without J's γ^t.
    MissingDiscount,
}

impl Estimator {
    /// Every estimator of the study, unbiased ones first.
    pub fn all() -> Vec<Self> {
        use Estimator::*;
        vec![
            TotalReturn,
            RewardToGo,
            StateBaseline,
            LearnedBaseline,
            ExactQ,
            ExactAdvantage,
            Gae(0.0),
            Gae(0.5),
            Gae(0.95),
            Gae(1.0),
            ImportanceSampling,
            PpoClipAtOld,
            PpoKlAtOld,
            ActionBaseline,
            MissingDiscount,
        ]
    }

    pub fn name(&self) -> String {
        use Estimator::*;
        match self {
            TotalReturn => "reinforce_total_return".into(),
            RewardToGo => "reinforce_reward_to_go".into(),
            StateBaseline => "reinforce_state_baseline".into(),
            LearnedBaseline => "reinforce_learned_baseline".into(),
            ExactQ => "actor_critic_exact_q".into(),
            ExactAdvantage => "actor_critic_exact_advantage".into(),
            Gae(l) => format!("gae_lambda_{l}"),
            ImportanceSampling => "importance_sampling".into(),
            PpoClipAtOld => "ppo_clip_at_old_policy".into(),
            PpoKlAtOld => "ppo_kl_at_old_policy".into(),
            ActionBaseline => "biased_action_baseline".into(),
            MissingDiscount => "biased_missing_discount".into(),
        }
    }

    /// Whether the estimator is a negative control (biased by construction).
    pub fn biased(&self) -> bool {
        matches!(self, Estimator::ActionBaseline | Estimator::MissingDiscount)
    }

    /// The policy trajectories are drawn from.
    pub fn behaviour(&self, theta: &[f64]) -> Vec<f64> {
        match self {
            Estimator::ImportanceSampling => theta
                .iter()
                .enumerate()
                .map(|(k, x)| x + 0.3 * ((k as f64) * 1.7).sin())
                .collect(),
            _ => theta.to_vec(),
        }
    }

    /// One estimate of ∇J(θ) from `batch` (drawn from [`Estimator::behaviour`]).
    pub fn estimate(
        &self,
        mdp: &TabularMdp,
        theta: &[f64],
        context: &Context,
        batch: &Batch,
    ) -> Vec<f64> {
        use Estimator::*;
        let na = mdp.actions;
        let tables = &context.tables;
        let exact_adv = |t: usize, s: usize, a: usize| tables.q[t][s * na + a] - tables.v[t][s];
        match *self {
            TotalReturn => {
                let g = discounted_from_zero(mdp, &batch.rewards, batch.m);
                let w: Vec<f32> = (0..g.len()).map(|k| g[k % batch.m]).collect();
                pg_estimate(mdp, theta, batch, &w)
            }
            RewardToGo => pg_estimate(
                mdp,
                theta,
                batch,
                &discounted_from_zero(mdp, &batch.rewards, batch.m),
            ),
            StateBaseline => {
                let w = minus_baseline(mdp, batch, |k| {
                    2.0 * (3.0 * batch.states[k] as f32 + 1.0).sin()
                });
                pg_estimate(mdp, theta, batch, &w)
            }
            LearnedBaseline => {
                let v = &context.learned_values;
                let w = minus_baseline(mdp, batch, |k| v[batch.states[k]] as f32);
                pg_estimate(mdp, theta, batch, &w)
            }
            ExactQ => pg_estimate(
                mdp,
                theta,
                batch,
                &table_weights(mdp, batch, &|t, s, a| tables.q[t][s * na + a]),
            ),
            ExactAdvantage => {
                pg_estimate(mdp, theta, batch, &table_weights(mdp, batch, &exact_adv))
            }
            Gae(lambda) => pg_estimate(
                mdp,
                theta,
                batch,
                &gae_weights(mdp, batch, &tables.v, lambda),
            ),
            ImportanceSampling => {
                let pi = softmax_policy(theta, na);
                let pi_b = softmax_policy(&self.behaviour(theta), na);
                let g = discounted_from_zero(mdp, &batch.rewards, batch.m);
                let rho: Vec<f64> = (0..batch.m)
                    .map(|i| {
                        (0..mdp.horizon)
                            .map(|t| {
                                let k = t * batch.m + i;
                                let sa = batch.states[k] * na + batch.actions[k] as usize;
                                pi[sa] / pi_b[sa]
                            })
                            .product()
                    })
                    .collect();
                let w: Vec<f32> = g
                    .iter()
                    .enumerate()
                    .map(|(k, g)| (*g as f64 * rho[k % batch.m]) as f32)
                    .collect();
                pg_estimate(mdp, theta, batch, &w)
            }
            PpoClipAtOld => ppo_estimate(
                mdp,
                theta,
                None,
                batch,
                &table_weights(mdp, batch, &exact_adv),
                false,
            ),
            PpoKlAtOld => ppo_estimate(
                mdp,
                theta,
                None,
                batch,
                &table_weights(mdp, batch, &exact_adv),
                true,
            ),
            ActionBaseline => pg_estimate(
                mdp,
                theta,
                batch,
                &minus_baseline(mdp, batch, |k| 4.0 * (batch.actions[k] as f32 + 1.0)),
            ),
            MissingDiscount => {
                let shape = Shape {
                    num_steps: mdp.horizon,
                    num_envs: batch.m,
                };
                let w = reward_to_go(
                    shape,
                    &batch.rewards,
                    &vec![0.0; shape.len()],
                    &last_row_done(shape),
                    mdp.gamma as f32,
                );
                pg_estimate(mdp, theta, batch, &w)
            }
        }
    }
}

/// What estimators may use besides the batch: the exact tables of the policy, and the values
/// of a learned state-value critic (empty unless [`Estimator::LearnedBaseline`] is measured).
pub struct Context {
    pub tables: Tables,
    pub learned_values: Vec<f64>,
}

/// A state-value critic V_w(s) (one weight per state, like the learners' critic a function of
/// the state only), fitted to the reward-to-go G_t by the production `value_loss` with Adam,
/// on 512 trajectories drawn from their own stream, independent of the batches it will serve.
pub fn fit_state_values(mdp: &TabularMdp, theta: &[f64], seed: u64) -> Vec<f64> {
    use crate::losses::value_loss;
    use tch::nn::OptimizerConfig;
    let mut r = rng::stream(seed, "baseline-fit", 0);
    let m = 512;
    let b = sample(mdp, theta, m, &mut r);
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: m,
    };
    let targets = reward_to_go(
        shape,
        &b.rewards,
        &vec![0.0; shape.len()],
        &last_row_done(shape),
        mdp.gamma as f32,
    );
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let w = vs
        .root()
        .var("v", &[mdp.states as i64], tch::nn::Init::Const(0.0));
    let mut opt = tch::nn::Adam::default()
        .build(&vs, 0.1)
        .expect("an Adam optimiser");
    let idx = Tensor::from_slice(&b.states.iter().map(|&s| s as i64).collect::<Vec<_>>());
    let targets = Tensor::from_slice(&targets);
    for _ in 0..300 {
        let values = w.index_select(0, &idx);
        let loss = value_loss(&values, &targets, &values.detach(), None);
        opt.backward_step(&loss);
    }
    Vec::<f32>::try_from(w.detach())
        .expect("f32 values")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn discount(mdp: &TabularMdp, t: usize) -> f32 {
    (mdp.gamma as f32).powi(t as i32)
}

fn last_row_done(shape: Shape) -> Vec<bool> {
    let mut dones = vec![false; shape.len()];
    dones[(shape.num_steps - 1) * shape.num_envs..].fill(true);
    dones
}

/// `γ^t Σ_{l≥0} γ^l r_{t+l}`: the production reward-to-go (discounted from t), times γ^t.
pub fn discounted_from_zero(mdp: &TabularMdp, rewards: &[f32], m: usize) -> Vec<f32> {
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: m,
    };
    let rtg = reward_to_go(
        shape,
        rewards,
        &vec![0.0; shape.len()],
        &last_row_done(shape),
        mdp.gamma as f32,
    );
    rtg.iter()
        .enumerate()
        .map(|(k, g)| g * discount(mdp, k / m))
        .collect()
}

/// `γ^t (G_t − b_k)` for every entry k of a batch: the discounted-from-zero reward-to-go minus
/// a baseline `b(k)` that is discounted like the return.
fn minus_baseline(mdp: &TabularMdp, batch: &Batch, b: impl Fn(usize) -> f32) -> Vec<f32> {
    let g = discounted_from_zero(mdp, &batch.rewards, batch.m);
    g.iter()
        .enumerate()
        .map(|(k, g)| g - discount(mdp, k / batch.m) * b(k))
        .collect()
}

/// `γ^t · f(t, s_t, a_t)` for every entry of a batch.
pub fn table_weights(
    mdp: &TabularMdp,
    b: &Batch,
    f: &dyn Fn(usize, usize, usize) -> f64,
) -> Vec<f32> {
    (0..mdp.horizon * b.m)
        .map(|k| {
            (mdp.gamma.powi((k / b.m) as i32) * f(k / b.m, b.states[k], b.actions[k] as usize))
                as f32
        })
        .collect()
}

/// GAE(λ) with the exact V_t through the production `gae`, times γ^t.
pub fn gae_weights(mdp: &TabularMdp, b: &Batch, v: &[Vec<f64>], lambda: f32) -> Vec<f32> {
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: b.m,
    };
    let values: Vec<f32> = (0..shape.len())
        .map(|k| v[k / b.m][b.states[k]] as f32)
        .collect();
    let next_values: Vec<f32> = (0..shape.len())
        .map(|k| {
            if k / b.m + 1 < mdp.horizon {
                v[k / b.m + 1][b.states[k + b.m]] as f32
            } else {
                0.0
            }
        })
        .collect();
    let (adv, _) = gae(
        shape,
        &b.rewards,
        &values,
        &next_values,
        &last_row_done(shape),
        mdp.gamma as f32,
        lambda,
    );
    adv.iter()
        .enumerate()
        .map(|(k, a)| a * discount(mdp, k / b.m))
        .collect()
}

fn logprobs(theta_t: &Tensor, mdp: &TabularMdp, b: &Batch) -> Tensor {
    let na = mdp.actions as i64;
    let idx: Vec<i64> = b
        .states
        .iter()
        .zip(&b.actions)
        .map(|(&s, &a)| s as i64 * na + a)
        .collect();
    theta_t
        .log_softmax(1, Kind::Double)
        .view([-1])
        .index_select(0, &Tensor::from_slice(&idx))
}

fn theta_tensor(mdp: &TabularMdp, theta: &[f64]) -> Tensor {
    Tensor::from_slice(theta).view([mdp.states as i64, mdp.actions as i64])
}

fn rescaled_gradient(mdp: &TabularMdp, theta_t: &Tensor, loss: &Tensor) -> Vec<f64> {
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(theta_t.grad().view([-1])).expect("f64 gradient");
    grad.into_iter()
        .map(|g| -(mdp.horizon as f64) * g)
        .collect()
}

/// `1/M Σ_i Σ_t w_{t,i} ∇log π(a_t|s_t)` through the production `policy_gradient_loss`.
pub fn pg_estimate(mdp: &TabularMdp, theta: &[f64], b: &Batch, weights: &[f32]) -> Vec<f64> {
    let theta_t = theta_tensor(mdp, theta).set_requires_grad(true);
    let loss = policy_gradient_loss(
        &logprobs(&theta_t, mdp, b),
        &Tensor::from_slice(weights).to_kind(Kind::Double),
    );
    rescaled_gradient(mdp, &theta_t, &loss)
}

/// An estimate through a PPO surrogate with `old` log-probs from `theta_old` (None: θ′ = θ).
pub fn ppo_estimate(
    mdp: &TabularMdp,
    theta: &[f64],
    theta_old: Option<&[f64]>,
    b: &Batch,
    weights: &[f32],
    kl: bool,
) -> Vec<f64> {
    let theta_t = theta_tensor(mdp, theta).set_requires_grad(true);
    let new = logprobs(&theta_t, mdp, b);
    let old = match theta_old {
        None => new.detach(),
        Some(o) => logprobs(&theta_tensor(mdp, o), mdp, b),
    };
    let adv = Tensor::from_slice(weights).to_kind(Kind::Double);
    let (loss, _) = if kl {
        ppo_kl_loss(&new, &old, &adv, 0.7, 0.2)
    } else {
        ppo_clip_loss(&new, &old, &adv, 0.2)
    };
    rescaled_gradient(mdp, &theta_t, &loss)
}

/// One-sided upper tail of the standard normal, Q(z) = ½ erfc(z/√2) (Numerical Recipes'
/// `erfcc`, fractional error < 1.2e-7).
pub fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// The z whose two-sided normal tail is `alpha` (bisection).
pub fn z_for(alpha: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if 2.0 * normal_tail(mid) > alpha {
            lo = mid
        } else {
            hi = mid
        }
    }
    hi
}

/// Float32 slack of the check: the losses average f64 products in f32 (relative 6e-8 per
/// entry); 1e-4 absolute covers that with a wide margin.
pub const SLACK: f64 = 1e-4;

/// Family-wise false-alarm rate of one check (Bonferroni over the coordinates).
pub const FAMILY_WISE_ALPHA: f64 = 1e-6;

/// K batch estimates of one estimator against the exact gradient.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub mdp: String,
    pub estimator: String,
    pub samples: usize,
    /// ‖mean − ∇J‖ over the K batches.
    pub bias_norm: f64,
    /// max_k |mean_k − ∇J_k| / SE_k.
    pub bias_z: f64,
    /// Σ_k Var(ĝ_k) of one batch estimate.
    pub variance_trace: f64,
    /// ‖∇J‖² / E‖ĝ − ∇J‖².
    pub snr: f64,
    /// Mean cosine between a batch estimate and ∇J.
    pub cosine_to_exact: f64,
    /// Whether |mean_k − ∇J_k| ≤ z·SE_k + slack for every k (z for `FAMILY_WISE_ALPHA`).
    pub passes: bool,
    /// Per-coordinate standard errors of the mean.
    #[serde(skip)]
    pub se: Vec<f64>,
}

/// Measures `estimator` with `batches` batches of `m` trajectories (seeded by `seed`).
pub fn measure(
    name: &str,
    mdp: &TabularMdp,
    theta: &[f64],
    estimator: Estimator,
    batches: usize,
    m: usize,
    seed: u64,
) -> Measurement {
    let exact = mdp.policy_gradient_theorem(theta).gradient;
    let context = Context {
        tables: mdp.tables(&softmax_policy(theta, mdp.actions)),
        learned_values: if estimator == Estimator::LearnedBaseline {
            fit_state_values(mdp, theta, seed)
        } else {
            Vec::new()
        },
    };
    let behaviour = estimator.behaviour(theta);
    let mut r = rng::stream(seed, "estimator-samples", 0);
    let estimates: Vec<Vec<f64>> = (0..batches)
        .map(|_| estimator.estimate(mdp, theta, &context, &sample(mdp, &behaviour, m, &mut r)))
        .collect();
    summarise(name, &estimator.name(), m, &exact, &estimates)
}

/// The statistics of K estimates against the exact gradient.
pub fn summarise(
    mdp: &str,
    estimator: &str,
    m: usize,
    exact: &[f64],
    estimates: &[Vec<f64>],
) -> Measurement {
    let (k_batches, d) = (estimates.len() as f64, exact.len());
    let z = z_for(FAMILY_WISE_ALPHA / d as f64);
    let mean: Vec<f64> = (0..d)
        .map(|k| estimates.iter().map(|e| e[k]).sum::<f64>() / k_batches)
        .collect();
    let var: Vec<f64> = (0..d)
        .map(|k| {
            estimates
                .iter()
                .map(|e| (e[k] - mean[k]).powi(2))
                .sum::<f64>()
                / (k_batches - 1.0)
        })
        .collect();
    let se: Vec<f64> = var.iter().map(|v| (v / k_batches).sqrt()).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let exact_norm = norm(exact);
    let mse = estimates
        .iter()
        .map(|e| {
            e.iter()
                .zip(exact)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / k_batches;
    let cosine = estimates
        .iter()
        .map(|e| {
            e.iter().zip(exact).map(|(a, b)| a * b).sum::<f64>()
                / (norm(e) * exact_norm).max(1e-300)
        })
        .sum::<f64>()
        / k_batches;
    let errors: Vec<f64> = mean.iter().zip(exact).map(|(m, x)| (m - x).abs()).collect();
    Measurement {
        mdp: mdp.to_string(),
        estimator: estimator.to_string(),
        samples: m,
        bias_norm: norm(
            &mean
                .iter()
                .zip(exact)
                .map(|(m, x)| m - x)
                .collect::<Vec<_>>(),
        ),
        bias_z: errors
            .iter()
            .zip(&se)
            .map(|(e, s)| e / s.max(1e-300))
            .fold(0.0, f64::max),
        variance_trace: var.iter().sum(),
        snr: exact_norm * exact_norm / mse.max(1e-300),
        cosine_to_exact: cosine,
        passes: errors.iter().zip(&se).all(|(e, s)| *e <= z * s + SLACK),
        se,
    }
}

/// The fixed benchmark set: four MDPs of horizon 4 from fixed seeds.
pub fn benchmark_cases() -> Vec<(String, TabularMdp, Vec<f64>)> {
    (1..=4u64)
        .map(|seed| {
            let (mut mdp, theta) = random_case(seed * 7919, 4);
            mdp.horizon = 4;
            (format!("bench-{seed}"), mdp, theta)
        })
        .collect()
}
