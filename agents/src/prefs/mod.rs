//! Learning from synthetic preferences (Christiano et al. 2017) on the classic tasks.
//!
//! A run whose config has a `[prefs]` table ([`PrefsConfig`], in `crate::config::prefs`, so
//! that the config stays a leaf of the module graph) is paid a learned
//! reward: [`hook::PrefsLoop`] is a [`crate::hook::Hook`] that cuts segments from each rollout,
//! asks the synthetic human (`gradgym_envs::preference::SyntheticHuman`, which knows the true
//! reward) to compare them on a schedule within the label budget, fits the reward-model
//! ensemble ([`reward_model`]) with the preference loss ([`loss`]), and replaces the rollout's
//! rewards with the model's normalised prediction before the learner updates. Any learner
//! (`reinforce`, `a2c`, `ppo`) trains on it unchanged.
//!
//! - [`loss`]: −Σⱼ μⱼ log softmax(s)ⱼ over segment sums, the pairwise loss at K = 2.
//! - [`reward_model`]: the ensemble r̂(o, a), its bootstrap, L2 adaptation and disagreement.
//! - [`hook`]: the loop, its label schedule, `labels.csv`, `interleaved` and `async` modes.
//! - [`stats`]: Pearson and Spearman correlation of learned and true reward.

pub mod hook;
pub mod loss;
pub mod reward_model;
pub mod stats;

pub use crate::config::prefs::PrefsConfig;
pub use hook::PrefsLoop;
