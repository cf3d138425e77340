//! The rollout buffer: arrays of shape `[num_steps, num_envs, ...]` (row t holds step t of every
//! env), preallocated once per run.
//!
//! Besides what CleanRL stores, each step keeps `next_values`, the value of the *true* next
//! state (0 after termination, V(final observation) after a time-limit truncation), so that
//! GAE bootstraps truncated episodes and never terminated ones; and `valid`, which marks the
//! samples that enter the update (REINFORCE keeps only each env's first complete episode).
//!
//! The arrays are standard-layout (row-major), so sample k = t·N + i of the flat view
//! ([`flat`]) is step t of env i: the estimators in `gradgym_algorithms::advantages` take those
//! flat slices with the [`Shape`].

use gradgym_algorithms::advantages::{Shape, gae};
use ndarray::{Array2, Array3, ArrayBase, Data, Dimension};

/// The samples of `a` in row-major order: element `t·N + i` is step t of env i.
pub fn flat<S: Data, D: Dimension>(a: &ArrayBase<S, D>) -> &[S::Elem] {
    a.as_slice()
        .expect("rollout arrays are allocated in standard layout")
}

#[derive(Debug)]
pub struct Rollout {
    pub shape: Shape,
    pub obs_dim: usize,
    /// 1 for discrete actions.
    pub action_dim: usize,
    pub discrete: bool,
    /// `[T, N, obs_dim]`
    pub obs: Array3<f32>,
    /// `[T, N]` (discrete heads; `[0, 0]` otherwise)
    pub actions_discrete: Array2<i64>,
    /// `[T, N, action_dim]` (Gaussian heads, the sampled, unclipped action; `[0, 0, 0]`
    /// otherwise)
    pub actions_continuous: Array3<f32>,
    /// `[T, N]` log π_old(a|s) at sampling time
    pub logprobs: Array2<f32>,
    /// `[T, N]` the reward the learner optimises (the env's, unless a hook rewrote it)
    pub rewards: Array2<f32>,
    /// `[T, N]` the step ended an episode (terminated or truncated)
    pub dones: Array2<bool>,
    /// `[T, N]` V(s_t) at sampling time
    pub values: Array2<f32>,
    /// `[T, N]` the value of the true next state (see the module docs)
    pub next_values: Array2<f32>,
    /// `[T, N]` the sample enters the update
    pub valid: Array2<bool>,
}

impl Rollout {
    pub fn new(
        num_steps: usize,
        num_envs: usize,
        obs_dim: usize,
        action_dim: usize,
        discrete: bool,
    ) -> Self {
        let shape = Shape {
            num_steps,
            num_envs,
        };
        let tn = (num_steps, num_envs);
        let (discrete_shape, continuous_shape) = if discrete {
            (tn, (0, 0, 0))
        } else {
            ((0, 0), (num_steps, num_envs, action_dim))
        };
        Self {
            shape,
            obs_dim,
            action_dim,
            discrete,
            obs: Array3::zeros((num_steps, num_envs, obs_dim)),
            actions_discrete: Array2::zeros(discrete_shape),
            actions_continuous: Array3::zeros(continuous_shape),
            logprobs: Array2::zeros(tn),
            rewards: Array2::zeros(tn),
            dones: Array2::from_elem(tn, false),
            values: Array2::zeros(tn),
            next_values: Array2::zeros(tn),
            valid: Array2::from_elem(tn, true),
        }
    }

    /// GAE(λ) advantages and value targets of this rollout (see `gradgym_algorithms::advantages`),
    /// flat in sample order.
    pub fn gae(&self, gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        gae(
            self.shape,
            flat(&self.rewards),
            flat(&self.values),
            flat(&self.next_values),
            flat(&self.dones),
            gamma,
            lambda,
        )
    }

    /// Indices `t * N + i` of the samples that enter the update.
    pub fn valid_indices(&self) -> Vec<i64> {
        flat(&self.valid)
            .iter()
            .enumerate()
            .filter(|(_, v)| **v)
            .map(|(k, _)| k as i64)
            .collect()
    }
}
