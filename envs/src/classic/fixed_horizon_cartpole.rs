//! # FixedHorizonCartPole-v0
//!
//! CartPole-v1's cart and pole, with every episode lasting exactly 500 steps: leaving the
//! bounds costs reward instead of ending the episode, so an episode's length says nothing about
//! the reward. A learner that never sees the reward (learning from preferences) cannot then
//! learn it from when episodes end, the "termination leaks the reward" lesson of the seals
//! project (`seals/CartPole-v0`, `FixedHorizonCartPole` in
//! `src/seals/classic_control.py` of github.com/HumanCompatibleAI/seals, which this follows).
//!
//! The physics *is* [`CartPole`]'s: [`Dynamics::step`] calls `CartPole::step` and then only
//! wraps the pole angle, so the next state equals CartPole-v1's bit for bit whenever the
//! angle stays within [-π, π] (a test checks it on the Gymnasium fixture rows).
//!
//! **Action space** `Discrete(2)`: 0 pushes the cart left, 1 pushes it right (force ±10 N), as
//! CartPole-v1.
//!
//! **Observation space** `Box(4,)`, float32 (seals' bounds: the cart may drift anywhere, the
//! angle is wrapped):
//!
//! | index | observation           | min               | max              |
//! |-------|-----------------------|-------------------|------------------|
//! | 0     | cart position         | -inf (f32 max)    | inf (f32 max)    |
//! | 1     | cart velocity         | -inf (f32 max)    | inf (f32 max)    |
//! | 2     | pole angle (rad)      | -π                | π                |
//! | 3     | pole angular velocity | -inf (f32 max)    | inf (f32 max)    |
//!
//! After each step the pole angle is wrapped into [-π, π) as seals does (`(θ + π) mod 2π − π`),
//! but only when it lies outside [-π, π]: inside, the state is left exactly as CartPole's step
//! made it (seals applies the formula always, which can move an angle by an ulp).
//!
//! **Reward** 1 when the state after the step is within CartPole-v1's termination bounds
//! (|x| ≤ 2.4 and |θ| ≤ 12°, with the wrapped angle; [`CartPole::out_of_bounds`]), 0 outside.
//! A pole that swings round and comes back upright earns reward again. (seals tests the
//! strict |x| < 2.4 and |θ| < 12°; the two differ only on the boundary itself.) The return is
//! the number of steps spent within the bounds, at most 500.
//!
//! **Start state** every component uniform in [-0.05, 0.05), as CartPole-v1.
//!
//! **Episode end** never terminates; truncated after exactly 500 steps. No reward threshold:
//! Gymnasium's 475 belongs to CartPole-v1, whose episodes end at the first exit from the bounds,
//! and seals registers none.
//!
//! **Version history** v0: first version in gradgym (issue 12), after seals' `CartPole-v0`.

use std::f64::consts::{PI, TAU};

use super::{CartPole, Dynamics, Transition};
use crate::error::EnvError;
use crate::math;
use crate::rng::Stream;
use crate::space::{EnvSpec, Space};

/// Fixed-horizon CartPole: [`CartPole`]'s constants and physics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FixedHorizonCartPole {
    pub cartpole: CartPole,
}

/// `θ` wrapped into [-π, π) where it lies outside [-π, π]; `θ` itself otherwise. Branch-free.
#[inline(always)]
pub fn wrap_angle(theta: f64) -> f64 {
    let wrapped = math::py_mod(theta + PI, TAU) - PI;
    if !(-PI..=PI).contains(&theta) {
        wrapped
    } else {
        theta
    }
}

impl Dynamics for FixedHorizonCartPole {
    /// `[x, x_dot, theta, theta_dot]`, as [`CartPole`].
    type State = [f64; 4];
    type Action = i64;
    const OBS_DIM: usize = 4;

    fn spec(&self) -> EnvSpec {
        let high = [f32::MAX, f32::MAX, std::f32::consts::PI, f32::MAX];
        EnvSpec {
            id: "FixedHorizonCartPole-v0",
            observation_space: Space::Box {
                low: high.map(|h| -h).to_vec(),
                high: high.to_vec(),
            },
            action_space: Space::Discrete { n: 2 },
            max_episode_steps: 500,
            reward_threshold: None,
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        self.cartpole.initial_state(rng)
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: i64) -> Transition<Self::State> {
        let mut next = self.cartpole.step(state, action).state;
        next[2] = wrap_angle(next[2]);
        let reward = if self.cartpole.out_of_bounds(&next) {
            0.0
        } else {
            1.0
        };
        Transition {
            state: next,
            reward,
            terminated: false,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        self.cartpole.observe(state, obs)
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[i64]) -> Result<(), EnvError> {
        self.cartpole.check_actions(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angles_inside_the_circle_are_untouched_and_others_wrapped() {
        for theta in [0.0, 0.1, -0.2, 3.0, PI, -PI, 1e-300] {
            assert_eq!(wrap_angle(theta).to_bits(), theta.to_bits(), "{theta}");
        }
        for (theta, expected) in [
            (PI + 0.5, -PI + 0.5),
            (-PI - 0.5, PI - 0.5),
            (TAU + 0.25, 0.25),
            (-3.0 * TAU + 0.1, 0.1),
            (5.0 * TAU - 0.1, -0.1),
        ] {
            let w = wrap_angle(theta);
            assert!((w - expected).abs() < 1e-12, "{theta}: {w} vs {expected}");
            assert!((-PI..PI).contains(&w), "{theta}: {w}");
        }
    }

    #[test]
    fn reward_is_one_inside_the_bounds_and_zero_outside_and_nothing_terminates() {
        let env = FixedHorizonCartPole::default();
        let cartpole = CartPole::default();
        // Inside: reward 1; a state that CartPole-v1 would end: reward 0, not terminated.
        let inside = env.step([0.0, 0.0, 0.01, 0.0], 1);
        assert_eq!((inside.reward, inside.terminated), (1.0, false));
        assert_eq!(inside.state, cartpole.step([0.0, 0.0, 0.01, 0.0], 1).state);
        let falling = [0.0, 0.0, 0.25, 1.0];
        let t = env.step(falling, 0);
        assert!(cartpole.step(falling, 0).terminated);
        assert_eq!((t.reward, t.terminated), (0.0, false));
        let off_track = [3.0, 0.0, 0.0, 0.0];
        assert_eq!(env.step(off_track, 1).reward, 0.0);
        // A pole that went once round and is upright again earns reward.
        let round = env.step([0.0, 0.0, TAU + 0.01, 0.0], 1);
        assert!((round.state[2] - 0.01).abs() < 1e-12);
        assert_eq!(round.reward, 1.0);
    }
}
