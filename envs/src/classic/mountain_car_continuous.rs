//! # MountainCarContinuous-v0
//!
//! MountainCar with a continuous force and an energy penalty. Constants and formulas are
//! Gymnasium 1.x's `Continuous_MountainCarEnv`, including its float32 state.
//!
//! **Action space** `Box(-1, 1, (1,), float32)`: the force; actions outside are clipped for the
//! dynamics (not for the energy penalty, as in Gymnasium). A non-finite action is an error.
//!
//! **Observation space** `Box(2,)`, float32:
//!
//! | index | observation      | min   | max  |
//! |-------|------------------|-------|------|
//! | 0     | position (m)     | -1.2  | 0.6  |
//! | 1     | velocity (m/s)   | -0.07 | 0.07 |
//!
//! **Dynamics** `v += clip(a)·0.0015 − 0.0025·cos(3p)`, clipped to ±0.07; `p += v`, clipped to
//! [-1.2, 0.6]; hitting the left wall with negative velocity sets v = 0. The state is stored
//! rounded to float32 after every step, and the arithmetic follows Gymnasium's float32/float64
//! mix under NumPy 2's promotion rules (see `step`).
//!
//! **Reward** `−0.1·a²` every step, with `a` the action as given, plus 100 on reaching the goal.
//!
//! **Start state** position uniform in [-0.6, -0.4), velocity 0.
//!
//! **Episode end** terminated when position ≥ 0.45 and velocity ≥ 0; truncated after 999 steps.
//! Reward threshold 90.

use super::{Dynamics, Transition, check_finite};
use crate::error::EnvError;
use crate::math;
use crate::rng::{Stream, uniform};
use crate::space::{EnvSpec, Space};

/// MountainCarContinuous constants (Gymnasium's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct MountainCarContinuous {
    pub min_action: f32,
    pub max_action: f32,
    pub min_position: f64,
    pub max_position: f64,
    pub max_speed: f64,
    pub goal_position: f64,
    pub goal_velocity: f64,
    pub power: f64,
}

impl Default for MountainCarContinuous {
    fn default() -> Self {
        Self {
            min_action: -1.0,
            max_action: 1.0,
            min_position: -1.2,
            max_position: 0.6,
            max_speed: 0.07,
            goal_position: 0.45,
            goal_velocity: 0.0,
            power: 0.0015,
        }
    }
}

impl Dynamics for MountainCarContinuous {
    /// `[position, velocity]`, float32 values held in f64.
    type State = [f64; 2];
    type Action = f32;
    const OBS_DIM: usize = 2;

    fn spec(&self) -> EnvSpec {
        EnvSpec {
            id: "MountainCarContinuous-v0",
            observation_space: Space::Box {
                low: vec![self.min_position as f32, -self.max_speed as f32],
                high: vec![self.max_position as f32, self.max_speed as f32],
            },
            action_space: Space::Box {
                low: vec![self.min_action],
                high: vec![self.max_action],
            },
            max_episode_steps: 999,
            reward_threshold: Some(90.0),
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        [uniform(rng, -0.6, -0.4), 0.0]
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: f32) -> Transition<Self::State> {
        let [position, velocity] = state;
        // Gymnasium stores this state as float32 after every step, and NumPy 2 then keeps the
        // arithmetic in float32 (Python floats are "weak"). Only the state after `reset` (or
        // one set by hand) is float64, and then the same formulas run in float64. Likewise
        // Python's `min(max(a, -1.0), 1.0)` returns the float32 action when it is inside the
        // box but the Python float bound when it clips, and the force term follows that type.
        let is_f32 = (position as f32 as f64 == position) & (velocity as f32 as f64 == velocity);
        let clipped = (action < self.min_action) | (action > self.max_action);
        let (p32, v32) = (position as f32, velocity as f32);
        let cos = if is_f32 {
            math::cos((3.0f32 * p32) as f64)
        } else {
            math::cos(3.0 * position)
        };
        let bound = if action < self.min_action {
            self.min_action
        } else {
            self.max_action
        };
        let accel_f64 = bound as f64 * self.power - 0.0025 * cos;
        let accel_f32 = action * self.power as f32 - (0.0025 * cos) as f32;
        let (accel_as_f32, accel_as_f64) = if clipped {
            (accel_f64 as f32, accel_f64)
        } else {
            (accel_f32, accel_f32 as f64)
        };
        let velocity = if is_f32 {
            (v32 + accel_as_f32) as f64
        } else {
            velocity + accel_as_f64
        };
        let velocity = velocity.clamp(-self.max_speed, self.max_speed);
        // Clipping replaces the velocity by the Python float 0.07, which a float32 position
        // then adds as float32.
        let p_f32 = (p32 + velocity as f32) as f64;
        let p_f64 = position + velocity;
        let position = if is_f32 { p_f32 } else { p_f64 };
        let position = position.clamp(self.min_position, self.max_position);
        let velocity = if position == self.min_position && velocity < 0.0 {
            0.0
        } else {
            velocity
        };
        let terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity);
        let action = action as f64;
        let reward = if terminated { 100.0 } else { 0.0 } - action * action * 0.1;
        let state = [position as f32 as f64, velocity as f32 as f64];
        Transition {
            state,
            reward,
            terminated,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        obs[0] = state[0] as f32;
        obs[1] = state[1] as f32;
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[f32]) -> Result<(), EnvError> {
        check_finite(actions)
    }
}
