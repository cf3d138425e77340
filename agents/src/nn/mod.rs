//! The network maths, in one place: CleanRL's actor-critic (an MLP actor and an MLP critic)
//! with a categorical or diagonal-Gaussian head, for both backends and for rollouts.
//!
//! - [`mlp`]: the MLP over a flat parameter vector: its layout, the rollout's forward (a few
//!   rows), the batched forward and the backward pass of the native backend (`sgemm`).
//! - [`tanh`]: the hidden activation, on slices and on tensors.
//! - [`heads`]: the action distributions (the [`Head`] enum): log-probability, entropy, their
//!   closed-form gradients, sampling, and their tch-tensor forms for autograd.
//! - [`init`]: orthogonal initialisation and the order in which a run's `"init"` stream is
//!   drawn; both backends start from its vector.
//! - [`actor_critic`]: the layout of actor, critic and log σ in one vector ([`ActorCritic`]),
//!   and [`Policy`], the CPU copy of it that rollouts act with.
//! - [`torch`]: the same network as tch modules, for the libtorch backend.
//! - [`gpt`]: the causal transformer of RLHF on text (tch), its KV cache and checkpoints.
//! - [`gelu`]: GELU's tanh form for [`gpt`]'s MLP: on the CPU an operator of our own in C++
//!   (`agents/csrc/`) with libtorch's bits, forward and backward, in one pass.
//! - [`gpt_cpu`]: the same transformer's forward pass in plain Rust, which generation runs on
//!   the CPU (a step is ~40 tiny operators that libtorch spends longer dispatching than
//!   computing).
//! - [`gpt_native`]: the same transformer's training passes in plain Rust (forward with its
//!   activations kept, backward to every parameter's gradient): the native backend of
//!   token-level RL on the CPU (its Adam is [`crate::backend::native::Adam`]).
//! - [`sampling`]: temperature, top-k and top-p sampling from logits, and generation with the
//!   KV cache.
//!
//! Networks do not know algorithms: they map observations to a distribution and a value.

pub mod actor_critic;
pub mod gelu;
pub mod gpt;
pub mod gpt_cpu;
pub mod gpt_native;
pub mod heads;
pub mod init;
pub mod mlp;
pub mod sampling;
pub mod tanh;
pub mod torch;

pub use actor_critic::{ActorCritic, Policy, Scratch};
pub use heads::{Head, sample_categorical, sample_gaussian};
