//! # gradgym-algorithms
//!
//! The gradient estimators and losses of gradgym, as functions over tensors (returns, GAE,
//! REINFORCE, actor-critic, PPO-clip and PPO-KL, preference losses). They arrive with the
//! agents issue; this crate holds nothing yet.
