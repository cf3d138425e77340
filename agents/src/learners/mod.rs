//! The learners: REINFORCE, A2C and PPO behind one trait, chosen by `algo` in the config.
//!
//! A learner turns a rollout into gradient steps on an [`Agent`] (network + optimiser) with the
//! estimators and losses of `gradgym-algorithms`. The training loop does not know which one
//! runs, except that REINFORCE asks for rollouts of complete episodes ([`Learner::episodic`]).

pub mod a2c;
pub mod ppo;
pub mod reinforce;

use gradgym_envs::rng::Stream;
use tch::{Device, Kind, Tensor, nn};

use crate::buffer::Rollout;
use crate::config::{Algo, TrainConfig};
use crate::network::ActorCritic;

/// The network and its optimiser.
pub struct Agent {
    pub net: ActorCritic,
    pub opt: nn::Optimizer,
}

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

/// A loss that is not a finite number: training stops with this.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("non-finite {what} ({value}) in gradient step {step} of this update")]
pub struct NonFiniteLoss {
    pub what: &'static str,
    pub value: f64,
    pub step: usize,
}

pub trait Learner {
    /// Whether rollouts must hold complete episodes (one per env) instead of a fixed window.
    fn episodic(&self) -> bool {
        false
    }
    /// Gradient steps from one rollout; `rng` orders minibatches.
    fn update(
        &mut self,
        agent: &mut Agent,
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

/// The valid samples of a rollout as tensors on `device`.
pub(crate) struct Batch {
    pub obs: Tensor,
    pub actions: Tensor,
    pub logprobs: Tensor,
    pub values: Tensor,
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

pub(crate) fn to_tensor(values: &[f32], device: Device) -> Tensor {
    Tensor::from_slice(values).to_device(device)
}

impl Batch {
    /// Every sample of the rollout.
    pub fn whole(rollout: &Rollout, device: Device) -> Self {
        let all: Vec<i64> = (0..rollout.shape.len() as i64).collect();
        Self::new(rollout, &all, device)
    }

    pub fn new(rollout: &Rollout, indices: &[i64], device: Device) -> Self {
        let b = indices.len() as i64;
        let obs = to_tensor(&gather(&rollout.obs, indices, rollout.obs_dim), device)
            .view([b, rollout.obs_dim as i64]);
        let actions = if rollout.discrete {
            Tensor::from_slice(&gather(&rollout.actions_discrete, indices, 1)).to_device(device)
        } else {
            to_tensor(
                &gather(&rollout.actions_continuous, indices, rollout.action_dim),
                device,
            )
            .view([b, rollout.action_dim as i64])
        };
        Self {
            obs,
            actions,
            logprobs: to_tensor(&gather(&rollout.logprobs, indices, 1), device),
            values: to_tensor(&gather(&rollout.values, indices, 1), device),
        }
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

/// `L = L^π − c_ent · mean H[π] + c_vf · L^V`, checked finite, then one optimiser step: zero,
/// backward, global grad-norm clip, Adam. Returns the mean entropy.
pub(crate) fn actor_critic_step(
    agent: &mut Agent,
    policy_loss: &Tensor,
    value_loss: &Tensor,
    entropy: &Tensor,
    c: Coefficients,
    step: usize,
) -> Result<Tensor, NonFiniteLoss> {
    let entropy = entropy.mean(Kind::Float);
    let loss = policy_loss - &entropy * c.ent_coef + value_loss * c.vf_coef;
    finite("loss", scalar(&loss), step)?;
    agent.opt.zero_grad();
    loss.backward();
    if c.max_grad_norm > 0.0 {
        agent.opt.clip_grad_norm(c.max_grad_norm);
    }
    agent.opt.step();
    Ok(entropy)
}

pub(crate) fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

pub(crate) fn finite(what: &'static str, value: f64, step: usize) -> Result<f64, NonFiniteLoss> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(NonFiniteLoss { what, value, step })
    }
}
