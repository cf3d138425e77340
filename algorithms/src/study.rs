//! The estimator study: every gradient estimator on small MDPs whose exact gradient is known,
//! at several sample sizes, measured the same way. This is what `gradgym estimators` runs and
//! what the unbiasedness tests call.
//!
//! An estimator maps a batch of M trajectories to one estimate of ∇J(θ), in two stages.
//! [`Estimator::surrogate`] builds the loss to differentiate and its weights `[H, M]`: the
//! weights come from the production [`crate::advantages`] functions or from exact tables, in
//! the float type `F` of the path that differentiates it. Then one of two gradient paths:
//!
//! - [`Estimator::estimate`], what the study measures: θ in a tch tensor, the production
//!   losses of [`crate::losses`] (`policy_gradient_loss` for the REINFORCE family, actor-critic
//!   and GAE, or the PPO surrogates) and autodiff, with f32 weights as the learners have. The
//!   tensor losses average in f32, so this path is good to about 1e-7 relative.
//! - [`Estimator::estimate_f64`], what the exact tests use: the same weights in f64, the
//!   closed-form gradients of the slice-form losses of [`crate::loss_grads`] (the native
//!   backend's) in f64, chained through ∂log π(a|s)/∂θ[s, c] = 1[a = c] − π(c|s) by hand.
//!   [`expectation_by_enumeration`] sums it over every trajectory, which gives an estimator's
//!   exact expectation to rounding (about 1e-15), to compare with ∇J to 1e-9.
//!
//! The losses average over the H·M entries of a batch, so an estimate is `−H · ∇loss`: the mean
//! over the M trajectories of a per-trajectory term, which is why the expectation of a batch
//! estimate is the expectation of the estimate from one trajectory.
//!
//! J discounts from t = 0, so every weight at step t carries γ^t (dropping it is a negative
//! control: the common practical estimator, biased for this J).

use ndarray::{Array1, Array2, Array3, ArrayView1};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::advantages::{Shape, gae, reward_to_go};
use crate::exact::{Tables, TabularMdp, Trajectory, softmax_policy};
use crate::loss_grads;
use crate::losses::{policy_gradient_loss, ppo_clip_loss, ppo_kl_loss};
use crate::real::Real;
use gradgym_envs::rng::{self, Stream};

/// A random MDP from `seed`: 2–5 states, 2–4 actions, horizon 1–`max_horizon`, γ ∈ [0.8, 1],
/// transitions and start distribution bounded away from 0, rewards in [−1, 1]; and a θ `[S, A]`
/// drawn from a standard normal.
pub fn random_case(seed: u64, max_horizon: usize) -> (TabularMdp, Array2<f64>) {
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
    let transitions: Vec<f64> = (0..ns * na).flat_map(|_| simplex(&mut r, ns)).collect();
    let rewards: Vec<f64> = (0..ns * na)
        .map(|_| rng::uniform(&mut r, -1.0, 1.0))
        .collect();
    let start = simplex(&mut r, ns);
    let theta: Vec<f64> = (0..ns * na).map(|_| rng::standard_normal(&mut r)).collect();
    (
        TabularMdp::new(
            h,
            gamma,
            Array3::from_shape_vec((ns, na, ns), transitions).expect("S·A·S transitions"),
            Array2::from_shape_vec((ns, na), rewards).expect("S·A rewards"),
            Array1::from(start),
        ),
        Array2::from_shape_vec((ns, na), theta).expect("S·A parameters"),
    )
}

/// M trajectories, as `[H, M]` arrays: `[t, i]` holds step t of trajectory i.
#[derive(Clone, Debug)]
pub struct Batch {
    pub states: Array2<usize>,
    pub actions: Array2<usize>,
    /// `R[s_t, a_t]`.
    pub rewards: Array2<f64>,
}

impl Batch {
    /// The number of trajectories, M.
    pub fn m(&self) -> usize {
        self.states.ncols()
    }

    /// The batch of `trajectories`, in order (trajectory i in column i).
    pub fn of(mdp: &TabularMdp, trajectories: &[Trajectory]) -> Self {
        let (h, m) = (mdp.horizon, trajectories.len());
        let states = Array2::from_shape_fn((h, m), |(t, i)| trajectories[i].states[t]);
        let actions = Array2::from_shape_fn((h, m), |(t, i)| trajectories[i].actions[t]);
        let rewards = Array2::from_shape_fn((h, m), |(t, i)| {
            mdp.rewards[[states[[t, i]], actions[[t, i]]]]
        });
        Self {
            states,
            actions,
            rewards,
        }
    }

    fn shape(&self) -> Shape {
        Shape {
            num_steps: self.states.nrows(),
            num_envs: self.states.ncols(),
        }
    }

    /// The rewards in the float type of the weights.
    pub fn rewards_as<F: Real>(&self) -> Array2<F> {
        self.rewards.mapv(F::from_f64)
    }
}

/// Draws M trajectories of the softmax policy of `theta`.
pub fn sample(mdp: &TabularMdp, theta: &Array2<f64>, m: usize, r: &mut Stream) -> Batch {
    let h = mdp.horizon;
    let pi = softmax_policy(theta);
    let draw = |r: &mut Stream, probs: ArrayView1<f64>| {
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
        states: Array2::zeros((h, m)),
        actions: Array2::zeros((h, m)),
        rewards: Array2::zeros((h, m)),
    };
    for i in 0..m {
        let mut s = draw(r, mdp.start.view());
        for t in 0..h {
            let a = draw(r, pi.row(s));
            b.states[[t, i]] = s;
            b.actions[[t, i]] = a;
            b.rewards[[t, i]] = mdp.rewards[[s, a]];
            s = draw(r, mdp.next_states(s, a));
        }
    }
    b
}

/// PPO's clip range ε in the study (and for the clip fraction of PPO-KL).
pub const PPO_CLIP: f64 = 0.2;
/// PPO-KL's coefficient β in the study.
pub const PPO_BETA: f64 = 0.7;

/// Which PPO surrogate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PpoLoss {
    /// `ppo_clip_loss` with ε = [`PPO_CLIP`].
    Clip,
    /// `ppo_kl_loss` with β = [`PPO_BETA`].
    KlPenalty,
}

/// The loss whose gradient is an estimate, with its weights `[H, M]` in the float type `F`.
#[derive(Clone, Debug)]
pub enum Surrogate<F> {
    /// `policy_gradient_loss` with weights Ψ: the estimate `1/M Σ_i Σ_t Ψ_{t,i} ∇log π(a_t|s_t)`.
    PolicyGradient(Array2<F>),
    /// A PPO surrogate at θ with ratios against `old` (`None`: θ′ = θ) and these advantages.
    Ppo {
        advantages: Array2<F>,
        old: Option<Array2<f64>>,
        loss: PpoLoss,
    },
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
    pub fn behaviour(&self, theta: &Array2<f64>) -> Array2<f64> {
        match self {
            Estimator::ImportanceSampling => {
                let na = theta.ncols();
                let mut b = theta.clone();
                for ((s, a), x) in b.indexed_iter_mut() {
                    *x += 0.3 * (((s * na + a) as f64) * 1.7).sin();
                }
                b
            }
            _ => theta.clone(),
        }
    }

    /// The loss whose gradient at θ is this estimator's estimate from `batch` (drawn from
    /// [`Estimator::behaviour`]), with its weights in the float type `F`.
    pub fn surrogate<F: Real>(
        &self,
        mdp: &TabularMdp,
        theta: &Array2<f64>,
        context: &Context,
        batch: &Batch,
    ) -> Surrogate<F> {
        use Estimator::*;
        use Surrogate::PolicyGradient;
        let tables = &context.tables;
        let exact_adv = |t: usize, s: usize, a: usize| tables.q[[t, s, a]] - tables.v[[t, s]];
        match *self {
            TotalReturn => {
                let g = discounted_from_zero::<F>(mdp, &batch.rewards_as());
                PolicyGradient(Array2::from_shape_fn(g.raw_dim(), |(_, i)| g[[0, i]]))
            }
            RewardToGo => PolicyGradient(discounted_from_zero(mdp, &batch.rewards_as())),
            StateBaseline => PolicyGradient(minus_baseline(mdp, batch, |t, i| {
                let s = F::from_usize(batch.states[[t, i]]);
                F::from_f64(2.0) * (F::from_f64(3.0) * s + F::ONE).sin()
            })),
            LearnedBaseline => {
                let v = &context.learned_values;
                PolicyGradient(minus_baseline(mdp, batch, |t, i| {
                    F::from_f64(v[batch.states[[t, i]]])
                }))
            }
            ExactQ => PolicyGradient(table_weights(mdp, batch, &|t, s, a| tables.q[[t, s, a]])),
            ExactAdvantage => PolicyGradient(table_weights(mdp, batch, &exact_adv)),
            // (In f64, λ is the f32 value widened: 0.95f32 is 0.949999988….)
            Gae(lambda) => PolicyGradient(gae_weights(
                mdp,
                batch,
                &tables.v,
                F::from_f64(lambda as f64),
            )),
            ImportanceSampling => {
                let pi = softmax_policy(theta);
                let pi_b = softmax_policy(&self.behaviour(theta));
                let g = discounted_from_zero::<F>(mdp, &batch.rewards_as());
                // ρ(τ_i) = Π_t π_θ(a_t|s_t) / π_θ′(a_t|s_t), the likelihood ratio of the whole
                // trajectory, weights every step of it.
                let rho: Vec<f64> = (0..batch.m())
                    .map(|i| {
                        (0..mdp.horizon)
                            .map(|t| {
                                let (s, a) = (batch.states[[t, i]], batch.actions[[t, i]]);
                                pi[[s, a]] / pi_b[[s, a]]
                            })
                            .product()
                    })
                    .collect();
                PolicyGradient(Array2::from_shape_fn(g.raw_dim(), |(t, i)| {
                    F::from_f64(g[[t, i]].to_f64() * rho[i])
                }))
            }
            PpoClipAtOld => Surrogate::Ppo {
                advantages: table_weights(mdp, batch, &exact_adv),
                old: None,
                loss: PpoLoss::Clip,
            },
            PpoKlAtOld => Surrogate::Ppo {
                advantages: table_weights(mdp, batch, &exact_adv),
                old: None,
                loss: PpoLoss::KlPenalty,
            },
            ActionBaseline => PolicyGradient(minus_baseline(mdp, batch, |t, i| {
                F::from_f64(4.0) * (F::from_usize(batch.actions[[t, i]]) + F::ONE)
            })),
            MissingDiscount => {
                let shape = batch.shape();
                let w = reward_to_go(
                    shape,
                    flat(&batch.rewards_as::<F>()),
                    &vec![F::ZERO; shape.len()],
                    &last_row_done(shape),
                    F::from_f64(mdp.gamma),
                );
                PolicyGradient(rollout(shape, w))
            }
        }
    }

    /// One estimate of ∇J(θ) from `batch` (drawn from [`Estimator::behaviour`]): f32 weights,
    /// the tensor losses, autodiff. What the study measures.
    pub fn estimate(
        &self,
        mdp: &TabularMdp,
        theta: &Array2<f64>,
        context: &Context,
        batch: &Batch,
    ) -> Array2<f64> {
        match self.surrogate::<f32>(mdp, theta, context, batch) {
            Surrogate::PolicyGradient(w) => pg_estimate(mdp, theta, batch, &w),
            Surrogate::Ppo {
                advantages,
                old,
                loss,
            } => ppo_estimate(mdp, theta, old.as_ref(), batch, &advantages, loss),
        }
    }

    /// The same estimate in f64: f64 weights, the closed-form gradients of the slice-form losses.
    pub fn estimate_f64(
        &self,
        mdp: &TabularMdp,
        theta: &Array2<f64>,
        context: &Context,
        batch: &Batch,
    ) -> Array2<f64> {
        match self.surrogate::<f64>(mdp, theta, context, batch) {
            Surrogate::PolicyGradient(w) => pg_estimate_f64(mdp, theta, batch, &w),
            Surrogate::Ppo {
                advantages,
                old,
                loss,
            } => ppo_estimate_f64(mdp, theta, old.as_ref(), batch, &advantages, loss),
        }
    }

    /// The exact expectation of [`Estimator::estimate_f64`] under the behaviour policy, by
    /// enumeration (see [`expectation_by_enumeration`]).
    pub fn exact_expectation(
        &self,
        mdp: &TabularMdp,
        theta: &Array2<f64>,
        context: &Context,
    ) -> Array2<f64> {
        expectation_by_enumeration(mdp, &self.behaviour(theta), |b| {
            self.estimate_f64(mdp, theta, context, b)
        })
    }
}

/// What estimators may use besides the batch: the exact tables of the policy, and the values
/// `[S]` of a learned state-value critic (empty unless [`Estimator::LearnedBaseline`] is
/// measured).
pub struct Context {
    pub tables: Tables,
    pub learned_values: Array1<f64>,
}

/// `E_{τ ∼ π_behaviour}[ĝ(τ)] = Σ_τ p(τ) ĝ(τ)`, exactly: the sum over every trajectory τ of the
/// softmax policy of `behaviour` (see [`TabularMdp::trajectories`]), with `estimate` applied to
/// the batch of τ alone (M = 1). A batch estimate is the mean of per-trajectory terms, so this
/// is also the expectation of an estimate from M trajectories.
pub fn expectation_by_enumeration(
    mdp: &TabularMdp,
    behaviour: &Array2<f64>,
    mut estimate: impl FnMut(&Batch) -> Array2<f64>,
) -> Array2<f64> {
    let mut out = Array2::zeros(behaviour.raw_dim());
    for tau in mdp.trajectories(&softmax_policy(behaviour)) {
        let g = estimate(&Batch::of(mdp, std::slice::from_ref(&tau)));
        out.scaled_add(tau.probability, &g);
    }
    out
}

/// A state-value critic V_w(s) (one weight per state, like the learners' critic a function of
/// the state only), fitted to the reward-to-go G_t by the production `value_loss` with Adam,
/// on 512 trajectories drawn from their own stream, independent of the batches it will serve.
pub fn fit_state_values(mdp: &TabularMdp, theta: &Array2<f64>, seed: u64) -> Array1<f64> {
    use crate::losses::value_loss;
    use tch::nn::OptimizerConfig;
    let mut r = rng::stream(seed, "baseline-fit", 0);
    let m = 512;
    let b = sample(mdp, theta, m, &mut r);
    let shape = b.shape();
    let targets = reward_to_go(
        shape,
        flat(&b.rewards_as::<f32>()),
        &vec![0.0; shape.len()],
        &last_row_done(shape),
        mdp.gamma as f32,
    );
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let w = vs
        .root()
        .var("v", &[mdp.states() as i64], tch::nn::Init::Const(0.0));
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

/// The entries of a `[H, M]` array in row-major order (the layout of [`Shape`]).
fn flat<F>(a: &Array2<F>) -> &[F] {
    a.as_slice().expect("a [H, M] array in standard layout")
}

/// A `[H, M]` array from row-major entries.
fn rollout<F>(shape: Shape, entries: Vec<F>) -> Array2<F> {
    Array2::from_shape_vec((shape.num_steps, shape.num_envs), entries).expect("H·M entries")
}

fn discount<F: Real>(mdp: &TabularMdp, t: usize) -> F {
    F::from_f64(mdp.gamma).powi(t as i32)
}

fn last_row_done(shape: Shape) -> Vec<bool> {
    let mut dones = vec![false; shape.len()];
    dones[(shape.num_steps - 1) * shape.num_envs..].fill(true);
    dones
}

/// `γ^t Σ_{l≥0} γ^l r_{t+l}` for rewards `[H, M]`: the production reward-to-go (discounted
/// from t), times γ^t.
pub fn discounted_from_zero<F: Real>(mdp: &TabularMdp, rewards: &Array2<F>) -> Array2<F> {
    let shape = Shape {
        num_steps: rewards.nrows(),
        num_envs: rewards.ncols(),
    };
    let rtg = reward_to_go(
        shape,
        flat(rewards),
        &vec![F::ZERO; shape.len()],
        &last_row_done(shape),
        F::from_f64(mdp.gamma),
    );
    let mut out = rollout(shape, rtg);
    for (t, mut row) in out.rows_mut().into_iter().enumerate() {
        let d = discount::<F>(mdp, t);
        row.mapv_inplace(|g| g * d);
    }
    out
}

/// `γ^t (G_t − b(t, i))` for every entry of a batch: the discounted-from-zero reward-to-go
/// minus a baseline that is discounted like the return.
fn minus_baseline<F: Real>(
    mdp: &TabularMdp,
    batch: &Batch,
    b: impl Fn(usize, usize) -> F,
) -> Array2<F> {
    let mut g = discounted_from_zero(mdp, &batch.rewards_as::<F>());
    for ((t, i), x) in g.indexed_iter_mut() {
        *x = *x - discount::<F>(mdp, t) * b(t, i);
    }
    g
}

/// `γ^t · f(t, s_t, a_t)` for every entry of a batch.
pub fn table_weights<F: Real>(
    mdp: &TabularMdp,
    b: &Batch,
    f: &dyn Fn(usize, usize, usize) -> f64,
) -> Array2<F> {
    Array2::from_shape_fn(b.states.raw_dim(), |(t, i)| {
        F::from_f64(mdp.gamma.powi(t as i32) * f(t, b.states[[t, i]], b.actions[[t, i]]))
    })
}

/// GAE(λ) with the exact `V[t, s]` through the production `gae`, times γ^t.
pub fn gae_weights<F: Real>(mdp: &TabularMdp, b: &Batch, v: &Array2<f64>, lambda: F) -> Array2<F> {
    let shape = b.shape();
    let h = shape.num_steps;
    let values = Array2::from_shape_fn(b.states.raw_dim(), |(t, i)| {
        F::from_f64(v[[t, b.states[[t, i]]]])
    });
    let next_values = Array2::from_shape_fn(b.states.raw_dim(), |(t, i)| {
        if t + 1 < h {
            F::from_f64(v[[t + 1, b.states[[t + 1, i]]]])
        } else {
            F::ZERO
        }
    });
    let (adv, _) = gae(
        shape,
        flat(&b.rewards_as::<F>()),
        flat(&values),
        flat(&next_values),
        &last_row_done(shape),
        F::from_f64(mdp.gamma),
        lambda,
    );
    let mut adv = rollout(shape, adv);
    for (t, mut row) in adv.rows_mut().into_iter().enumerate() {
        let d = discount::<F>(mdp, t);
        row.mapv_inplace(|a| a * d);
    }
    adv
}

fn logprobs(theta_t: &Tensor, mdp: &TabularMdp, b: &Batch) -> Tensor {
    let na = mdp.actions() as i64;
    let idx: Vec<i64> = b
        .states
        .iter()
        .zip(&b.actions)
        .map(|(&s, &a)| s as i64 * na + a as i64)
        .collect();
    theta_t
        .log_softmax(1, Kind::Double)
        .view([-1])
        .index_select(0, &Tensor::from_slice(&idx))
}

fn theta_tensor(theta: &Array2<f64>) -> Tensor {
    let (ns, na) = theta.dim();
    Tensor::from_slice(&theta.iter().copied().collect::<Vec<_>>()).view([ns as i64, na as i64])
}

fn rescaled_gradient(mdp: &TabularMdp, theta_t: &Tensor, loss: &Tensor) -> Array2<f64> {
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(theta_t.grad().view([-1])).expect("f64 gradient");
    let grad = grad
        .into_iter()
        .map(|g| -(mdp.horizon as f64) * g)
        .collect();
    Array2::from_shape_vec((mdp.states(), mdp.actions()), grad).expect("S·A gradient")
}

fn tensor_of(weights: &Array2<f32>) -> Tensor {
    Tensor::from_slice(&weights.iter().copied().collect::<Vec<_>>()).to_kind(Kind::Double)
}

/// `1/M Σ_i Σ_t w_{t,i} ∇log π(a_t|s_t)` through the production `policy_gradient_loss`
/// (tensor form, autodiff).
pub fn pg_estimate(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    b: &Batch,
    weights: &Array2<f32>,
) -> Array2<f64> {
    let theta_t = theta_tensor(theta).set_requires_grad(true);
    let loss = policy_gradient_loss(&logprobs(&theta_t, mdp, b), &tensor_of(weights));
    rescaled_gradient(mdp, &theta_t, &loss)
}

/// An estimate through a PPO surrogate (tensor form, autodiff) with `old` log-probs from
/// `theta_old` (None: θ′ = θ).
pub fn ppo_estimate(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    theta_old: Option<&Array2<f64>>,
    b: &Batch,
    advantages: &Array2<f32>,
    loss: PpoLoss,
) -> Array2<f64> {
    let theta_t = theta_tensor(theta).set_requires_grad(true);
    let new = logprobs(&theta_t, mdp, b);
    let old = match theta_old {
        None => new.detach(),
        Some(o) => logprobs(&theta_tensor(o), mdp, b),
    };
    let adv = tensor_of(advantages);
    let (loss, _) = match loss {
        PpoLoss::KlPenalty => ppo_kl_loss(&new, &old, &adv, PPO_BETA, PPO_CLIP),
        PpoLoss::Clip => ppo_clip_loss(&new, &old, &adv, PPO_CLIP),
    };
    rescaled_gradient(mdp, &theta_t, &loss)
}

/// `log π_θ(a_t|s_t)` of every entry of a batch, in f64, row-major `[H, M]`.
fn logprobs_f64(theta: &Array2<f64>, b: &Batch) -> Vec<f64> {
    let mut log_pi = theta.clone();
    for mut row in log_pi.rows_mut() {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        row.mapv_inplace(|x| x - max - log_sum);
    }
    b.states
        .iter()
        .zip(&b.actions)
        .map(|(&s, &a)| log_pi[[s, a]])
        .collect()
}

/// `−H · ∂L/∂θ` from `g[k] = ∂L/∂log π(a_k|s_k)` over the entries of a batch, through
/// `∂log π(a|s)/∂θ[s, c] = 1[a = c] − π(c|s)`.
fn chain_to_theta(mdp: &TabularMdp, theta: &Array2<f64>, b: &Batch, g: &[f64]) -> Array2<f64> {
    let pi = softmax_policy(theta);
    let mut grad = Array2::<f64>::zeros(theta.raw_dim());
    for ((&s, &a), &gk) in b.states.iter().zip(&b.actions).zip(g) {
        for c in 0..theta.ncols() {
            grad[[s, c]] += gk * (if a == c { 1.0 } else { 0.0 } - pi[[s, c]]);
        }
    }
    grad.mapv_inplace(|x| -(mdp.horizon as f64) * x);
    grad
}

/// [`pg_estimate`] in f64, through the slice-form `policy_gradient_loss` and its closed-form
/// gradient.
pub fn pg_estimate_f64(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    b: &Batch,
    weights: &Array2<f64>,
) -> Array2<f64> {
    let lp = logprobs_f64(theta, b);
    let mut g = vec![0.0; lp.len()];
    loss_grads::policy_gradient_loss(&lp, flat(weights), &mut g);
    chain_to_theta(mdp, theta, b, &g)
}

/// [`ppo_estimate`] in f64, through the slice-form PPO losses and their closed-form gradients.
pub fn ppo_estimate_f64(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    theta_old: Option<&Array2<f64>>,
    b: &Batch,
    advantages: &Array2<f64>,
    loss: PpoLoss,
) -> Array2<f64> {
    let new = logprobs_f64(theta, b);
    let old = theta_old.map_or_else(|| new.clone(), |o| logprobs_f64(o, b));
    let mut g = vec![0.0; new.len()];
    let adv = flat(advantages);
    match loss {
        PpoLoss::KlPenalty => {
            loss_grads::ppo_kl_loss(&new, &old, adv, PPO_BETA, PPO_CLIP, &mut g);
        }
        PpoLoss::Clip => {
            loss_grads::ppo_clip_loss(&new, &old, adv, PPO_CLIP, &mut g);
        }
    }
    chain_to_theta(mdp, theta, b, &g)
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

/// ln Γ(x) for x ≥ ½ (Lanczos' approximation with g = 7 and nine coefficients, relative error
/// about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The continued fraction of the incomplete beta function, by the modified Lentz method.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // The even step, then the odd one.
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function I_x(a, b), 0 ≤ x ≤ 1.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The fraction converges fast on this side of the mean; the other side by symmetry.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// One-sided upper tail of Student's t with `nu` degrees of freedom, P(T > t) for t ≥ 0:
/// ½ I_{ν/(ν+t²)}(ν/2, ½).
pub fn student_t_tail(t: f64, nu: f64) -> f64 {
    assert!(
        nu >= 1.0,
        "Student's t needs at least 1 degree of freedom, got {nu}"
    );
    0.5 * incomplete_beta(nu / (nu + t * t), 0.5 * nu, 0.5)
}

/// The t whose two-sided tail is `alpha` under Student's t with `nu` degrees of freedom
/// (bisection). A mean's deviation over its standard error, both from K estimates, follows
/// t with K − 1 degrees of freedom; the normal quantile ([`z_for`]) is its K → ∞ limit and
/// would understate the check's width at small K.
pub fn t_for(alpha: f64, nu: f64) -> f64 {
    let mut hi = 1.0;
    while 2.0 * student_t_tail(hi, nu) > alpha && hi < 1e300 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if 2.0 * student_t_tail(mid, nu) > alpha {
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

/// Family-wise false-alarm rate of one check (Bonferroni over the coordinates), for
/// coordinates whose batch means are near normal; see [`MIN_EXPECTED_DRAWS`].
pub const FAMILY_WISE_ALPHA: f64 = 1e-6;

/// The fewest draws, expected over all K·M trajectories of a measurement, of every action at a
/// state before the check trusts the standard errors of that state's coordinates θ[s, ·].
///
/// An action of probability 0.002 at a state visited 316 times goes undrawn in 55% of samples.
/// Its term is then missing from every batch alike, so the batch estimates of θ[s, ·] agree to
/// 4e-8 while their mean misses ∇J by 4.5e-4: an unbiased estimator failed at |mean − ∇J|/SE
/// above 10,000. At 20 expected draws the chance of no draw is e⁻²⁰ ≈ 2e-9. Coordinates left out
/// are counted ([`Measurement::unchecked`]), not passed silently.
pub const MIN_EXPECTED_DRAWS: f64 = 20.0;

/// The expected number of draws of each (s, a) `[S, A]` over `trajectories` trajectories
/// sampled from the policy `behaviour` (`[S, A]` probabilities): n · Σ_t d_t(s) · π(a|s).
pub fn expected_draws(
    mdp: &TabularMdp,
    behaviour: &Array2<f64>,
    trajectories: usize,
) -> Array2<f64> {
    let d = mdp.tables(behaviour).d;
    let visits = d.sum_axis(ndarray::Axis(0));
    Array2::from_shape_fn(behaviour.raw_dim(), |(s, a)| {
        trajectories as f64 * visits[s] * behaviour[[s, a]]
    })
}

/// Which coordinates θ[s, c] the check can judge: those of states where every action is
/// expected at least [`MIN_EXPECTED_DRAWS`] times (`draws` from [`expected_draws`]).
pub fn checkable(draws: &Array2<f64>) -> Array2<bool> {
    Array2::from_shape_fn(draws.raw_dim(), |(s, _)| {
        draws.row(s).iter().all(|&n| n >= MIN_EXPECTED_DRAWS)
    })
}

impl Measurement {
    /// Whether the check judged any coordinate: a measurement with none checked neither
    /// passes nor fails, and is counted apart.
    pub fn judged(&self) -> bool {
        self.unchecked < self.se.len()
    }
}

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
    /// Whether |mean_k − ∇J_k| ≤ t·SE_k + slack for every checked k (t: Student's quantile
    /// with K − 1 degrees of freedom for `FAMILY_WISE_ALPHA`, Bonferroni over the checked
    /// coordinates).
    pub passes: bool,
    /// Coordinates left out of `passes` and `bias_z`: their state has an action expected fewer
    /// than [`MIN_EXPECTED_DRAWS`] times in the K·M trajectories. Where every coordinate is
    /// (see [`Measurement::judged`]), `passes` says nothing and `bias_z` is NaN.
    pub unchecked: usize,
    /// Per-coordinate standard errors of the mean, `[S, A]` like θ.
    #[serde(skip)]
    pub se: Array2<f64>,
}

/// Measures `estimator` with `batches` batches of `m` trajectories (seeded by `seed`), judging
/// the coordinates [`checkable`] picks.
pub fn measure(
    name: &str,
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    estimator: Estimator,
    batches: usize,
    m: usize,
    seed: u64,
) -> Measurement {
    measure_on(name, mdp, theta, estimator, batches, m, seed, checkable)
}

/// [`measure`], judging the coordinates `checked` picks from the expected draws `[S, A]` of the
/// whole sample (a test passes "every coordinate" to show what [`checkable`] leaves out).
#[allow(clippy::too_many_arguments)]
pub fn measure_on(
    name: &str,
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    estimator: Estimator,
    batches: usize,
    m: usize,
    seed: u64,
    checked: fn(&Array2<f64>) -> Array2<bool>,
) -> Measurement {
    let exact = mdp.policy_gradient_theorem(theta).gradient;
    let context = Context {
        tables: mdp.tables(&softmax_policy(theta)),
        learned_values: if estimator == Estimator::LearnedBaseline {
            fit_state_values(mdp, theta, seed)
        } else {
            Array1::zeros(0)
        },
    };
    let behaviour = estimator.behaviour(theta);
    let mut r = rng::stream(seed, "estimator-samples", 0);
    let estimates: Vec<Array2<f64>> = (0..batches)
        .map(|_| estimator.estimate(mdp, theta, &context, &sample(mdp, &behaviour, m, &mut r)))
        .collect();
    let draws = expected_draws(mdp, &softmax_policy(&behaviour), batches * m);
    summarise(
        name,
        &estimator.name(),
        m,
        &exact,
        &estimates,
        &checked(&draws),
    )
}

/// The statistics of K estimates against the exact gradient (all `[S, A]`); `checked` says
/// which coordinates `passes` and `bias_z` judge (see [`checkable`]).
pub fn summarise(
    mdp: &str,
    estimator: &str,
    m: usize,
    exact: &Array2<f64>,
    estimates: &[Array2<f64>],
    checked: &Array2<bool>,
) -> Measurement {
    let (k_batches, d) = (estimates.len() as f64, exact.len());
    // `[K, S·A]`: row k is estimate k, its coordinates in θ's row-major order.
    let samples = Array2::from_shape_vec(
        (estimates.len(), d),
        estimates.iter().flat_map(|e| e.iter().copied()).collect(),
    )
    .expect("estimates shaped like the gradient");
    let exact_flat: Array1<f64> = exact.iter().copied().collect();
    assert_eq!(
        checked.raw_dim(),
        exact.raw_dim(),
        "one flag per coordinate"
    );
    let checked: Vec<bool> = checked.iter().copied().collect();
    let n_checked = checked.iter().filter(|&&c| c).count();
    // Each coordinate's |mean − exact| / SE is t-distributed with K − 1 degrees of freedom.
    let z = t_for(FAMILY_WISE_ALPHA / n_checked.max(1) as f64, k_batches - 1.0);
    let mean: Array1<f64> = samples
        .columns()
        .into_iter()
        .map(|c| c.iter().sum::<f64>() / k_batches)
        .collect();
    let var: Array1<f64> = samples
        .columns()
        .into_iter()
        .zip(&mean)
        .map(|(c, m)| c.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (k_batches - 1.0))
        .collect();
    let se: Array1<f64> = var.mapv(|v| (v / k_batches).sqrt());
    let norm = |v: ArrayView1<f64>| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let exact_norm = norm(exact_flat.view());
    let mse = samples
        .rows()
        .into_iter()
        .map(|e| {
            e.iter()
                .zip(&exact_flat)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / k_batches;
    let cosine = samples
        .rows()
        .into_iter()
        .map(|e| {
            e.iter().zip(&exact_flat).map(|(a, b)| a * b).sum::<f64>()
                / (norm(e) * exact_norm).max(1e-300)
        })
        .sum::<f64>()
        / k_batches;
    let errors: Array1<f64> = mean
        .iter()
        .zip(&exact_flat)
        .map(|(m, x)| (m - x).abs())
        .collect();
    let bias: Array1<f64> = mean.iter().zip(&exact_flat).map(|(m, x)| m - x).collect();
    Measurement {
        mdp: mdp.to_string(),
        estimator: estimator.to_string(),
        samples: m,
        bias_norm: norm(bias.view()),
        // No coordinate checked: no z at all (NaN), not a z of 0.
        bias_z: if n_checked == 0 {
            f64::NAN
        } else {
            errors
                .iter()
                .zip(&se)
                .zip(&checked)
                .filter(|(_, c)| **c)
                .map(|((e, s), _)| e / s.max(1e-300))
                .fold(0.0, f64::max)
        },
        variance_trace: var.iter().sum(),
        snr: exact_norm * exact_norm / mse.max(1e-300),
        cosine_to_exact: cosine,
        passes: errors
            .iter()
            .zip(&se)
            .zip(&checked)
            .all(|((e, s), c)| !c || *e <= z * s + SLACK),
        unchecked: d - n_checked,
        se: se
            .into_shape_with_order(exact.raw_dim())
            .expect("one standard error per coordinate"),
    }
}

/// The fixed benchmark set: four MDPs of horizon 4 from fixed seeds.
pub fn benchmark_cases() -> Vec<(String, TabularMdp, Array2<f64>)> {
    (1..=4u64)
        .map(|seed| {
            let (mut mdp, theta) = random_case(seed * 7919, 4);
            mdp.horizon = 4;
            (format!("bench-{seed}"), mdp, theta)
        })
        .collect()
}
