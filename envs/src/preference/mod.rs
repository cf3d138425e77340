//! Learning from preferences (Christiano et al. 2017, "Deep Reinforcement Learning from Human
//! Preferences"), the parts that need no network:
//!
//! - [`segments`]: segments of k consecutive transitions cut from rollouts `[T, N, ...]`,
//!   never across an episode boundary, and a seeded sampler of them;
//! - [`oracle`]: the synthetic human, who compares segments by their true returns
//!   (Boltzmann-rational, with ties, noise and an optional discount; pairwise and K-way).
//!
//! The reward-hiding env the learner runs on is [`crate::wrappers::HiddenRewardEnv`].
//! Every random draw comes from a [`crate::rng`] stream the caller hands in.

pub mod oracle;
pub mod segments;

pub use oracle::{Answer, AnswerProbabilities, OracleConfig, RandomAnswer, SyntheticHuman};
pub use segments::{
    RolloutActions, RolloutView, Segment, SegmentActions, SegmentSampler, check_segment_length,
    cut, valid_starts,
};

use thiserror::Error;

/// Bad input to the segment cutter or the oracle. Each names the field or array at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PreferenceError {
    /// A setting outside its range: `field` is its name in the configuration.
    #[error("invalid `{field}`: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },

    /// No window of `segment_length` consecutive transitions lies within one episode.
    #[error(
        "no segment of `segment_length` = {segment_length} consecutive transitions fits within one episode of the rollout (the longest stretch within one episode is {longest} steps)"
    )]
    NoSegmentFits {
        segment_length: usize,
        longest: usize,
    },

    /// The rollout's arrays disagree in shape.
    #[error("rollout arrays disagree: {0}")]
    Shape(String),

    /// A segment asked for by position that is not in the rollout or crosses an episode
    /// boundary.
    #[error("invalid segment: {0}")]
    InvalidSegment(String),

    /// A segment's return is NaN or infinite, so it cannot be compared.
    #[error("the return of segment {index} is {value}, not a finite number")]
    NonFiniteReturn { index: usize, value: f64 },
}
