//! Where gradient steps are computed: one trait, two backends, chosen by `backend` in the config.
//!
//! A learner decides *what* to minimise (an [`Objective`]) and on which samples (a
//! [`Minibatch`]); a backend owns the actor-critic's parameters and optimiser and takes the step:
//! forward, loss, gradient, global grad-norm clip, Adam.
//!
//! - [`libtorch`]: the networks of [`crate::nn::torch`] on a tch device (CPU or CUDA); losses
//!   from `gradgym_algorithms::losses`, gradients by autograd. The reference.
//! - [`native`]: the same networks, losses and optimiser in plain Rust on the CPU, with the
//!   gradients written out (`gradgym_algorithms::loss_grads` for the losses,
//!   [`crate::nn::heads`] and [`crate::nn::mlp`] for the networks). At CartPole's sizes a libtorch step is ~1 ms of dispatch around ~0.1 ms of
//!   arithmetic; this one is the arithmetic. The tests in `native.rs` check its gradients and
//!   its parameters after Adam steps against the libtorch backend on the same inputs.
//!
//! `backend = "auto"` (the default) takes `native` on the CPU and `libtorch` on CUDA.

pub mod libtorch;
pub mod native;

use gradgym_algorithms::losses::RatioStats;

use crate::config::{BackendKind, TrainConfig};
use crate::error::NonFiniteLoss;
use crate::nn::{Head, Policy};

/// The policy term of a loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicyLoss {
    /// `−mean(Ψ · log π)` (REINFORCE, A2C).
    Gradient,
    /// PPO's `L^CLIP` with clip range ε.
    Clip { clip_coef: f64 },
    /// PPO's `L^KLPEN` with coefficient β (ε only for the `clipfrac` diagnostic).
    KlPenalty { beta: f64, clip_coef: f64 },
}

/// The value term of a loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueLoss {
    /// No value loss (REINFORCE without a baseline): the critic is not trained.
    None,
    /// `½ mean((V − R)²)`.
    Squared,
    /// The same, clipped around the rollout's values by ε.
    Clipped { clip_coef: f64 },
}

/// `L = L^π − c_ent · mean H[π] + c_vf · L^V`, and how the policy term's weights are formed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    pub policy: PolicyLoss,
    pub value: ValueLoss,
    /// Subtract this step's V(s) (as a constant) from the weights: REINFORCE's baseline.
    pub baseline: bool,
    /// Normalise the weights over the minibatch (after the baseline).
    pub normalize: bool,
    pub ent_coef: f64,
    pub vf_coef: f64,
    /// Global grad-norm clip; 0 turns it off.
    pub max_grad_norm: f64,
}

/// The samples of one gradient step, gathered from a rollout. `weights` are the advantages
/// (PPO, A2C) or returns (REINFORCE) that weight log π; `returns` are the value targets.
#[derive(Clone, Debug, Default)]
pub struct Minibatch {
    pub len: usize,
    pub obs: Vec<f32>,
    /// `[len]` for a categorical head, else empty.
    pub actions_discrete: Vec<i64>,
    /// `[len, dim]` for a Gaussian head, else empty.
    pub actions_continuous: Vec<f32>,
    pub old_logprobs: Vec<f32>,
    pub old_values: Vec<f32>,
    pub weights: Vec<f32>,
    pub returns: Vec<f32>,
}

/// What one gradient step measured (before the step).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepReport {
    pub policy_loss: f64,
    pub value_loss: f64,
    /// Mean entropy of π over the minibatch.
    pub entropy: f64,
    /// Ratio diagnostics of a PPO loss; zeros otherwise.
    pub ratio: RatioStats,
}

/// An actor-critic with its optimiser.
pub trait Backend {
    /// One gradient step on `objective` over `batch`. `step` counts the steps of this update,
    /// for the error message of a non-finite loss (then the parameters are left unchanged).
    fn step(
        &mut self,
        batch: &Minibatch,
        objective: &Objective,
        step: usize,
    ) -> Result<StepReport, NonFiniteLoss>;
    fn set_learning_rate(&mut self, lr: f64);
    /// A CPU copy of the current weights for rollouts and evaluation.
    fn snapshot(&self) -> Policy;
    /// `"native"` or `"libtorch"`, for manifests.
    fn name(&self) -> &'static str;
}

/// Builds the backend of `config` for a network of `obs_dim` inputs and `head`, with weights
/// drawn from `rng` (the run's `"init"` stream; both backends draw the same weights).
pub fn make_backend(
    config: &TrainConfig,
    obs_dim: usize,
    head: Head,
    device: tch::Device,
    rng: &mut gradgym_envs::rng::Stream,
) -> anyhow::Result<Box<dyn Backend>> {
    let native = match config.backend.resolve(device) {
        BackendKind::Native => {
            anyhow::ensure!(
                device == tch::Device::Cpu,
                "backend = \"native\" runs on the CPU only (device = \"{}\"); use backend = \"libtorch\" or \"auto\"",
                config.device
            );
            true
        }
        _ => false,
    };
    Ok(if native {
        Box::new(native::Native::new(config, obs_dim, head, rng))
    } else {
        Box::new(libtorch::Libtorch::new(config, obs_dim, head, device, rng)?)
    })
}
