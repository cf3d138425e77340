//! # gradgym-envs
//!
//! Vectorised environments for gradgym. No libtorch: this crate builds in seconds and can be
//! used on its own.
//!
//! - [`classic`]: the five Gymnasium classic-control tasks, one file each, as pure dynamics,
//!   and the fixed-horizon variants `FixedHorizonCartPole-v0` and `FixedHorizonMountainCar-v0`.
//! - [`vec_env`]: the batched [`VecEnv`] API (step semantics, autoreset, randomness).
//! - [`registry`]: [`make`] by Gymnasium id.
//! - [`conformance`]: checks transitions against a file recorded from Gymnasium.
//! - [`wrappers`]: [`wrappers::HiddenRewardEnv`], a `VecEnv` whose learner-facing rewards are
//!   supplied from outside (a reward model's) while the true ones go to the logs.
//! - [`preference`]: learning from preferences: segments cut from rollouts
//!   ([`preference::segments`]) and the synthetic human that compares them
//!   ([`preference::oracle`]).
//! - [`text`]: the synthetic review language of the RLHF work: vocabulary and tokenizer, a
//!   seeded grammar of prompts and responses, and the hidden gold judge.
//! - [`rng`]: the seeded, named random streams every part of gradgym draws from.
//! - [`math`]: branch-free sin/cos so the physics vectorises.
//!
//! ```
//! use gradgym_envs::{make, Actions};
//! let mut env = make("CartPole-v1", 16, 42).unwrap();
//! let actions = vec![1i64; 16];
//! env.step(Actions::Discrete(&actions)).unwrap();
//! assert_eq!(env.observations().dim(), (16, 4));
//! ```

pub mod classic;
pub mod conformance;
pub mod error;
pub mod math;
pub mod parallel;
pub mod preference;
pub mod registry;
pub mod rng;
pub mod space;
pub mod text;
pub mod vec_env;
pub mod wrappers;

pub use error::EnvError;
pub use registry::{ENV_IDS, make, make_with, spec};
pub use space::{EnvSpec, Space};
pub use vec_env::{Actions, Autoreset, ClassicVecEnv, EnvOptions, Kernel, VecEnv};
