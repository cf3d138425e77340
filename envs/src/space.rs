//! Action and observation spaces, and the metadata of a registered environment.

use serde::Serialize;

/// A space, with Gymnasium's meaning.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Space {
    /// The integers `0..n`.
    Discrete { n: i64 },
    /// A box of float32 vectors, `low[k] <= x[k] <= high[k]`.
    Box { low: Vec<f32>, high: Vec<f32> },
}

impl Space {
    /// Number of components of one element (1 for a discrete space).
    pub fn dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { low, .. } => low.len(),
        }
    }

    /// Whether actions from this space are integers.
    pub fn is_discrete(&self) -> bool {
        matches!(self, Space::Discrete { .. })
    }
}

impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Space::Discrete { n } => write!(f, "Discrete({n})"),
            Space::Box { low, high } => {
                write!(f, "Box({low:?}, {high:?}, ({},), float32)", low.len())
            }
        }
    }
}

/// Everything a user needs to know about an environment before making it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvSpec {
    /// Registry id, as in Gymnasium (`"CartPole-v1"`).
    pub id: &'static str,
    pub observation_space: Space,
    pub action_space: Space,
    /// Episodes are truncated after this many steps (Gymnasium's `max_episode_steps`).
    pub max_episode_steps: u32,
    /// The return at which the task counts as solved (Gymnasium's `reward_threshold`), if any.
    pub reward_threshold: Option<f64>,
}
