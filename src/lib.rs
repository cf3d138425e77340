//! # gradgym
//!
//! A reinforcement-learning gym and benchmark suite for policy-gradient and RLHF research.
//! This facade re-exports the member crates; see the README for the tour.

pub use gradgym_agents as agents;
pub use gradgym_algorithms as algorithms;
pub use gradgym_envs as envs;
