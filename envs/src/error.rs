//! Errors of the environment crate. Each names the problem and where it is.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum EnvError {
    #[error("unknown env id `{id}`; valid ids: {}", valid.join(", "))]
    UnknownEnv {
        id: String,
        valid: Vec<&'static str>,
    },

    #[error("action {action} for env {env_index} is outside the action space Discrete({n}) (valid: 0 to {})", n - 1)]
    ActionOutOfRange {
        env_index: usize,
        action: i64,
        n: i64,
    },

    #[error("action {value} for env {env_index} is not a finite number")]
    NonFiniteAction { env_index: usize, value: f32 },

    #[error("{env_id} takes {expected} actions but was given {given}")]
    WrongActionKind {
        env_id: &'static str,
        expected: &'static str,
        given: &'static str,
    },

    #[error(
        "step was given {given} actions for {expected} action slots ({num_envs} envs × action dim {dim})"
    )]
    WrongActionCount {
        expected: usize,
        given: usize,
        num_envs: usize,
        dim: usize,
    },

    #[error("state of length {given} given to {env_id}, whose state has {expected} components")]
    WrongStateLength {
        env_id: &'static str,
        expected: usize,
        given: usize,
    },

    #[error("state component {component} given to {env_id} is {value}, not a finite number")]
    NonFiniteState {
        env_id: &'static str,
        component: usize,
        value: f64,
    },

    #[error("env index {index} is out of range for a batch of {num_envs}")]
    EnvIndexOutOfRange { index: usize, num_envs: usize },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("{given} rewards supplied for a batch of {num_envs} envs")]
    WrongRewardCount { given: usize, num_envs: usize },

    #[error("reward {value} supplied for env {env_index} is not a finite number")]
    NonFiniteReward { env_index: usize, value: f64 },

    #[error("the reward source failed: {0}")]
    RewardSource(String),
}

impl EnvError {
    /// The same error with environment indices shifted by `first` (for an error found in a
    /// slice of the batch that starts at environment `first`).
    pub fn offset(self, first: usize) -> Self {
        match self {
            EnvError::ActionOutOfRange {
                env_index,
                action,
                n,
            } => EnvError::ActionOutOfRange {
                env_index: env_index + first,
                action,
                n,
            },
            EnvError::NonFiniteAction { env_index, value } => EnvError::NonFiniteAction {
                env_index: env_index + first,
                value,
            },
            other => other,
        }
    }
}
