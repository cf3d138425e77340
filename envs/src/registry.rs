//! `make(env_id, num_envs, seed)`: environments by their Gymnasium id.

use crate::classic::{
    Acrobot, CartPole, Dynamics, FixedHorizonCartPole, FixedHorizonMountainCar, MountainCar,
    MountainCarContinuous, Pendulum, StateVec,
};
use crate::error::EnvError;
use crate::space::EnvSpec;
use crate::vec_env::{ClassicVecEnv, EnvOptions, VecEnv};

/// Every registered id, in the order `gradgym envs list` prints them: Gymnasium's five
/// classic-control tasks, then the fixed-horizon variants (gradgym's, after seals).
pub const ENV_IDS: [&str; 7] = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Pendulum-v1",
    "FixedHorizonCartPole-v0",
    "FixedHorizonMountainCar-v0",
];

fn unknown(id: &str) -> EnvError {
    EnvError::UnknownEnv {
        id: id.to_string(),
        valid: ENV_IDS.to_vec(),
    }
}

/// A batch of `num_envs` copies of `env_id`, seeded with `seed`, stepped on the calling thread.
pub fn make(env_id: &str, num_envs: usize, seed: u64) -> Result<Box<dyn VecEnv>, EnvError> {
    make_with(env_id, &EnvOptions::new(num_envs, seed))
}

/// As [`make`], with every option.
pub fn make_with(env_id: &str, options: &EnvOptions) -> Result<Box<dyn VecEnv>, EnvError> {
    fn boxed<D: Dynamics>(options: &EnvOptions) -> Result<Box<dyn VecEnv>, EnvError> {
        Ok(Box::new(ClassicVecEnv::new(D::default(), options)?))
    }
    match env_id {
        "CartPole-v1" => boxed::<CartPole>(options),
        "Acrobot-v1" => boxed::<Acrobot>(options),
        "MountainCar-v0" => boxed::<MountainCar>(options),
        "MountainCarContinuous-v0" => boxed::<MountainCarContinuous>(options),
        "Pendulum-v1" => boxed::<Pendulum>(options),
        "FixedHorizonCartPole-v0" => boxed::<FixedHorizonCartPole>(options),
        "FixedHorizonMountainCar-v0" => boxed::<FixedHorizonMountainCar>(options),
        other => Err(unknown(other)),
    }
}

/// The metadata of `env_id`, without building it.
pub fn spec(env_id: &str) -> Result<EnvSpec, EnvError> {
    match env_id {
        "CartPole-v1" => Ok(CartPole::default().spec()),
        "Acrobot-v1" => Ok(Acrobot::default().spec()),
        "MountainCar-v0" => Ok(MountainCar::default().spec()),
        "MountainCarContinuous-v0" => Ok(MountainCarContinuous::default().spec()),
        "Pendulum-v1" => Ok(Pendulum::default().spec()),
        "FixedHorizonCartPole-v0" => Ok(FixedHorizonCartPole::default().spec()),
        "FixedHorizonMountainCar-v0" => Ok(FixedHorizonMountainCar::default().spec()),
        other => Err(unknown(other)),
    }
}

/// Components of the physics state of `env_id` (what `VecEnv::state` returns).
pub fn state_dim(env_id: &str) -> Result<usize, EnvError> {
    fn dim<D: Dynamics>() -> usize {
        <D::State as StateVec>::DIM
    }
    match env_id {
        "CartPole-v1" => Ok(dim::<CartPole>()),
        "Acrobot-v1" => Ok(dim::<Acrobot>()),
        "MountainCar-v0" => Ok(dim::<MountainCar>()),
        "MountainCarContinuous-v0" => Ok(dim::<MountainCarContinuous>()),
        "Pendulum-v1" => Ok(dim::<Pendulum>()),
        "FixedHorizonCartPole-v0" => Ok(dim::<FixedHorizonCartPole>()),
        "FixedHorizonMountainCar-v0" => Ok(dim::<FixedHorizonMountainCar>()),
        other => Err(unknown(other)),
    }
}
