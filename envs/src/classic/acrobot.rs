//! # Acrobot-v1
//!
//! Two links hang from a fixed joint; a torque on the joint between them must swing the free
//! end above a line one link-length over the base (Sutton 1996; Sutton & Barto 2018). Constants
//! and formulas are Gymnasium 1.x's `AcrobotEnv` with the "book" dynamics, integrated by one
//! RK4 step of dt = 0.2.
//!
//! **Action space** `Discrete(3)`: torque −1, 0 or +1 on the actuated joint.
//!
//! **Observation space** `Box(6,)`, float32:
//!
//! | index | observation       | min    | max   |
//! |-------|-------------------|--------|-------|
//! | 0     | cos(θ1)           | -1     | 1     |
//! | 1     | sin(θ1)           | -1     | 1     |
//! | 2     | cos(θ2)           | -1     | 1     |
//! | 3     | sin(θ2)           | -1     | 1     |
//! | 4     | θ̇1 (rad/s)       | -4π    | 4π    |
//! | 5     | θ̇2 (rad/s)       | -9π    | 9π    |
//!
//! θ1 is the angle of the first link from straight down, θ2 the angle of the second link
//! relative to the first. After each step both angles are wrapped into [-π, π] and the
//! velocities bounded to ±4π and ±9π.
//!
//! **Reward** −1 every step, 0 on the terminating step.
//!
//! **Start state** all four components uniform in [-0.1, 0.1), rounded to float32 (Gymnasium
//! casts the reset state to float32).
//!
//! **Episode end** terminated when `−cos θ1 − cos(θ2 + θ1) > 1`; truncated after 500 steps.
//! Reward threshold −100.

use std::f64::consts::{FRAC_PI_2, PI};

use super::{Dynamics, LANES, StateVec, Transition, check_discrete};
use crate::error::EnvError;
use crate::math;
use crate::rng::{Stream, uniform};
use crate::space::{EnvSpec, Space};

/// Acrobot constants (Gymnasium's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Acrobot {
    pub dt: f64,
    pub link_length_1: f64,
    pub link_mass_1: f64,
    pub link_mass_2: f64,
    pub link_com_pos_1: f64,
    pub link_com_pos_2: f64,
    /// Moment of inertia of both links.
    pub link_moi: f64,
    pub max_vel_1: f64,
    pub max_vel_2: f64,
    pub gravity: f64,
}

impl Default for Acrobot {
    fn default() -> Self {
        Self {
            dt: 0.2,
            link_length_1: 1.0,
            link_mass_1: 1.0,
            link_mass_2: 1.0,
            link_com_pos_1: 0.5,
            link_com_pos_2: 0.5,
            link_moi: 1.0,
            max_vel_1: 4.0 * PI,
            max_vel_2: 9.0 * PI,
            gravity: 9.8,
        }
    }
}

/// The torque of each discrete action.
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

type State = [f64; 4];

impl Acrobot {
    /// Time derivative of `[θ1, θ2, θ̇1, θ̇2]` under torque `a` ("book" dynamics).
    #[inline(always)]
    fn dsdt(&self, s: State, a: f64) -> State {
        let (m1, m2) = (self.link_mass_1, self.link_mass_2);
        let l1 = self.link_length_1;
        let (lc1, lc2) = (self.link_com_pos_1, self.link_com_pos_2);
        let (i1, i2) = (self.link_moi, self.link_moi);
        let g = self.gravity;
        let [theta1, theta2, dtheta1, dtheta2] = s;
        let (sin2, cos2) = math::sin_cos(theta2);

        let d1 = m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * cos2) + i1 + i2;
        let d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos2) + i2;
        let phi2 = m2 * lc2 * g * math::cos(theta1 + theta2 - PI / 2.0);
        let phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
            - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * math::cos(theta1 - FRAC_PI_2)
            + phi2;
        let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2)
            / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1);
        let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
        [dtheta1, dtheta2, ddtheta1, ddtheta2]
    }

    /// One classical Runge–Kutta step over `[0, dt]` under torque `a`, in Gymnasium's order of
    /// operations, before angles are wrapped and velocities bounded.
    #[inline(always)]
    pub fn rk4(&self, y0: State, a: f64) -> State {
        let dt = self.dt;
        let dt2 = dt / 2.0;
        let add =
            |y: State, h: f64, k: State| -> State { std::array::from_fn(|i| y[i] + h * k[i]) };
        let k1 = self.dsdt(y0, a);
        let k2 = self.dsdt(add(y0, dt2, k1), a);
        let k3 = self.dsdt(add(y0, dt2, k2), a);
        let k4 = self.dsdt(add(y0, dt, k3), a);
        std::array::from_fn(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
    }

    /// Bounds the velocities and computes reward and termination from the wrapped state.
    #[inline(always)]
    fn finish(&self, ns: State) -> Transition<State> {
        let next = [
            ns[0],
            ns[1],
            ns[2].max(-self.max_vel_1).min(self.max_vel_1),
            ns[3].max(-self.max_vel_2).min(self.max_vel_2),
        ];
        let terminated = -math::cos(next[0]) - math::cos(next[1] + next[0]) > 1.0;
        Transition {
            state: next,
            reward: if terminated { 0.0 } else { -1.0 },
            terminated,
        }
    }
}

/// The first two passes of each of Gymnasium's `wrap(x, -π, π)` loops, without loops.
#[inline(always)]
fn wrap_unrolled(x: f64) -> f64 {
    let diff = PI - (-PI);
    let x = if x > PI { x - diff } else { x };
    let x = if x > PI { x - diff } else { x };
    let x = if x < -PI { x + diff } else { x };
    if x < -PI { x + diff } else { x }
}

/// Past this many radians Gymnasium's loop of subtractions takes about a second per 1e9 and,
/// past about 1e16 (where subtracting 2π leaves x as it was), never ends: such an angle (only
/// a state set from outside reaches one; every step wraps) is first brought near the range by
/// a remainder, which can round otherwise than the loop would have.
const WRAP_LOOP_LIMIT: f64 = 1e6;

/// Gymnasium's `wrap(x, -π, π)`: repeated subtraction, then repeated addition. Applied after
/// [`wrap_unrolled`] it finishes the loops that two passes did not (an identity otherwise).
/// A non-finite x (on which Gymnasium's loop hangs) is NaN; past [`WRAP_LOOP_LIMIT`] the
/// loops start from x's remainder.
#[inline(always)]
fn wrap_loop(mut x: f64) -> f64 {
    let diff = PI - (-PI);
    if !x.is_finite() {
        return f64::NAN;
    }
    if x.abs() > WRAP_LOOP_LIMIT {
        x = x.rem_euclid(diff);
    }
    while x > PI {
        x -= diff;
    }
    while x < -PI {
        x += diff;
    }
    x
}

impl Dynamics for Acrobot {
    /// `[theta1, theta2, theta1_dot, theta2_dot]`
    type State = State;
    type Action = i64;
    const OBS_DIM: usize = 6;

    fn spec(&self) -> EnvSpec {
        let high = [
            1.0,
            1.0,
            1.0,
            1.0,
            self.max_vel_1 as f32,
            self.max_vel_2 as f32,
        ];
        EnvSpec {
            id: "Acrobot-v1",
            observation_space: Space::Box {
                low: high.map(|h| -h).to_vec(),
                high: high.to_vec(),
            },
            action_space: Space::Discrete { n: 3 },
            max_episode_steps: 500,
            reward_threshold: Some(-100.0),
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> State {
        std::array::from_fn(|_| uniform(rng, -0.1, 0.1) as f32 as f64)
    }

    fn step(&self, state: State, action: i64) -> Transition<State> {
        let mut ns = self.rk4(state, AVAIL_TORQUE[action as usize]);
        ns[0] = wrap_loop(wrap_unrolled(ns[0]));
        ns[1] = wrap_loop(wrap_unrolled(ns[1]));
        self.finish(ns)
    }

    /// Same bits as [`Dynamics::step`]: RK4 and two wrap passes vectorised, the rare remaining
    /// wrap passes per lane, then the vectorised finish.
    #[inline(always)]
    fn step_block(
        &self,
        block: &mut [[f64; LANES]; 4],
        actions: &[i64; LANES],
        rewards: &mut [f64; LANES],
        terminated: &mut [bool; LANES],
    ) {
        let mut integrated = State::zero_block();
        for lane in 0..LANES {
            let torque = (actions[lane] - 1) as f64;
            let mut ns = self.rk4(State::load(block, lane), torque);
            ns[0] = wrap_unrolled(ns[0]);
            ns[1] = wrap_unrolled(ns[1]);
            ns.store(&mut integrated, lane);
        }
        for component in &mut integrated[..2] {
            for x in component.iter_mut() {
                if !(-PI..=PI).contains(x) {
                    *x = wrap_loop(*x);
                }
            }
        }
        for lane in 0..LANES {
            let t = self.finish(State::load(&integrated, lane));
            t.state.store(block, lane);
            rewards[lane] = t.reward;
            terminated[lane] = t.terminated;
        }
    }

    #[inline(always)]
    fn observe(&self, state: &State, obs: &mut [f32]) {
        let (s1, c1) = math::sin_cos(state[0]);
        let (s2, c2) = math::sin_cos(state[1]);
        obs[0] = c1 as f32;
        obs[1] = s1 as f32;
        obs[2] = c2 as f32;
        obs[3] = s2 as f32;
        obs[4] = state[2] as f32;
        obs[5] = state[3] as f32;
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[i64]) -> Result<(), EnvError> {
        check_discrete(actions, 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gymnasium's loop itself, for angles it finishes on.
    fn gymnasium_wrap(mut x: f64) -> f64 {
        let diff = PI - (-PI);
        while x > PI {
            x -= diff;
        }
        while x < -PI {
            x += diff;
        }
        x
    }

    #[test]
    fn wrapping_is_gymnasiums_loop_and_ends_on_any_angle() {
        for x in [0.0, 3.2, -3.2, 7.0, -20.0, 1e3, -123_456.7, 999_999.0] {
            assert_eq!(
                wrap_loop(wrap_unrolled(x)).to_bits(),
                gymnasium_wrap(x).to_bits(),
                "{x}"
            );
        }
        // Gymnasium's loop takes about a second per 1e9 here and never ends past ~1e16 (x −
        // 2π == x); these ended here only by the remainder.
        for x in [1e9, -1e12, 1e17, f64::MAX, -f64::MAX] {
            let w = wrap_loop(wrap_unrolled(x));
            assert!((-PI..=PI).contains(&w), "{x} → {w}");
        }
        for x in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            assert!(wrap_loop(wrap_unrolled(x)).is_nan(), "{x}");
        }
    }
}
