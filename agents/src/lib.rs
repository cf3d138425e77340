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
//! - [`checkpoint`]: trained weights as safetensors with a JSON config beside them.
//! - [`safetensors_io`]: the float32 safetensors writer and reader of every checkpoint.
//! - [`collect`]: the rollout collector (bootstrapping truncated episodes) and evaluation.
//! - [`train`]: training as a library — a [`train::Trainer`] a caller steps, with a
//!   [`hook::Hook`] between collection and update; [`train::run`] in memory;
//!   [`train::train`] into a run folder.
//! - [`hook`]: the `Hook` trait, the seam between collection and update.
//! - [`prefs`]: learning from synthetic preferences: the reward-model ensemble and the loop
//!   that pays any learner its reward (`[prefs]` in the config).
//! - [`reference_kl`]: the per-step KL penalty toward a frozen reference policy
//!   (`ref_kl_coef`).
//! - [`metrics`]: metric rows by column name, in a declared column order.
//! - [`run_folder`]: the run folder every command that writes a run uses (manifest, config
//!   echo, metrics.csv, summary.json, atomic completion).
//! - [`scratch`]: the tests' scratch folders, removed when a test passes (no run uses it).
//! - [`rlhf`]: RLHF on text: SFT, the reward model, token-level RL, best-of-n and the stages
//!   of `gradgym rlhf`.

pub mod backend;
pub mod buffer;
pub mod checkpoint;
pub mod collect;
pub mod config;
pub mod device;
pub mod error;
pub mod hook;
pub mod host_memory;
pub mod learners;
pub mod limits;
pub mod metrics;
pub mod nn;
pub mod prefs;
pub mod reference_kl;
pub mod rlhf;
pub mod run_folder;
pub mod safetensors_io;
pub mod scratch;
pub mod train;

/// Facts about the build, recorded in manifests and printed by `gradgym info`.
pub mod build_info {
    /// This crate's build's revision: [`git_revision`] unless a binary has set its own.
    pub const GIT_REVISION: &str = env!("GRADGYM_GIT_REVISION");
    static BINARY_REVISION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

    /// The revision a binary was built from, set once at its start: the `gradgym` binary's
    /// build script sees edits to every crate, this crate's only its own.
    pub fn set_git_revision(revision: &'static str) {
        let _ = BINARY_REVISION.set(revision);
    }

    /// The git revision recorded in manifests (`-dirty` when the source differed from it).
    pub fn git_revision() -> &'static str {
        BINARY_REVISION.get().copied().unwrap_or(GIT_REVISION)
    }
    pub const LIBTORCH_VERSION: &str = env!("GRADGYM_LIBTORCH_VERSION");
    pub const GRADGYM_VERSION: &str = env!("CARGO_PKG_VERSION");
}
