//! # MountainCar-v0
//!
//! An under-powered car in a valley must rock back and forth to reach the flag on the right
//! hill (Moore 1990). Constants and formulas are Gymnasium 1.x's `MountainCarEnv`.
//!
//! **Action space** `Discrete(3)`: 0 accelerates left, 1 does nothing, 2 accelerates right.
//!
//! **Observation space** `Box(2,)`, float32:
//!
//! | index | observation      | min   | max  |
//! |-------|------------------|-------|------|
//! | 0     | position (m)     | -1.2  | 0.6  |
//! | 1     | velocity (m/s)   | -0.07 | 0.07 |
//!
//! **Dynamics** `v += (a − 1)·0.001 − 0.0025·cos(3p)`, clipped to ±0.07; `p += v`, clipped to
//! [-1.2, 0.6]; hitting the left wall with negative velocity sets v = 0.
//!
//! **Reward** −1 every step.
//!
//! **Start state** position uniform in [-0.6, -0.4), velocity 0.
//!
//! **Episode end** terminated when position ≥ 0.5 and velocity ≥ 0; truncated after 200 steps.
//! Reward threshold −110.

use super::{Dynamics, Transition, check_discrete};
use crate::error::EnvError;
use crate::math;
use crate::rng::{Stream, uniform};
use crate::space::{EnvSpec, Space};

/// MountainCar constants (Gymnasium's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct MountainCar {
    pub min_position: f64,
    pub max_position: f64,
    pub max_speed: f64,
    pub goal_position: f64,
    pub goal_velocity: f64,
    pub force: f64,
    pub gravity: f64,
}

impl Default for MountainCar {
    fn default() -> Self {
        Self {
            min_position: -1.2,
            max_position: 0.6,
            max_speed: 0.07,
            goal_position: 0.5,
            goal_velocity: 0.0,
            force: 0.001,
            gravity: 0.0025,
        }
    }
}

impl MountainCar {
    /// Whether `state` is at the goal (position ≥ 0.5 and velocity ≥ 0): the termination test
    /// of [`Dynamics::step`], also the absorbing set of [`super::FixedHorizonMountainCar`].
    #[inline(always)]
    pub fn at_goal(&self, state: &[f64; 2]) -> bool {
        (state[0] >= self.goal_position) & (state[1] >= self.goal_velocity)
    }
}

impl Dynamics for MountainCar {
    /// `[position, velocity]`
    type State = [f64; 2];
    type Action = i64;
    const OBS_DIM: usize = 2;

    fn spec(&self) -> EnvSpec {
        EnvSpec {
            id: "MountainCar-v0",
            observation_space: Space::Box {
                low: vec![self.min_position as f32, -self.max_speed as f32],
                high: vec![self.max_position as f32, self.max_speed as f32],
            },
            action_space: Space::Discrete { n: 3 },
            max_episode_steps: 200,
            reward_threshold: Some(-110.0),
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        [uniform(rng, -0.6, -0.4), 0.0]
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: i64) -> Transition<Self::State> {
        let [position, velocity] = state;
        let velocity = velocity
            + ((action - 1) as f64 * self.force + math::cos(3.0 * position) * (-self.gravity));
        let velocity = velocity.clamp(-self.max_speed, self.max_speed);
        let position = (position + velocity).clamp(self.min_position, self.max_position);
        let velocity = if position == self.min_position && velocity < 0.0 {
            0.0
        } else {
            velocity
        };
        let state = [position, velocity];
        Transition {
            terminated: self.at_goal(&state),
            state,
            reward: -1.0,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        obs[0] = state[0] as f32;
        obs[1] = state[1] as f32;
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[i64]) -> Result<(), EnvError> {
        check_discrete(actions, 3)
    }
}
