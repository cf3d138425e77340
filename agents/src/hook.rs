//! The seam between collection and update: a [`Hook`] sees each rollout before the learner
//! does, may rewrite its rewards (what the learner optimises) and adds metric columns. The
//! training loop ([`crate::train`]) calls it; the preference loop ([`crate::prefs`]) is one.

use anyhow::Result;

use crate::buffer::Rollout;
use crate::metrics::MetricRow;
use crate::nn::Policy;

/// A rollout between collection and update, as a [`Hook`] sees it.
pub struct Collected<'a> {
    /// The iteration being run (from 1).
    pub iteration: u64,
    /// Env steps consumed so far, this rollout included.
    pub global_step: u64,
    /// The rollout: `rewards` hold the env's (true) rewards on entry; what the hook leaves
    /// there is what the learner optimises. Episode returns in the metrics stay the env's.
    pub rollout: &'a mut Rollout,
    /// The policy that collected the rollout.
    pub policy: &'a Policy,
    /// This iteration's metrics row: the hook sets its own (declared) columns here.
    pub row: &'a mut MetricRow,
}

/// Code that runs between collection and update of every iteration.
pub trait Hook {
    /// The metric columns this hook sets, placed after [`BASE_COLUMNS`] and before the timing
    /// columns.
    fn columns(&self) -> Vec<String> {
        Vec::new()
    }
    /// Sees (and may rewrite) the rollout before the learner updates on it. An error ends the
    /// run as failed, like a non-finite loss.
    fn after_collect(&mut self, batch: Collected<'_>) -> Result<()>;
}
