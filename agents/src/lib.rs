//! # gradgym-agents
//!
//! - [`config`]: the training configuration (CleanRL's names and defaults).
//! - [`error`]: the non-finite-loss error that stops a run.
//! - [`nn`]: the network maths: the MLP actor-critic (flat parameters, forward and backward),
//!   categorical and Gaussian heads, seeded initialisation, the rollout policy, and the tch
//!   modules of the libtorch backend.
//! - [`buffer`]: the rollout buffer `[num_steps, num_envs]`.
//! - [`learners`]: REINFORCE, A2C, PPO behind one trait.
//! - [`backend`]: who takes the gradient steps: native Rust on the CPU, or libtorch (autograd,
//!   CPU or CUDA).
//! - [`train`]: `train(config, out_dir)` — a run as a function of config and seed.

pub mod backend;
pub mod buffer;
pub mod config;
pub mod device;
pub mod error;
pub mod learners;
pub mod nn;
pub mod train;

/// Facts about the build, recorded in manifests and printed by `gradgym info`.
pub mod build_info {
    pub const GIT_REVISION: &str = env!("GRADGYM_GIT_REVISION");
    pub const LIBTORCH_VERSION: &str = env!("GRADGYM_LIBTORCH_VERSION");
    pub const GRADGYM_VERSION: &str = env!("CARGO_PKG_VERSION");
}
