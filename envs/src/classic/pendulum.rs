//! # Pendulum-v1
//!
//! Swing a frictionless pendulum up and hold it upright with a limited torque. Constants and
//! formulas are Gymnasium 1.x's `PendulumEnv` (g = 10).
//!
//! **Action space** `Box(-2, 2, (1,), float32)`: the torque, clipped to the box. A non-finite
//! action is an error.
//!
//! **Observation space** `Box(3,)`, float32:
//!
//! | index | observation       | min  | max |
//! |-------|-------------------|------|-----|
//! | 0     | cos(θ)            | -1   | 1   |
//! | 1     | sin(θ)            | -1   | 1   |
//! | 2     | angular velocity  | -8   | 8   |
//!
//! **Dynamics** `θ̇ += (3g/(2l)·sin θ + 3/(m l²)·u)·dt`, clipped to ±8; `θ += θ̇·dt`. θ is
//! stored unwrapped, as Gymnasium does.
//!
//! **Reward** `−(norm(θ)² + 0.1·θ̇² + 0.001·u²)` with `norm(θ) = ((θ + π) mod 2π) − π`, from the
//! state before the step. The torque terms `3·u` and `0.001·u²` are float32 products, as in
//! Gymnasium under NumPy 2's promotion rules.
//!
//! **Start state** θ uniform in [-π, π), θ̇ uniform in [-1, 1).
//!
//! **Episode end** never terminates; truncated after 200 steps. No reward threshold.

use std::f64::consts::{PI, TAU};

use super::{Dynamics, Transition, check_finite};
use crate::error::EnvError;
use crate::math;
use crate::rng::{Stream, uniform};
use crate::space::{EnvSpec, Space};

/// Pendulum constants (Gymnasium's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Pendulum {
    pub max_speed: f64,
    pub max_torque: f32,
    pub dt: f64,
    pub g: f64,
    pub m: f64,
    pub l: f64,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self {
            max_speed: 8.0,
            max_torque: 2.0,
            dt: 0.05,
            g: 10.0,
            m: 1.0,
            l: 1.0,
        }
    }
}

/// `((θ + π) mod 2π) − π`, with Python's sign convention for `mod`.
#[inline(always)]
pub fn angle_normalize(theta: f64) -> f64 {
    math::py_mod(theta + PI, TAU) - PI
}

impl Dynamics for Pendulum {
    /// `[theta, theta_dot]`
    type State = [f64; 2];
    type Action = f32;
    const OBS_DIM: usize = 3;

    fn spec(&self) -> EnvSpec {
        let high = [1.0, 1.0, self.max_speed as f32];
        EnvSpec {
            id: "Pendulum-v1",
            observation_space: Space::Box {
                low: high.map(|h| -h).to_vec(),
                high: high.to_vec(),
            },
            action_space: Space::Box {
                low: vec![-self.max_torque],
                high: vec![self.max_torque],
            },
            max_episode_steps: 200,
            reward_threshold: None,
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        let theta = uniform(rng, -PI, PI);
        let theta_dot = uniform(rng, -1.0, 1.0);
        [theta, theta_dot]
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: f32) -> Transition<Self::State> {
        let [th, thdot] = state;
        let u = action.max(-self.max_torque).min(self.max_torque);
        let norm = angle_normalize(th);
        let costs = norm * norm + 0.1 * (thdot * thdot) + (0.001f32 * (u * u)) as f64;

        let gravity_term = 3.0 * self.g / (2.0 * self.l) * math::sin(th);
        let torque_term = ((3.0 / (self.m * self.l * self.l)) as f32 * u) as f64;
        let newthdot = thdot + (gravity_term + torque_term) * self.dt;
        let newthdot = newthdot.clamp(-self.max_speed, self.max_speed);
        let newth = th + newthdot * self.dt;
        Transition {
            state: [newth, newthdot],
            reward: -costs,
            terminated: false,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        let (s, c) = math::sin_cos(state[0]);
        obs[0] = c as f32;
        obs[1] = s as f32;
        obs[2] = state[1] as f32;
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[f32]) -> Result<(), EnvError> {
        check_finite(actions)
    }
}
