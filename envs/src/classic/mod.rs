//! The five Gymnasium classic-control tasks, and fixed-horizon variants of two of them
//! (`FixedHorizonCartPole-v0`, `FixedHorizonMountainCar-v0`, after the seals project) whose
//! dynamics wrap the classic ones.
//!
//! Each environment is a [`Dynamics`] value (its constants, `Default` = Gymnasium's) with a
//! *pure* step `(params, state, action) -> (next state, reward, terminated)`, gymnax-style.
//! [`crate::vec_env::ClassicVecEnv`] runs that same function over a batch stored as a struct of
//! arrays, in blocks of [`LANES`] environments, so the compiler vectorises the physics: there
//! is no second, faster copy of the physics to drift away from the checked one.

// Lane loops index several arrays in lockstep: the shape the vectoriser wants.
#![allow(clippy::needless_range_loop)]

pub mod acrobot;
pub mod cartpole;
pub mod fixed_horizon_cartpole;
pub mod fixed_horizon_mountain_car;
pub mod mountain_car;
pub mod mountain_car_continuous;
pub mod pendulum;

pub use acrobot::Acrobot;
pub use cartpole::CartPole;
pub use fixed_horizon_cartpole::FixedHorizonCartPole;
pub use fixed_horizon_mountain_car::FixedHorizonMountainCar;
pub use mountain_car::MountainCar;
pub use mountain_car_continuous::MountainCarContinuous;
pub use pendulum::Pendulum;

use crate::error::EnvError;
use crate::rng::Stream;
use crate::space::EnvSpec;

/// Environments per block. Measured with `gradgym envs bench` at 4096 envs on one core
/// (CartPole-v1, M steps/s): 4 → 68, 8 → 81, 16 → 120, 32 → 152, 64 → 135; Acrobot and
/// Pendulum gain most up to 32 too. Wider blocks amortise the per-block accounting and give the
/// vectoriser long loops; padding costs little (a 4-env batch wastes ~0.2 µs of physics).
pub const LANES: usize = 32;

/// A physics state `[f64; D]`, and its block layout `[[f64; LANES]; D]` (component-major, so
/// lane l of every component is contiguous across the block).
pub trait StateVec: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const DIM: usize;
    type Block: Copy + Send + Sync + 'static;
    fn zero_block() -> Self::Block;
    fn load(block: &Self::Block, lane: usize) -> Self;
    fn store(self, block: &mut Self::Block, lane: usize);
    fn as_slice(&self) -> &[f64];
    fn from_slice(values: &[f64]) -> Self;
}

impl<const D: usize> StateVec for [f64; D] {
    const DIM: usize = D;
    type Block = [[f64; LANES]; D];

    fn zero_block() -> Self::Block {
        [[0.0; LANES]; D]
    }
    #[inline(always)]
    fn load(block: &Self::Block, lane: usize) -> Self {
        std::array::from_fn(|k| block[k][lane])
    }
    #[inline(always)]
    fn store(self, block: &mut Self::Block, lane: usize) {
        for (component, value) in block.iter_mut().zip(self) {
            component[lane] = value;
        }
    }
    fn as_slice(&self) -> &[f64] {
        self
    }
    fn from_slice(values: &[f64]) -> Self {
        std::array::from_fn(|k| values[k])
    }
}

/// The element type of an action: `i64` for discrete spaces, `f32` for one-dimensional boxes.
pub trait ActionValue:
    Copy + Default + Send + Sync + PartialEq + std::fmt::Debug + 'static
{
    const KIND: &'static str;
    /// The action written as a number in a fixture file; `None` if it cannot be one.
    fn from_f64(value: f64) -> Option<Self>;
    fn from_actions<'a>(actions: crate::Actions<'a>) -> Option<&'a [Self]>;
}

impl ActionValue for i64 {
    const KIND: &'static str = "discrete (i64)";
    fn from_f64(value: f64) -> Option<Self> {
        (value.fract() == 0.0 && value.abs() < 2f64.powi(53)).then_some(value as i64)
    }
    fn from_actions<'a>(actions: crate::Actions<'a>) -> Option<&'a [Self]> {
        match actions {
            crate::Actions::Discrete(a) => Some(a),
            crate::Actions::Continuous(_) => None,
        }
    }
}

impl ActionValue for f32 {
    const KIND: &'static str = "continuous (f32)";
    fn from_f64(value: f64) -> Option<Self> {
        Some(value as f32)
    }
    fn from_actions<'a>(actions: crate::Actions<'a>) -> Option<&'a [Self]> {
        match actions {
            crate::Actions::Continuous(a) => Some(a),
            crate::Actions::Discrete(_) => None,
        }
    }
}

/// Checks a batch of discrete actions against `Discrete(n)`. The scan has no early exit, so it
/// vectorises; the slow search for the culprit runs only on failure.
#[inline(always)]
pub fn check_discrete(actions: &[i64], n: i64) -> Result<(), EnvError> {
    let bad = actions
        .iter()
        .fold(false, |bad, &a| bad | (a as u64 >= n as u64));
    if !bad {
        return Ok(());
    }
    let env_index = actions.iter().position(|&a| a < 0 || a >= n).unwrap_or(0);
    Err(EnvError::ActionOutOfRange {
        env_index,
        action: actions[env_index],
        n,
    })
}

/// Checks that continuous actions are finite (they are then clipped as Gymnasium does).
#[inline(always)]
pub fn check_finite(actions: &[f32]) -> Result<(), EnvError> {
    let bad = actions.iter().fold(false, |bad, a| bad | !a.is_finite());
    if !bad {
        return Ok(());
    }
    let env_index = actions.iter().position(|a| !a.is_finite()).unwrap_or(0);
    Err(EnvError::NonFiniteAction {
        env_index,
        value: actions[env_index],
    })
}

/// The outcome of one pure step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition<S> {
    pub state: S,
    pub reward: f64,
    pub terminated: bool,
}

/// One classic-control task: constants in `self`, state passed in and out.
pub trait Dynamics: Clone + Default + Send + Sync + std::fmt::Debug + 'static {
    type State: StateVec;
    type Action: ActionValue;
    /// Components of an observation.
    const OBS_DIM: usize;

    fn spec(&self) -> EnvSpec;

    /// A start state, drawn from `rng` as Gymnasium's `reset` draws it.
    fn initial_state(&self, rng: &mut Stream) -> Self::State;

    /// The pure transition function.
    fn step(&self, state: Self::State, action: Self::Action) -> Transition<Self::State>;

    /// Writes the float32 observation of `state` into `obs[..OBS_DIM]`.
    fn observe(&self, state: &Self::State, obs: &mut [f32]);

    /// Rejects actions outside the action space (continuous actions are clipped, not rejected,
    /// unless they are not finite).
    fn check_actions(&self, actions: &[Self::Action]) -> Result<(), EnvError>;

    /// Steps the [`LANES`] environments of one block. The default runs [`Dynamics::step`] per
    /// lane; an env overrides it only to move a rare, loop-carrying path out of the vectorised
    /// loop, and must then give the same bits as `step` (a test checks every env on the
    /// Gymnasium fixture states).
    #[inline(always)]
    fn step_block(
        &self,
        block: &mut <Self::State as StateVec>::Block,
        actions: &[Self::Action; LANES],
        rewards: &mut [f64; LANES],
        terminated: &mut [bool; LANES],
    ) {
        for lane in 0..LANES {
            let t = self.step(Self::State::load(block, lane), actions[lane]);
            t.state.store(block, lane);
            rewards[lane] = t.reward;
            terminated[lane] = t.terminated;
        }
    }

    /// Writes the observations of one block, row-major `[LANES, OBS_DIM]`.
    #[inline(always)]
    fn observe_block(&self, block: &<Self::State as StateVec>::Block, obs: &mut [f32]) {
        for lane in 0..LANES {
            let state = Self::State::load(block, lane);
            self.observe(
                &state,
                &mut obs[lane * Self::OBS_DIM..(lane + 1) * Self::OBS_DIM],
            );
        }
    }
}
