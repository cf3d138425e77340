//! # CartPole-v1
//!
//! A pole is hinged to a cart that moves along a frictionless track; push the cart left or
//! right to keep the pole upright (Barto, Sutton & Anderson 1983). Constants and formulas are
//! Gymnasium 1.x's `CartPoleEnv` with the default Euler integrator.
//!
//! **Action space** `Discrete(2)`: 0 pushes the cart left, 1 pushes it right (force ±10 N).
//!
//! **Observation space** `Box(4,)`, float32:
//!
//! | index | observation           | min               | max              |
//! |-------|-----------------------|-------------------|------------------|
//! | 0     | cart position         | -4.8              | 4.8              |
//! | 1     | cart velocity         | -inf (f32 max)    | inf (f32 max)    |
//! | 2     | pole angle (rad)      | -0.418 (≈ -24°)   | 0.418 (≈ 24°)    |
//! | 3     | pole angular velocity | -inf (f32 max)    | inf (f32 max)    |
//!
//! **Reward** +1 for every step, the terminating step included.
//!
//! **Start state** every component uniform in [-0.05, 0.05).
//!
//! **Episode end** terminated when |pole angle| > 12° or |cart position| > 2.4;
//! truncated after 500 steps. Reward threshold 475.

use super::{Dynamics, Transition, check_discrete};
use crate::error::EnvError;
use crate::math;
use crate::rng::{Stream, uniform};
use crate::space::{EnvSpec, Space};

/// CartPole constants (Gymnasium's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct CartPole {
    pub gravity: f64,
    pub masscart: f64,
    pub masspole: f64,
    /// Half the pole's length.
    pub length: f64,
    pub force_mag: f64,
    /// Seconds between state updates.
    pub tau: f64,
    pub theta_threshold_radians: f64,
    pub x_threshold: f64,
}

impl Default for CartPole {
    fn default() -> Self {
        Self {
            gravity: 9.8,
            masscart: 1.0,
            masspole: 0.1,
            length: 0.5,
            force_mag: 10.0,
            tau: 0.02,
            theta_threshold_radians: 12.0 * 2.0 * std::f64::consts::PI / 360.0,
            x_threshold: 2.4,
        }
    }
}

impl CartPole {
    fn total_mass(&self) -> f64 {
        self.masspole + self.masscart
    }
    fn polemass_length(&self) -> f64 {
        self.masspole * self.length
    }

    /// Whether `state` is outside CartPole-v1's bounds (|x| > 2.4 or |θ| > 12°): the
    /// termination test of [`Dynamics::step`], also the reward test of
    /// [`super::FixedHorizonCartPole`].
    #[inline(always)]
    pub fn out_of_bounds(&self, state: &[f64; 4]) -> bool {
        (state[0] < -self.x_threshold)
            | (state[0] > self.x_threshold)
            | (state[2] < -self.theta_threshold_radians)
            | (state[2] > self.theta_threshold_radians)
    }
}

impl Dynamics for CartPole {
    /// `[x, x_dot, theta, theta_dot]`
    type State = [f64; 4];
    type Action = i64;
    const OBS_DIM: usize = 4;

    fn spec(&self) -> EnvSpec {
        let high = [
            (self.x_threshold * 2.0) as f32,
            f32::MAX,
            (self.theta_threshold_radians * 2.0) as f32,
            f32::MAX,
        ];
        EnvSpec {
            id: "CartPole-v1",
            observation_space: Space::Box {
                low: high.map(|h| -h).to_vec(),
                high: high.to_vec(),
            },
            action_space: Space::Discrete { n: 2 },
            max_episode_steps: 500,
            reward_threshold: Some(475.0),
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        std::array::from_fn(|_| uniform(rng, -0.05, 0.05))
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: i64) -> Transition<Self::State> {
        let [x, x_dot, theta, theta_dot] = state;
        let force = if action == 1 {
            self.force_mag
        } else {
            -self.force_mag
        };
        let (sintheta, costheta) = math::sin_cos(theta);
        let total_mass = self.total_mass();
        let polemass_length = self.polemass_length();

        let temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass;
        let thetaacc = (self.gravity * sintheta - costheta * temp)
            / (self.length * (4.0 / 3.0 - self.masspole * (costheta * costheta) / total_mass));
        let xacc = temp - polemass_length * thetaacc * costheta / total_mass;

        let next = [
            x + self.tau * x_dot,
            x_dot + self.tau * xacc,
            theta + self.tau * theta_dot,
            theta_dot + self.tau * thetaacc,
        ];
        let terminated = self.out_of_bounds(&next);
        Transition {
            state: next,
            reward: 1.0,
            terminated,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        for (o, s) in obs[..4].iter_mut().zip(state) {
            *o = *s as f32;
        }
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[i64]) -> Result<(), EnvError> {
        check_discrete(actions, 2)
    }
}
