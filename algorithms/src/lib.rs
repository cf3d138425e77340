//! # gradgym-algorithms
//!
//! The estimators and losses of gradgym. Each file opens with the paper it implements and the
//! equation it computes.
//!
//! - [`advantages`]: discounted returns, reward-to-go, n-step returns and GAE(λ) over a
//!   rollout `[num_steps, num_envs]`. They are targets, not differentiated, so they are plain
//!   Rust over slices (a per-step tensor loop would cost milliseconds per update); termination
//!   and time-limit truncation are told apart.
//! - [`losses`]: the policy-gradient surrogates (REINFORCE / actor-critic, PPO-clip, PPO-KL),
//!   the value loss, entropy, and advantage normalisation, as functions over tensors, so that
//!   autodiff gives the estimator of the gradient.
//! - [`loss_grads`]: the same losses over slices with their gradients written out (for the
//!   native backend), checked against autograd through [`losses`].
//! - [`kl`]: fixed and adaptive KL-penalty coefficients (PPO-KL's, and the penalty toward a
//!   frozen reference on text).
//! - [`reward_losses`]: the K-way and pairwise losses of a reward model learned from
//!   comparisons (ties included), over tensors, and the held-out accuracy's credit per
//!   comparison (a tie in the scores shared).
//! - [`best_of_n`]: best-of-n's exact distribution and KL from the reference, the
//!   `log n − (n−1)/n` bound, and the estimates runs use (the plug-in KL, the unbiased U-statistic
//!   of the expected score).
//! - [`real`]: the float type (`f32` or `f64`) of the slice-form code.
//! - [`exact`]: exact objectives and gradients on small tabular MDPs, computed two ways — the
//!   ground truth of the estimator tests.
//! - [`group`]: the group-relative advantages of RLOO and GRPO on text (k responses to one
//!   prompt, no value function) and how their losses weigh each token.
//! - [`token_mdp`]: an enumerable token MDP (tabular softmax over prefixes, a frozen
//!   reference, a score): `J_β` and its gradient exactly, and the exact expectation of the
//!   group estimators' first step over every group of k responses — the ground truth of the
//!   tests that RLOO is unbiased and GRPO is not.
//! - [`study`]: every estimator through the production losses on those MDPs, measured the same
//!   way (bias, variance, SNR); `gradgym estimators` and the unbiasedness tests use it. Each
//!   estimator also has an f64 path (closed-form gradients from [`loss_grads`]), whose exact
//!   expectation over every trajectory the tests compare with ∇J to 1e-9.
//!
//! Arrays with a shape (MDP tables, θ, gradients, batches of trajectories) are `ndarray`
//! arrays; the rollout functions of [`advantages`] and the losses of [`loss_grads`] take
//! row-major slices, as the learners hold them.

pub mod advantages;
pub mod best_of_n;
pub mod exact;
pub mod group;
pub mod kl;
pub mod loss_grads;
pub mod losses;
pub mod real;
pub mod reward_losses;
pub mod study;
pub mod token_mdp;

pub use real::Real;
