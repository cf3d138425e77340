//! The `[prefs]` table of a run's config: the label budget and schedule, the synthetic human,
//! the reward-model ensemble and the query strategy. A run whose config has this table is a
//! preference run: its learner is paid the learned reward (see [`crate::prefs`]).

use gradgym_envs::preference::{OracleConfig, RandomAnswer, check_segment_length};
use serde::{Deserialize, Serialize};

use super::{ConfigError, TrainConfig};
use crate::limits::{MOST_SIZE, MOST_STEPS, over};

/// The largest `reward_std`: the learned reward's returns, squared in float32 by the value
/// loss, stay finite far beyond it.
pub const MOST_REWARD_STD: f64 = 1e6;

/// The range the L2 strength's adaptation keeps a non-zero strength in
/// (the reward model's `adapted_l2`).
pub const L2_RANGE: (f64, f64) = (1e-8, 1.0);

/// How queries are chosen.
pub const QUERY_STRATEGIES: [&str; 2] = ["random", "disagreement"];
/// How elicitation and fitting are scheduled against policy optimisation.
pub const MODES: [&str; 2] = ["interleaved", "async"];

/// The preference-learning settings of a run (`[prefs]` in TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefsConfig {
    /// The label budget: queries answered by the synthetic human over the whole run.
    pub labels: u64,
    /// Transitions per segment (Christiano et al. 2017 used 1–2 s of MuJoCo time, about
    /// 25–50 steps; on the classic tasks' sharp rewards 10 fits a better model, see
    /// docs/preferences.md).
    pub segment_length: usize,
    /// Segments per query: 2 for pairwise comparisons, K > 2 for the K-way "best of K".
    pub num_segments: usize,
    /// `random` (uniform pairs) or `disagreement` (the pairs whose preference the ensemble
    /// members disagree on most, out of a pool `oversample` times larger).
    pub query: String,
    /// The candidate pool of `disagreement`, as a multiple of the queries wanted.
    pub oversample: usize,
    /// The share of the budget asked before the first update, on the initial policy's
    /// rollout (Christiano: 25%).
    pub initial_fraction: f64,
    /// The label rate after the initial batch falls as c/(T + c), T the env steps so far
    /// (Christiano: c = 2·10⁶ on MuJoCo). Unset: a fifth of `total_timesteps`.
    pub rate_timescale: Option<u64>,
    /// Labels are asked in rounds of at least this many; each round ends with a refit. Unset:
    /// max(10, labels / 32): about 25 rounds for a budget of 320 or more, fewer below.
    pub query_batch: Option<usize>,
    /// `interleaved` (queries, labels and fitting between rollouts; reproducible from the
    /// seed) or `async` (labelling and fitting on their own threads while the policy trains;
    /// faster, not reproducible).
    pub mode: String,
    /// Reward-model ensemble members, each on its own bootstrap resample (Christiano: 3).
    pub ensemble: usize,
    /// Whether the reward model sees the action, r̂(o, a) (Christiano), or the observation
    /// only, r̂(o).
    pub rm_action: bool,
    /// Standardise the reward model's observation input (mean and standard deviation of the
    /// initial rollout, clipped to ±5). Off by default: on FixedHorizonCartPole the raw input
    /// gives the better model (see docs/preferences.md).
    pub rm_standardize: bool,
    /// Hidden widths of each member's MLP r(o, a) (Christiano's MuJoCo predictor: two layers of
    /// 64).
    pub hidden_sizes: Vec<usize>,
    /// Adam's learning rate for the reward model.
    pub rm_learning_rate: f64,
    /// Labels per reward-model gradient step.
    pub fit_batch: usize,
    /// Gradient steps per member after the initial batch.
    pub initial_fit_steps: usize,
    /// Gradient steps per member after each later round.
    pub fit_steps: usize,
    /// Initial L2 strength; adapted after each fit so that each member's validation loss stays
    /// within [`l2_band`](Self::l2_band) × its training loss.
    pub l2: f64,
    /// The band of validation / training loss the L2 strength is kept in (Christiano: 1.1–1.5).
    pub l2_band: [f64; 2],
    /// The standard deviation the learned reward is normalised to (after zero mean), over the
    /// transitions of recent queries. Christiano et al. normalise to 1; PPO with CleanRL's
    /// CartPole config fails on rewards twice the env's scale, and at 1 the rare in-bounds steps
    /// of FixedHorizonCartPole are paid 10× the env's reward, so the default is 0.05 (measured,
    /// docs/preferences.md).
    pub reward_std: f64,
    /// The synthetic human's temperature T: p(σ¹ ≻ σ²) = σ((R¹ − R²)/T); 0 = a perfect oracle.
    pub temperature: f64,
    /// Segments whose true returns differ by at most this are a tie, μ = (½, ½).
    pub margin: f64,
    /// The probability of a uniformly random answer.
    pub epsilon: f64,
    /// The human's myopic discount γ within a segment (1: none).
    pub discount: f64,
}

impl Default for PrefsConfig {
    fn default() -> Self {
        Self {
            labels: 1000,
            segment_length: 10,
            num_segments: 2,
            query: "disagreement".into(),
            oversample: 4,
            initial_fraction: 0.25,
            rate_timescale: None,
            query_batch: None,
            mode: "interleaved".into(),
            ensemble: 3,
            rm_action: true,
            rm_standardize: false,
            hidden_sizes: vec![64, 64],
            rm_learning_rate: 3e-3,
            fit_batch: 16,
            initial_fit_steps: 500,
            fit_steps: 50,
            l2: 1e-4,
            l2_band: [1.1, 1.5],
            reward_std: 0.05,
            temperature: 0.0,
            margin: 0.0,
            epsilon: 0.0,
            discount: 1.0,
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl PrefsConfig {
    /// The synthetic human these settings describe.
    pub fn oracle(&self) -> OracleConfig {
        OracleConfig {
            temperature: self.temperature,
            margin: self.margin,
            epsilon: self.epsilon,
            discount: self.discount,
            random_answer: RandomAnswer::Preference,
        }
    }

    /// Whether queries come from the ensemble's disagreement.
    pub fn disagreement(&self) -> bool {
        self.query == "disagreement"
    }

    /// Whether elicitation and fitting run on their own threads.
    pub fn is_async(&self) -> bool {
        self.mode == "async"
    }

    /// c of the label rate c/(T + c).
    pub fn timescale(&self, total_timesteps: u64) -> f64 {
        self.rate_timescale.unwrap_or((total_timesteps / 5).max(1)) as f64
    }

    /// Labels per round after the initial batch.
    pub fn round_size(&self) -> u64 {
        self.query_batch
            .map_or((self.labels / 32).max(10), |b| b as u64)
    }

    /// Rollouts the hook keeps so that a segment may span them: 1 where a segment fits in one
    /// (`segment_length` ≤ `num_steps`, or REINFORCE's whole episodes), else enough to hold
    /// one that starts anywhere in the oldest.
    pub fn rollout_window(&self, run: &TrainConfig) -> usize {
        if run.algo == super::Algo::Reinforce || self.segment_length <= run.num_steps {
            1
        } else {
            self.segment_length.div_ceil(run.num_steps) + 1
        }
    }

    /// Bytes the preference loop holds at its largest, roughly (u128, so no product
    /// overflows), in three parts: (the labels: every label's K segments of reward-model input
    /// rows, f32, and its μ; one round's candidate queries, the initial batch or `oversample`
    /// times a later round under `disagreement`, with their rows and true rewards; the window
    /// of recent rollouts segments are cut from, each transition's observation, action, true
    /// reward, flags and input row, twice while queries are cut, as they are put end to end).
    pub fn memory_parts(&self, run: &TrainConfig) -> (u128, u128, u128) {
        let Ok(spec) = gradgym_envs::spec(&run.env_id) else {
            return (0, 0, 0);
        };
        let (action, action_dim) = match &spec.action_space {
            gradgym_envs::Space::Discrete { n } => (*n as u128, 0),
            gradgym_envs::Space::Box { low, .. } => (low.len() as u128, low.len() as u128),
        };
        let obs_dim = spec.observation_space.dim() as u128;
        let dim = obs_dim + if self.rm_action { action } else { 0 };
        let rows = self.num_segments as u128 * self.segment_length as u128;
        let label = rows * dim * 4 + self.num_segments as u128 * 8 + 64;
        let query = rows * (dim * 4 + 8) + 64;
        // The initial batch has no model to rank a pool by; later rounds do.
        let pool = if self.disagreement() {
            self.oversample as u128
        } else {
            1
        };
        let round = u128::from(self.initial_labels()).max(u128::from(self.round_size()) * pool);
        let transition = 2 * (obs_dim * 4 + 8 + action_dim * 4 + 8 + 2 + dim * 4);
        let window = self.rollout_window(run) as u128
            * run.num_envs as u128
            * run.rollout_steps() as u128
            * transition;
        (u128::from(self.labels) * label, round * query, window)
    }

    /// The sum of [`PrefsConfig::memory_parts`].
    pub fn memory_estimate(&self, run: &TrainConfig) -> u128 {
        let (labels, round, window) = self.memory_parts(run);
        labels + round + window
    }

    /// Labels of the initial batch.
    pub fn initial_labels(&self) -> u64 {
        ((self.labels as f64 * self.initial_fraction).round() as u64).clamp(1, self.labels)
    }

    /// Whether the rollouts segments are cut from can ever hold a query, known before the run
    /// starts: a segment no longer than the steps per env the whole run collects (PPO and
    /// A2C: whole rollouts of `num_steps`; REINFORCE's episodes vary, so it is not checked
    /// there), and K distinct starts within the window of rollouts kept, on a horizon no
    /// episode boundary cuts. A run that fails either would train to its end and then fail
    /// for want of labels.
    fn check_room(&self, run: &TrainConfig) -> Result<(), ConfigError> {
        let len = self.segment_length as u64;
        let mut window = self.rollout_window(run) as u64 * run.rollout_steps();
        if run.algo != super::Algo::Reinforce {
            let per_env = run.num_iterations().saturating_mul(run.num_steps as u64);
            if len > per_env {
                return Err(bad(
                    "prefs.segment_length",
                    format!(
                        "a segment of {len} transitions is longer than the {per_env} steps per \
                         env the whole run collects ({} rollouts of `num_steps` = {}), so none \
                         could be cut; lower prefs.segment_length, or raise total_timesteps",
                        run.num_iterations(),
                        run.num_steps
                    ),
                ));
            }
            window = window.min(per_env);
        }
        let starts = window.saturating_sub(len).saturating_add(1);
        let most = (run.num_envs as u64).saturating_mul(starts);
        if len <= window && self.num_segments as u64 > most {
            return Err(bad(
                "prefs.num_segments",
                format!(
                    "a query compares K = {} distinct segments, but the rollouts they are cut \
                     from hold at most {most} ({} envs × {starts} starts of a {len}-transition \
                     segment in {window} steps per env); lower prefs.num_segments, or raise \
                     num_envs (or num_steps and total_timesteps, which lengthen the steps kept)",
                    self.num_segments, run.num_envs
                ),
            ));
        }
        Ok(())
    }

    /// Checks the table against the rest of the run's config; errors name `prefs.<field>`.
    pub fn validate(&self, run: &TrainConfig) -> Result<(), ConfigError> {
        let mut sizes = vec![
            (
                "prefs.labels",
                usize::try_from(self.labels).unwrap_or(usize::MAX),
            ),
            ("prefs.num_segments", self.num_segments),
            ("prefs.oversample", self.oversample),
            ("prefs.query_batch", self.query_batch.unwrap_or(0)),
            ("prefs.ensemble", self.ensemble),
            ("prefs.fit_batch", self.fit_batch),
        ];
        sizes.extend(self.hidden_sizes.iter().map(|&h| ("prefs.hidden_sizes", h)));
        let steps = [
            ("prefs.initial_fit_steps", self.initial_fit_steps),
            ("prefs.fit_steps", self.fit_steps),
        ];
        if let Some((f, m)) = over(&sizes, MOST_SIZE).or_else(|| over(&steps, MOST_STEPS)) {
            return Err(bad(f, m));
        }
        // The ensemble's members together: each within the cap, all of them need not be.
        if let Some(m) = crate::limits::mlp_too_many_parameters(&self.hidden_sizes, self.ensemble) {
            let field = if crate::limits::mlp_too_many_parameters(&self.hidden_sizes, 1).is_some() {
                "prefs.hidden_sizes"
            } else {
                "prefs.ensemble"
            };
            return Err(bad(field, m));
        }
        if self.labels == 0 {
            return Err(bad(
                "prefs.labels",
                "the label budget must be at least 1 (a run without labels is a plain \
                 `gradgym train` on the true reward)",
            ));
        }
        let horizon = gradgym_envs::spec(&run.env_id)
            .map_err(|e| bad("env_id", e.to_string()))?
            .max_episode_steps;
        check_segment_length(self.segment_length, horizon)
            .map_err(|e| bad("prefs.segment_length", e.to_string()))?;
        if self.num_segments < 2 {
            return Err(bad(
                "prefs.num_segments",
                format!(
                    "a query compares K ≥ 2 segments, got K = {}",
                    self.num_segments
                ),
            ));
        }
        self.check_room(run)?;
        if !QUERY_STRATEGIES.contains(&self.query.as_str()) {
            return Err(bad(
                "prefs.query",
                format!(
                    "unknown query strategy `{}`; valid: {}",
                    self.query,
                    QUERY_STRATEGIES.join(", ")
                ),
            ));
        }
        if !MODES.contains(&self.mode.as_str()) {
            return Err(bad(
                "prefs.mode",
                format!("unknown mode `{}`; valid: {}", self.mode, MODES.join(", ")),
            ));
        }
        for (field, value) in [
            ("prefs.oversample", self.oversample),
            ("prefs.query_batch", self.round_size() as usize),
            ("prefs.ensemble", self.ensemble),
            ("prefs.fit_batch", self.fit_batch),
        ] {
            if value == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if self.hidden_sizes.contains(&0) {
            return Err(bad(
                "prefs.hidden_sizes",
                format!("every width must be ≥ 1 (got {:?})", self.hidden_sizes),
            ));
        }
        if !(self.initial_fraction > 0.0 && self.initial_fraction <= 1.0) {
            return Err(bad(
                "prefs.initial_fraction",
                format!("must be in (0, 1] (got {})", self.initial_fraction),
            ));
        }
        if self.rate_timescale == Some(0) {
            return Err(bad("prefs.rate_timescale", "must be at least 1 step"));
        }
        if !(self.rm_learning_rate.is_finite() && self.rm_learning_rate > 0.0) {
            return Err(bad(
                "prefs.rm_learning_rate",
                format!("must be a positive number (got {})", self.rm_learning_rate),
            ));
        }
        if !(self.reward_std > 0.0 && self.reward_std <= MOST_REWARD_STD) {
            return Err(bad(
                "prefs.reward_std",
                format!(
                    "must be in (0, {MOST_REWARD_STD:e}] (got {}): the learned reward is paid \
                     to the learner in float32, and its returns' squares must stay finite",
                    self.reward_std
                ),
            ));
        }
        let (lo, hi) = L2_RANGE;
        if !(self.l2 == 0.0 || (lo..=hi).contains(&self.l2)) {
            return Err(bad(
                "prefs.l2",
                format!(
                    "must be 0 (no L2) or in [{lo:e}, {hi}], the range its adaptation keeps \
                     (got {})",
                    self.l2
                ),
            ));
        }
        if self.query == "disagreement" && self.ensemble < 2 {
            return Err(bad(
                "prefs.ensemble",
                format!(
                    "`query = \"disagreement\"` ranks queries by the spread of the ensemble's \
                     members, which one member does not have (got ensemble = {}); use \
                     ensemble ≥ 2 or `query = \"random\"`",
                    self.ensemble
                ),
            ));
        }
        let [lo, hi] = self.l2_band;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi) {
            return Err(bad(
                "prefs.l2_band",
                format!("must be [low, high] with 0 < low < high (got [{lo}, {hi}])"),
            ));
        }
        self.oracle().validate().map_err(|e| {
            let field = match &e {
                gradgym_envs::preference::PreferenceError::InvalidField { field, .. } => {
                    match *field {
                        "temperature" => "prefs.temperature",
                        "margin" => "prefs.margin",
                        "epsilon" => "prefs.epsilon",
                        _ => "prefs.discount",
                    }
                }
                _ => "prefs",
            };
            bad(field, e.to_string())
        })
    }
}
