//! # FixedHorizonMountainCar-v0
//!
//! MountainCar-v0's car and valley, with every episode lasting exactly 200 steps: reaching the
//! flag no longer ends the episode but moves the car into an absorbing state, so an episode's
//! length says nothing about the reward (the "termination leaks the reward" lesson of the
//! seals project: `seals/MountainCar-v0`, built in
//! `src/seals/classic_control.py` of github.com/HumanCompatibleAI/seals from MountainCar-v0
//! and `AbsorbAfterDoneWrapper` in `src/seals/util.py`, which this follows).
//!
//! The physics *is* [`MountainCar`]'s: until the goal is reached, [`Dynamics::step`] returns
//! `MountainCar::step`'s next state unchanged (a test checks it on the Gymnasium fixture rows).
//!
//! **Action space** `Discrete(3)`: 0 accelerates left, 1 does nothing, 2 accelerates right, as
//! MountainCar-v0.
//!
//! **Observation space** `Box(2,)`, float32, as MountainCar-v0:
//!
//! | index | observation      | min   | max  |
//! |-------|------------------|-------|------|
//! | 0     | position (m)     | -1.2  | 0.6  |
//! | 1     | velocity (m/s)   | -0.07 | 0.07 |
//!
//! **Dynamics** MountainCar-v0's while the car is not at the goal. The goal set (position ≥ 0.5
//! and velocity ≥ 0, [`MountainCar::at_goal`]) is absorbing: a state in it stays where it is
//! whatever the action, so the observation repeats the one on arrival, as seals repeats the
//! final observation. No start state is in the goal set and MountainCar-v0 ends as soon as it
//! enters it, so "the state is in the goal set" is exactly "the goal has been reached": the
//! absorbing flag needs no extra state component.
//!
//! **Reward** −1 for every step that starts away from the goal (the step that reaches it
//! included, as MountainCar-v0 pays −1 on its terminating step), 0 for every step in the
//! absorbing state (seals' `absorb_reward = 0`). The return is therefore MountainCar-v0's:
//! minus the number of steps taken to reach the goal, or −200 if it is not reached.
//!
//! **Start state** position uniform in [-0.6, -0.4), velocity 0, as MountainCar-v0.
//!
//! **Episode end** never terminates; truncated after exactly 200 steps. No reward threshold:
//! Gymnasium's −110 belongs to MountainCar-v0 (with the same return it would mean the same,
//! but seals registers none, and no threshold keeps the two tasks' summaries apart).
//!
//! **Version history** v0: first version in gradgym (issue 12), after seals' `MountainCar-v0`.

use super::{Dynamics, MountainCar, Transition};
use crate::error::EnvError;
use crate::rng::Stream;
use crate::space::EnvSpec;

/// Fixed-horizon MountainCar: [`MountainCar`]'s constants and physics, the goal absorbing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FixedHorizonMountainCar {
    pub mountain_car: MountainCar,
}

impl Dynamics for FixedHorizonMountainCar {
    /// `[position, velocity]`, as [`MountainCar`].
    type State = [f64; 2];
    type Action = i64;
    const OBS_DIM: usize = 2;

    fn spec(&self) -> EnvSpec {
        let inner = self.mountain_car.spec();
        EnvSpec {
            id: "FixedHorizonMountainCar-v0",
            reward_threshold: None,
            ..inner
        }
    }

    fn initial_state(&self, rng: &mut Stream) -> Self::State {
        self.mountain_car.initial_state(rng)
    }

    #[inline(always)]
    fn step(&self, state: Self::State, action: i64) -> Transition<Self::State> {
        let moved = self.mountain_car.step(state, action);
        let absorbed = self.mountain_car.at_goal(&state);
        Transition {
            state: if absorbed { state } else { moved.state },
            reward: if absorbed { 0.0 } else { moved.reward },
            terminated: false,
        }
    }

    #[inline(always)]
    fn observe(&self, state: &Self::State, obs: &mut [f32]) {
        self.mountain_car.observe(state, obs)
    }

    #[inline(always)]
    fn check_actions(&self, actions: &[i64]) -> Result<(), EnvError> {
        self.mountain_car.check_actions(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goal_absorbs_with_reward_zero_and_nothing_terminates() {
        let env = FixedHorizonMountainCar::default();
        let car = MountainCar::default();
        // Away from the goal: MountainCar's step, not terminated.
        let s = [-0.5, 0.01];
        let t = env.step(s, 2);
        assert_eq!(t.state, car.step(s, 2).state);
        assert_eq!((t.reward, t.terminated), (-1.0, false));
        // The step that reaches the goal pays −1 and does not end the episode.
        let near = [0.49, 0.02];
        assert!(car.step(near, 2).terminated);
        let arrive = env.step(near, 2);
        assert_eq!((arrive.reward, arrive.terminated), (-1.0, false));
        // From then on the state stays put and pays 0, whatever the action.
        for action in [0, 1, 2] {
            let stay = env.step(arrive.state, action);
            assert_eq!(stay.state, arrive.state);
            assert_eq!((stay.reward, stay.terminated), (0.0, false));
        }
    }
}
