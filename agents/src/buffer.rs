//! The rollout buffer: `[num_steps, num_envs]` (row t holds step t of every env), preallocated
//! once per run.
//!
//! Besides what CleanRL stores, each step keeps `next_values`, the value of the *true* next
//! state (0 after termination, V(final observation) after a time-limit truncation), so that
//! GAE bootstraps truncated episodes and never terminated ones; and `valid`, which marks the
//! samples that enter the update (REINFORCE keeps only each env's first complete episode).

use gradgym_algorithms::advantages::{Shape, gae};

#[derive(Debug)]
pub struct Rollout {
    pub shape: Shape,
    pub obs_dim: usize,
    /// 1 for discrete actions.
    pub action_dim: usize,
    pub discrete: bool,
    /// `[T, N, obs_dim]`
    pub obs: Vec<f32>,
    /// `[T, N]` (discrete heads)
    pub actions_discrete: Vec<i64>,
    /// `[T, N, action_dim]` (Gaussian heads; the sampled, unclipped action)
    pub actions_continuous: Vec<f32>,
    /// `[T, N]` log π_old(a|s) at sampling time
    pub logprobs: Vec<f32>,
    pub rewards: Vec<f32>,
    pub dones: Vec<bool>,
    pub values: Vec<f32>,
    pub next_values: Vec<f32>,
    pub valid: Vec<bool>,
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
        let n = shape.len();
        Self {
            shape,
            obs_dim,
            action_dim,
            discrete,
            obs: vec![0.0; n * obs_dim],
            actions_discrete: if discrete { vec![0; n] } else { Vec::new() },
            actions_continuous: if discrete {
                Vec::new()
            } else {
                vec![0.0; n * action_dim]
            },
            logprobs: vec![0.0; n],
            rewards: vec![0.0; n],
            dones: vec![false; n],
            values: vec![0.0; n],
            next_values: vec![0.0; n],
            valid: vec![true; n],
        }
    }

    /// GAE(λ) advantages and value targets of this rollout (see `gradgym_algorithms::advantages`).
    pub fn gae(&self, gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        gae(
            self.shape,
            &self.rewards,
            &self.values,
            &self.next_values,
            &self.dones,
            gamma,
            lambda,
        )
    }

    /// Indices `t * N + i` of the samples that enter the update.
    pub fn valid_indices(&self) -> Vec<i64> {
        self.valid
            .iter()
            .enumerate()
            .filter(|(_, v)| **v)
            .map(|(k, _)| k as i64)
            .collect()
    }
}
