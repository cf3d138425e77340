//! The learners: REINFORCE, A2C and PPO behind one trait, chosen by `algo` in the config.
//!
//! A learner turns a rollout into gradient steps: it computes the targets (returns, GAE) with
//! `gradgym-algorithms`, picks the samples of each step and says which loss to minimise; a
//! [`Backend`] takes the steps. The training loop does not know which one
//! runs, except that REINFORCE asks for rollouts of complete episodes ([`Learner::episodic`]).

pub mod a2c;
pub mod ppo;
pub mod reinforce;

use gradgym_envs::rng::Stream;

use crate::backend::{Backend, Minibatch, Objective, PolicyLoss, ValueLoss};
use crate::buffer::{Rollout, flat};
use crate::config::{Algo, TrainConfig};
use crate::error::NonFiniteLoss;

/// Diagnostics of one update, CleanRL's names. Zero where an algorithm has no such quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub old_approx_kl: f64,
    pub clipfrac: f64,
    pub explained_variance: f64,
    /// The KL coefficient β after the update (PPO-KL), otherwise 0.
    pub kl_beta: f64,
    /// Gradient steps taken.
    pub gradient_steps: usize,
}

pub trait Learner {
    /// Whether rollouts must hold complete episodes (one per env) instead of a fixed window.
    fn episodic(&self) -> bool {
        false
    }
    /// Gradient steps from one rollout; `rng` orders minibatches.
    fn update(
        &mut self,
        model: &mut dyn Backend,
        rollout: &Rollout,
        rng: &mut Stream,
    ) -> Result<UpdateStats, NonFiniteLoss>;
}

pub fn make_learner(config: &TrainConfig) -> Box<dyn Learner> {
    match config.algo {
        Algo::Reinforce => Box::new(reinforce::Reinforce::new(config)),
        Algo::A2c => Box::new(a2c::A2c::new(config)),
        Algo::Ppo => Box::new(ppo::Ppo::new(config)),
    }
}

pub(crate) fn gather<T: Copy>(values: &[T], indices: &[i64], width: usize) -> Vec<T> {
    indices
        .iter()
        .flat_map(|&k| {
            values[k as usize * width..(k as usize + 1) * width]
                .iter()
                .copied()
        })
        .collect()
}

/// The samples `indices` of a rollout, with `weights` and value targets `returns` (both
/// indexed like the rollout's samples).
pub(crate) fn minibatch(
    r: &Rollout,
    indices: &[i64],
    weights: &[f32],
    returns: &[f32],
) -> Minibatch {
    Minibatch {
        len: indices.len(),
        obs: gather(flat(&r.obs), indices, r.obs_dim),
        actions_discrete: if r.discrete {
            gather(flat(&r.actions_discrete), indices, 1)
        } else {
            Vec::new()
        },
        actions_continuous: if r.discrete {
            Vec::new()
        } else {
            gather(flat(&r.actions_continuous), indices, r.action_dim)
        },
        old_logprobs: gather(flat(&r.logprobs), indices, 1),
        old_values: gather(flat(&r.values), indices, 1),
        weights: gather(weights, indices, 1),
        returns: gather(returns, indices, 1),
    }
}

/// `1 − Var(returns − values) / Var(returns)` (CleanRL's explained variance; NaN when the
/// returns have no variance).
pub(crate) fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let n = values.len() as f64;
    let var = |x: &[f64]| {
        let m = x.iter().sum::<f64>() / n;
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n
    };
    let r: Vec<f64> = returns.iter().map(|&x| x as f64).collect();
    let d: Vec<f64> = returns
        .iter()
        .zip(values)
        .map(|(&r, &v)| (r - v) as f64)
        .collect();
    let var_r = var(&r);
    if var_r == 0.0 {
        f64::NAN
    } else {
        1.0 - var(&d) / var_r
    }
}

/// The coefficients that combine an actor-critic objective.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coefficients {
    pub ent_coef: f64,
    pub vf_coef: f64,
    pub max_grad_norm: f64,
}

impl Coefficients {
    /// The objective `L^π − c_ent · H + c_vf · L^V` with these coefficients.
    pub fn objective(
        &self,
        policy: PolicyLoss,
        value: ValueLoss,
        baseline: bool,
        normalize: bool,
    ) -> Objective {
        Objective {
            policy,
            value,
            baseline,
            normalize,
            ent_coef: self.ent_coef,
            vf_coef: self.vf_coef,
            max_grad_norm: self.max_grad_norm,
        }
    }
}

/// A backend for the learners' tests: it takes no step and records what each was asked to do.
#[cfg(test)]
pub(crate) mod recorder {
    use crate::backend::{Backend, Minibatch, Objective, StepReport};
    use crate::error::NonFiniteLoss;
    use crate::nn::Policy;

    #[derive(Default)]
    pub struct Recorder {
        pub steps: Vec<(Minibatch, Objective)>,
    }

    impl Backend for Recorder {
        fn step(
            &mut self,
            batch: &Minibatch,
            objective: &Objective,
            _step: usize,
        ) -> Result<StepReport, NonFiniteLoss> {
            self.steps.push((batch.clone(), *objective));
            Ok(StepReport::default())
        }
        fn set_learning_rate(&mut self, _lr: f64) {}
        fn snapshot(&self) -> Policy {
            unreachable!("an update takes no snapshot")
        }
        fn name(&self) -> &'static str {
            "recorder"
        }
    }
}
