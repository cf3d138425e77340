//! # gradgym-agents
//!
//! Networks, the rollout buffer and the learners behind one trait. They arrive with the agents
//! issue; this crate holds nothing yet.
