//! Segments: k consecutive transitions of one env, cut from rollout data shaped `[T, N, ...]`
//! (row t holds step t of every env, as the rollout buffer of `gradgym-agents` stores them).
//!
//! Transition t of env i is `(observations[t, i], actions[t, i], true_rewards[t, i])`, and
//! `dones[t, i]` says that it ended an episode (terminated or truncated), so transition t + 1
//! is the first of the next one. A segment `[start, start + k)` of env i lies within one
//! episode when none of its transitions but the last ended an episode, i.e. `dones[t, i]` is
//! false for `start ≤ t < start + k − 1` (the last may end the episode); with a `valid` mask,
//! all k transitions must be valid too (an episodic rollout's rows after its end are not).
//! Christiano et al. (2017) used 1–2 s of MuJoCo time, about 25–50 steps.
//!
//! [`SegmentSampler`] draws start positions uniformly among all valid ones of a rollout (with
//! replacement), from a stream the caller names.

use ndarray::{Array1, Array2, ArrayView2, ArrayView3, s};

use super::PreferenceError;
use crate::rng::Stream;

/// The actions of a rollout, in the rollout buffer's layout.
#[derive(Clone, Copy, Debug)]
pub enum RolloutActions<'a> {
    /// `[T, N]`
    Discrete(ArrayView2<'a, i64>),
    /// `[T, N, action_dim]`
    Continuous(ArrayView3<'a, f32>),
}

/// Borrowed rollout data `[T, N, ...]`, shapes checked.
#[derive(Clone, Copy, Debug)]
pub struct RolloutView<'a> {
    /// `[T, N, obs_dim]`: the observation each action was taken on.
    pub observations: ArrayView3<'a, f32>,
    pub actions: RolloutActions<'a>,
    /// `[T, N]`: the env's true rewards (not the learner's).
    pub true_rewards: ArrayView2<'a, f64>,
    /// `[T, N]`: the transition ended an episode (terminated or truncated).
    pub dones: ArrayView2<'a, bool>,
    /// `[T, N]`, optional: the transition belongs to the rollout (default: all do).
    pub valid: Option<ArrayView2<'a, bool>>,
}

impl<'a> RolloutView<'a> {
    /// Checks that all arrays are `[T, N, ...]` with the same T and N.
    pub fn new(
        observations: ArrayView3<'a, f32>,
        actions: RolloutActions<'a>,
        true_rewards: ArrayView2<'a, f64>,
        dones: ArrayView2<'a, bool>,
    ) -> Result<Self, PreferenceError> {
        let (t, n, _) = observations.dim();
        let check = |name: &str, shape: (usize, usize)| {
            if shape == (t, n) {
                Ok(())
            } else {
                Err(PreferenceError::Shape(format!(
                    "{name} is [{}, {}, ...] but observations are [{t}, {n}, ...]",
                    shape.0, shape.1
                )))
            }
        };
        match actions {
            RolloutActions::Discrete(a) => check("actions", a.dim())?,
            RolloutActions::Continuous(a) => check("actions", (a.dim().0, a.dim().1))?,
        }
        check("true_rewards", true_rewards.dim())?;
        check("dones", dones.dim())?;
        Ok(Self {
            observations,
            actions,
            true_rewards,
            dones,
            valid: None,
        })
    }

    /// Adds a `[T, N]` mask of the transitions that belong to the rollout.
    pub fn with_valid(mut self, valid: ArrayView2<'a, bool>) -> Result<Self, PreferenceError> {
        if valid.dim() != self.dones.dim() {
            return Err(PreferenceError::Shape(format!(
                "valid is {:?} but dones are {:?}",
                valid.dim(),
                self.dones.dim()
            )));
        }
        self.valid = Some(valid);
        Ok(self)
    }

    /// T
    pub fn num_steps(&self) -> usize {
        self.dones.dim().0
    }
    /// N
    pub fn num_envs(&self) -> usize {
        self.dones.dim().1
    }

    fn is_valid(&self, t: usize, i: usize) -> bool {
        self.valid.is_none_or(|v| v[[t, i]])
    }

    /// `run[t]` for env `i`: how many transitions from t on stay within one episode (and
    /// valid): 0 if t is not valid, 1 if t ends an episode, else 1 + run[t + 1].
    fn runs(&self, i: usize) -> Vec<usize> {
        let steps = self.num_steps();
        let mut run = vec![0usize; steps + 1];
        for t in (0..steps).rev() {
            run[t] = if !self.is_valid(t, i) {
                0
            } else if self.dones[[t, i]] {
                1
            } else {
                1 + run[t + 1]
            };
        }
        run.truncate(steps);
        run
    }
}

/// The actions of one segment.
#[derive(Clone, Debug, PartialEq)]
pub enum SegmentActions {
    /// `[k]`
    Discrete(Array1<i64>),
    /// `[k, action_dim]`
    Continuous(Array2<f32>),
}

/// k consecutive transitions of one env within one episode.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Where it was cut: env (column) and first step (row) of the rollout.
    pub env: usize,
    pub start: usize,
    /// `[k, obs_dim]`
    pub observations: Array2<f32>,
    pub actions: SegmentActions,
    /// `[k]`: the env's true rewards, for the oracle.
    pub true_rewards: Array1<f64>,
}

impl Segment {
    /// k
    pub fn len(&self) -> usize {
        self.true_rewards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.true_rewards.is_empty()
    }
    /// The undiscounted sum of the true rewards.
    pub fn true_return(&self) -> f64 {
        self.true_rewards.sum()
    }
}

fn check_length(segment_length: usize) -> Result<(), PreferenceError> {
    if segment_length == 0 {
        return Err(PreferenceError::InvalidField {
            field: "segment_length",
            message: "must be at least 1 transition, got 0".into(),
        });
    }
    Ok(())
}

/// Checks a configured segment length against the env's horizon (`max_episode_steps`):
/// a segment cannot be longer than an episode.
pub fn check_segment_length(segment_length: usize, horizon: u32) -> Result<(), PreferenceError> {
    check_length(segment_length)?;
    if segment_length > horizon as usize {
        return Err(PreferenceError::InvalidField {
            field: "segment_length",
            message: format!(
                "{segment_length} transitions is longer than an episode (the env's horizon is {horizon} steps)"
            ),
        });
    }
    Ok(())
}

/// Every valid start `(env, start)` of a segment of `segment_length` transitions, ordered by
/// env, then by start. Errors if `segment_length` is 0 or longer than the rollout, or if no
/// segment fits.
pub fn valid_starts(
    rollout: &RolloutView<'_>,
    segment_length: usize,
) -> Result<Vec<(usize, usize)>, PreferenceError> {
    check_length(segment_length)?;
    let steps = rollout.num_steps();
    if segment_length > steps {
        return Err(PreferenceError::InvalidField {
            field: "segment_length",
            message: format!(
                "{segment_length} transitions is longer than the rollout ({steps} steps per env)"
            ),
        });
    }
    let mut starts = Vec::new();
    let mut longest = 0;
    for i in 0..rollout.num_envs() {
        let run = rollout.runs(i);
        longest = longest.max(run.iter().copied().max().unwrap_or(0));
        starts.extend(
            run.iter()
                .enumerate()
                .filter(|&(_, &r)| r >= segment_length)
                .map(|(t, _)| (i, t)),
        );
    }
    if starts.is_empty() {
        return Err(PreferenceError::NoSegmentFits {
            segment_length,
            longest,
        });
    }
    Ok(starts)
}

/// The segment of env `env` from step `start`, `segment_length` transitions long; an error if
/// it is not in the rollout or crosses an episode boundary.
pub fn cut(
    rollout: &RolloutView<'_>,
    env: usize,
    start: usize,
    segment_length: usize,
) -> Result<Segment, PreferenceError> {
    check_length(segment_length)?;
    let (steps, envs) = (rollout.num_steps(), rollout.num_envs());
    let end = start
        .checked_add(segment_length)
        .filter(|&e| e <= steps && env < envs)
        .ok_or_else(|| {
            PreferenceError::InvalidSegment(format!(
                "env {env}, steps {start}..{start}+{segment_length} is outside a rollout of {steps} steps × {envs} envs"
            ))
        })?;
    if let Some(t) = (start..end).find(|&t| !rollout.is_valid(t, env)) {
        return Err(PreferenceError::InvalidSegment(format!(
            "env {env}, steps {start}..{end}: step {t} is not part of the rollout"
        )));
    }
    if let Some(t) = (start..end - 1).find(|&t| rollout.dones[[t, env]]) {
        return Err(PreferenceError::InvalidSegment(format!(
            "env {env}, steps {start}..{end} crosses an episode boundary (the episode ends at step {t})"
        )));
    }
    let rows = s![start..end, env];
    Ok(Segment {
        env,
        start,
        observations: rollout
            .observations
            .slice(s![start..end, env, ..])
            .to_owned(),
        actions: match rollout.actions {
            RolloutActions::Discrete(a) => SegmentActions::Discrete(a.slice(rows).to_owned()),
            RolloutActions::Continuous(a) => {
                SegmentActions::Continuous(a.slice(s![start..end, env, ..]).to_owned())
            }
        },
        true_rewards: rollout.true_rewards.slice(rows).to_owned(),
    })
}

/// A uniform integer in `0..n` (n ≥ 1), without modulo bias (Lemire's multiply-and-reject).
pub fn uniform_below(rng: &mut Stream, n: u64) -> u64 {
    use rand_core::Rng;
    assert!(n > 0, "uniform_below(0)");
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = rng.next_u64() as u128 * n as u128;
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// Draws segments uniformly among the valid starts of a rollout, with replacement, from its
/// own stream (e.g. `rng::stream(seed, "segments", 0)`).
pub struct SegmentSampler {
    stream: Stream,
}

impl SegmentSampler {
    pub fn new(stream: Stream) -> Self {
        Self { stream }
    }

    /// `count` starts `(env, start)`, each uniform over [`valid_starts`].
    pub fn sample_starts(
        &mut self,
        rollout: &RolloutView<'_>,
        segment_length: usize,
        count: usize,
    ) -> Result<Vec<(usize, usize)>, PreferenceError> {
        let starts = valid_starts(rollout, segment_length)?;
        Ok((0..count)
            .map(|_| starts[uniform_below(&mut self.stream, starts.len() as u64) as usize])
            .collect())
    }

    /// `queries` groups of `k` starts, the starts of a group distinct (a group is one query's
    /// K segments; a segment compared with itself is a tie that says nothing), each uniform
    /// over [`valid_starts`] given the group's earlier ones: a start already in its group is
    /// drawn again. Empty where fewer than `k` starts are valid.
    pub fn sample_distinct_starts(
        &mut self,
        rollout: &RolloutView<'_>,
        segment_length: usize,
        queries: usize,
        k: usize,
    ) -> Result<Vec<(usize, usize)>, PreferenceError> {
        let starts = valid_starts(rollout, segment_length)?;
        if starts.len() < k {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(queries * k);
        for _ in 0..queries {
            let group = out.len();
            while out.len() < group + k {
                let s = starts[uniform_below(&mut self.stream, starts.len() as u64) as usize];
                if !out[group..].contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// `count` segments, each uniform over the valid starts.
    pub fn sample(
        &mut self,
        rollout: &RolloutView<'_>,
        segment_length: usize,
        count: usize,
    ) -> Result<Vec<Segment>, PreferenceError> {
        self.sample_starts(rollout, segment_length, count)?
            .into_iter()
            .map(|(env, start)| cut(rollout, env, start, segment_length))
            .collect()
    }
}
