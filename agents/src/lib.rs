//! # gradgym-agents
//!
//! - [`config`]: the training configuration (CleanRL's names and defaults).
//! - [`error`]: the non-finite-loss error that stops a run.
//! - [`network`]: MLP actor-critic with categorical and Gaussian heads, seeded initialisation.
//! - [`fast`]: the policy at rollout time in plain Rust, and action sampling.
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
pub mod fast;
pub mod learners;
pub mod network;
pub mod train;

/// Facts about the build, recorded in manifests and printed by `gradgym info`.
pub mod build_info {
    pub const GIT_REVISION: &str = env!("GRADGYM_GIT_REVISION");
    pub const LIBTORCH_VERSION: &str = env!("GRADGYM_LIBTORCH_VERSION");
    pub const GRADGYM_VERSION: &str = env!("CARGO_PKG_VERSION");
}
