//! The preference loop as a [`Hook`] of the training loop: between collection and update of
//! every iteration it may ask the synthetic human for labels on segments of the new rollout,
//! refits the reward model on all labels so far, and replaces the rollout's rewards (the env's
//! true ones on entry) with the model's normalised prediction. The learner never sees the
//! true reward; the metrics still log it (`episodic_return` is the env's return).
//!
//! **Schedule.** Before the first update, `initial_fraction` of the budget N is asked on the
//! initial policy's rollout. After it, labels arrive at a rate ∝ c/(T + c) (T: env steps so
//! far), so the count asked by step T is
//!
//!   N₀ + (N − N₀) · ln(1 + T/c) / ln(1 + T_end/c),
//!
//! reaching N at the last rollout T_end. Labels are asked in rounds of at least `query_batch`
//! (the last round takes what is left); each round is followed by a fit.
//!
//! **Modes.** `interleaved`: queries, labels and fit run in this thread between collection and
//! update, every draw from the run's own streams, so the run is a function of config and
//! seed. `async`: the human answers on one thread and the ensemble fits on another, as in the
//! paper; the learner goes on with the latest fitted snapshot (only the initial fit is
//! waited for), so what a run produces depends on thread timing.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use gradgym_envs::preference::{
    PreferenceError, RolloutActions, RolloutView, SegmentSampler, SyntheticHuman, valid_starts,
};
use gradgym_envs::rng::{self, Stream};
use ndarray::Array2;

use crate::buffer::{Rollout, flat};
use crate::config::prefs::PrefsConfig;
use crate::config::{Algo, TrainConfig};
use crate::hook::{Collected, Hook};
use crate::metrics::Cell;
use crate::prefs::reward_model::{Features, FitReport, Label, RewardModel, Scratch};
use crate::prefs::stats::{pearson, spearman};

/// The metric columns a preference run adds.
pub const COLUMNS: [&str; 8] = [
    "labels_used",
    "learned_episodic_return",
    "rm_accuracy",
    "rm_train_loss",
    "rm_val_loss",
    "rm_l2",
    "reward_pearson",
    "reward_spearman",
];

/// A query before the human answers it.
struct Query {
    iteration: u64,
    global_step: u64,
    /// `[K · k, dim]`
    rows: Vec<f32>,
    /// The segments' true rewards, `[K][k]`.
    true_rewards: Vec<Vec<f64>>,
    /// The ensemble's disagreement on it (`disagreement` queries).
    score: Option<f64>,
}

/// `labels.csv`: one row per answered query.
struct LabelsCsv {
    out: BufWriter<File>,
    count: u64,
}

impl LabelsCsv {
    fn create(path: &Path, k: usize) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let mut header = vec![
            "label".to_string(),
            "iteration".into(),
            "global_step".into(),
        ];
        header.extend((0..k).map(|j| format!("return_{j}")));
        header.extend((0..k).map(|j| format!("mu_{j}")));
        header.extend(["choice", "probability", "random", "query_score"].map(String::from));
        writeln!(out, "{}", header.join(","))?;
        Ok(Self { out, count: 0 })
    }

    fn write(&mut self, q: &Query, answer: &gradgym_envs::preference::Answer) -> Result<()> {
        self.count += 1;
        let mut cells = vec![
            self.count.to_string(),
            q.iteration.to_string(),
            q.global_step.to_string(),
        ];
        cells.extend(answer.returns.iter().map(|r| Cell::from(*r).to_string()));
        cells.extend(answer.mu.iter().map(|m| Cell::from(*m).to_string()));
        cells.push(answer.choice.map_or("tie".into(), |c| c.to_string()));
        cells.push(Cell::from(answer.probability).to_string());
        cells.push(answer.random.to_string());
        cells.push(q.score.map_or(String::new(), |s| Cell::from(s).to_string()));
        writeln!(self.out, "{}", cells.join(","))?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}

/// The human: answers queries, writes `labels.csv`, returns the labels.
struct Labeller {
    human: SyntheticHuman,
    csv: Option<LabelsCsv>,
    /// Queries whose segments' returns were all within the tie margin (answered a tie, or
    /// at random under ε), shared with the loop (the labeller may run on its own thread).
    ties: Arc<std::sync::atomic::AtomicU64>,
}

impl Labeller {
    fn answer(&mut self, queries: Vec<Query>) -> Result<Vec<Label>> {
        let mut labels = Vec::with_capacity(queries.len());
        for q in queries {
            let rewards: Vec<&[f64]> = q.true_rewards.iter().map(Vec::as_slice).collect();
            let answer = self.human.choose(&rewards)?;
            if self.human.within_margin(&answer.returns) {
                self.ties.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(csv) = &mut self.csv {
                csv.write(&q, &answer)?;
            }
            labels.push(Label {
                rows: q.rows,
                mu: answer.mu,
                choice: answer.choice,
            });
        }
        if let Some(csv) = &mut self.csv {
            csv.flush()?;
        }
        Ok(labels)
    }
}

/// The fitter: adds labels to the ensemble and fits it.
struct Fitter {
    model: RewardModel,
    bootstrap: Stream,
    fit_rng: Stream,
    scratch: Scratch,
    fit_batch: usize,
    rounds: u64,
    initial_steps: usize,
    steps: usize,
}

impl Fitter {
    fn fit(&mut self, labels: Vec<Label>) -> FitReport {
        self.model.add_labels(labels, &mut self.bootstrap);
        let steps = if self.rounds == 0 {
            self.initial_steps
        } else {
            self.steps
        };
        self.rounds += 1;
        self.model
            .fit(steps, self.fit_batch, &mut self.fit_rng, &mut self.scratch)
    }
}

/// What the learner reads of the model: a copy of its weights and its last fit.
#[derive(Clone)]
struct Snapshot {
    model: RewardModel,
    report: FitReport,
    labels: u64,
}

// One engine per run, so the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Interleaved {
        labeller: Labeller,
        fitter: Fitter,
        report: FitReport,
    },
    Async {
        queries: Option<mpsc::Sender<Vec<Query>>>,
        latest: Arc<Mutex<Option<Snapshot>>>,
        current: Option<Snapshot>,
        threads: Vec<JoinHandle<Result<()>>>,
    },
}

/// One rollout as the queries see it.
struct Stored {
    obs: ndarray::Array3<f32>,
    actions_discrete: Array2<i64>,
    actions_continuous: ndarray::Array3<f32>,
    true_rewards: Array2<f64>,
    dones: Array2<bool>,
    valid: Array2<bool>,
    /// `[T · N, dim]`
    rows: Vec<f32>,
}

/// Rollouts in a row that the initial batch may wait for before the run fails.
const MAX_DEFERRED: u64 = 20;

/// The preference loop of one run.
pub struct PrefsLoop {
    prefs: PrefsConfig,
    features: Features,
    sampler: SegmentSampler,
    engine: Engine,
    scratch: Scratch,
    /// Labels asked so far.
    asked: u64,
    /// Env steps of the last rollout.
    end_step: u64,
    episodic: bool,
    learned_sums: Vec<f64>,
    /// The latest rollouts, oldest first: segments are cut from their concatenation, so a
    /// segment may span rollouts shorter than itself (A2C's 5-step rollouts).
    history: std::collections::VecDeque<Stored>,
    /// How many rollouts `history` keeps: 1 when a segment fits in one rollout (and always for
    /// REINFORCE, whose rollouts are separate episodes), else ⌈k / T⌉ + 1.
    window: usize,
    discrete: bool,
    /// Iterations whose due labels found no segment that fits.
    deferred: u64,
    /// Those of them whose kept rollouts held fewer steps than a segment.
    filling: u64,
    /// The initial model's layout (what `async` holds before its first fit).
    unfitted: RewardModel,
    /// Ties among the labels answered so far.
    ties: Arc<std::sync::atomic::AtomicU64>,
}

impl PrefsLoop {
    /// The loop for `config` (whose `prefs` table must be set); `labels_csv` is where the
    /// answered queries are written, if anywhere.
    pub fn new(config: &TrainConfig, labels_csv: Option<&Path>) -> Result<Self> {
        let prefs = config
            .prefs
            .clone()
            .ok_or_else(|| anyhow!("the config has no [prefs] table"))?;
        prefs.validate(config)?;
        let spec = gradgym_envs::spec(&config.env_id)?;
        let obs_dim = spec.observation_space.dim();
        let mut features = Features::new(obs_dim, &spec.action_space);
        if !prefs.rm_action {
            features = features.state_only();
        }
        let seed = config.seed;
        let model = RewardModel::new(
            features.clone(),
            &prefs.hidden_sizes,
            prefs.ensemble,
            prefs.segment_length,
            prefs.num_segments,
            prefs.rm_learning_rate,
            prefs.l2,
            prefs.l2_band,
            &mut rng::stream(seed, "prefs/init", 0),
        );
        let unfitted = model.clone_without_labels();
        let ties = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let labeller = Labeller {
            human: SyntheticHuman::new(prefs.oracle(), rng::stream(seed, "prefs/oracle", 0))?,
            csv: labels_csv
                .map(|p| LabelsCsv::create(p, prefs.num_segments))
                .transpose()?,
            ties: ties.clone(),
        };
        let fitter = Fitter {
            model,
            bootstrap: rng::stream(seed, "prefs/bootstrap", 0),
            fit_rng: rng::stream(seed, "prefs/fit", 0),
            scratch: Scratch::default(),
            fit_batch: prefs.fit_batch,
            rounds: 0,
            initial_steps: prefs.initial_fit_steps,
            steps: prefs.fit_steps,
        };
        let engine = if prefs.is_async() {
            spawn(labeller, fitter)
        } else {
            Engine::Interleaved {
                labeller,
                fitter,
                report: FitReport::default(),
            }
        };
        let window = prefs.rollout_window(config);
        let end_step = if config.algo == Algo::Reinforce {
            config.total_timesteps
        } else {
            config.num_iterations() * config.batch_size() as u64
        };
        Ok(Self {
            features,
            sampler: SegmentSampler::new(rng::stream(seed, "prefs/segments", 0)),
            engine,
            scratch: Scratch::default(),
            asked: 0,
            end_step,
            episodic: config.algo == Algo::Reinforce,
            learned_sums: vec![0.0; config.num_envs],
            history: std::collections::VecDeque::new(),
            window,
            discrete: spec.action_space.is_discrete(),
            deferred: 0,
            filling: 0,
            unfitted,
            ties,
            prefs,
        })
    }

    /// Labels that should have been asked by env step `t` (after the initial batch).
    pub fn scheduled(&self, t: u64) -> u64 {
        labels_by(
            t,
            self.prefs.initial_labels(),
            self.prefs.labels,
            self.prefs.timescale(self.end_step),
            self.end_step,
        )
    }

    /// Why a run that ended with fewer labels asked than its budget cannot be read at that
    /// budget (`None` once the whole budget was asked): in some rollouts, the last among them,
    /// too few segments lay within one episode, and the labels due there went unasked. With
    /// none asked the policy learned from a reward model that never saw a label; with some, a
    /// sweep would place the run at a label budget it did not spend.
    pub fn unspent_labels(&self) -> Option<String> {
        let (k, len) = (self.prefs.num_segments, self.prefs.segment_length);
        let cause = format!(
            "fewer than `prefs.num_segments` = {k} stretches of `prefs.segment_length` = {len} \
             transitions lay within one episode of the steps collected (episodes shorter than a \
             segment, a run too short for the rollouts a segment spans, or episode ends cutting \
             the rollouts kept)"
        );
        if self.asked == 0 {
            return Some(format!(
                "no preference label was asked in the whole run ({} rollouts): {cause}, so the \
                 policy learned from a reward model that never saw a label; lower \
                 prefs.segment_length, or train longer",
                self.deferred
            ));
        }
        (self.asked < self.prefs.labels).then(|| {
            format!(
                "only {} of the {} labels of `prefs.labels` were asked: in {} rollouts, the \
                 last among them, {cause}, so the labels due there went unasked and the run \
                 cannot stand for its label budget; lower prefs.segment_length, or train longer",
                self.asked, self.prefs.labels, self.deferred
            )
        })
    }

    /// What a run none of whose queries compared segments of different returns should be told
    /// (after [`Self::finish`]): every label was a tie, or under ε a random answer, so its
    /// reward model learned no preference and the learner's reward carried none. An env that
    /// pays the same reward on every step (CartPole-v1, MountainCar-v0) gives equal returns to
    /// every pair of equal-length segments.
    pub fn all_ties(&self) -> Option<String> {
        let ties = self.ties.load(std::sync::atomic::Ordering::Relaxed);
        (self.asked > 0 && ties == self.asked).then(|| {
            format!(
                "all {ties} labels were ties: every query's segments had returns within \
                 `prefs.margin` = {} of each other, so each answer was a tie (or, under \
                 `prefs.epsilon`, a coin flip), the reward model learned no preference and the \
                 policy was paid a reward that carried none; an env that pays the same reward on \
                 every step (CartPole-v1, MountainCar-v0) does this, and its fixed-horizon \
                 variant (FixedHorizonCartPole-v0, FixedHorizonMountainCar-v0) does not",
                self.prefs.margin
            )
        })
    }

    /// Joins the async threads (a no-op when interleaved) and flushes `labels.csv`.
    pub fn finish(&mut self) -> Result<()> {
        if let Engine::Async {
            queries, threads, ..
        } = &mut self.engine
        {
            queries.take();
            for t in threads.drain(..) {
                t.join()
                    .map_err(|_| anyhow!("a preference thread panicked"))??;
            }
        }
        Ok(())
    }

    /// The reward-model input rows of every transition of `rollout`, `[T · N, dim]`.
    fn rows(&self, rollout: &Rollout) -> Vec<f32> {
        let (t, n) = (rollout.shape.num_steps, rollout.shape.num_envs);
        let mut x = Vec::with_capacity(t * n * self.features.dim());
        for s in 0..t {
            for i in 0..n {
                let obs = rollout.obs.slice(ndarray::s![s, i, ..]);
                let obs = obs.as_slice().expect("contiguous");
                if rollout.discrete {
                    self.features
                        .push_discrete(obs, rollout.actions_discrete[[s, i]], &mut x);
                } else {
                    let a = rollout.actions_continuous.slice(ndarray::s![s, i, ..]);
                    self.features
                        .push_continuous(obs, a.as_slice().expect("contiguous"), &mut x);
                }
            }
        }
        x
    }

    /// Remembers this rollout (and its rows) for the queries, dropping the oldest beyond the
    /// window.
    fn remember(&mut self, rollout: &Rollout, true_rewards: Array2<f64>, rows: Vec<f32>) {
        self.history.push_back(Stored {
            obs: rollout.obs.clone(),
            actions_discrete: rollout.actions_discrete.clone(),
            actions_continuous: rollout.actions_continuous.clone(),
            true_rewards,
            dones: rollout.dones.clone(),
            valid: rollout.valid.clone(),
            rows,
        });
        while self.history.len() > self.window {
            self.history.pop_front();
        }
    }

    /// `count` queries cut from the remembered rollouts (for `disagreement`, the most disputed
    /// of a pool `oversample` times larger, scored by `model`). Empty when no segment fits yet.
    fn queries(
        &mut self,
        iteration: u64,
        global_step: u64,
        count: usize,
        model: Option<&RewardModel>,
    ) -> Result<Vec<Query>> {
        use ndarray::{Axis, concatenate};
        let h = &self.history;
        let cat3 = |f: &dyn Fn(&Stored) -> ndarray::ArrayView3<f32>| {
            concatenate(Axis(0), &h.iter().map(f).collect::<Vec<_>>()).expect("same shapes")
        };
        let obs = cat3(&|r| r.obs.view());
        let actions_continuous = cat3(&|r| r.actions_continuous.view());
        let actions_discrete = concatenate(
            Axis(0),
            &h.iter()
                .map(|r| r.actions_discrete.view())
                .collect::<Vec<_>>(),
        )
        .expect("same shapes");
        let true_rewards = concatenate(
            Axis(0),
            &h.iter().map(|r| r.true_rewards.view()).collect::<Vec<_>>(),
        )
        .expect("same shapes");
        let dones = concatenate(
            Axis(0),
            &h.iter().map(|r| r.dones.view()).collect::<Vec<_>>(),
        )
        .expect("same shapes");
        let valid = concatenate(
            Axis(0),
            &h.iter().map(|r| r.valid.view()).collect::<Vec<_>>(),
        )
        .expect("same shapes");
        let rows: Vec<f32> = h.iter().flat_map(|r| r.rows.iter().copied()).collect();
        let view = RolloutView::new(
            obs.view(),
            if self.discrete {
                RolloutActions::Discrete(actions_discrete.view())
            } else {
                RolloutActions::Continuous(actions_continuous.view())
            },
            true_rewards.view(),
            dones.view(),
        )?
        .with_valid(valid.view())?;
        let k = self.prefs.segment_length;
        match valid_starts(&view, k) {
            Ok(_) => {}
            // No stretch is long enough yet (the window is still filling, or an episode
            // boundary cuts every env's steps): the labels stay due for a later rollout.
            Err(PreferenceError::NoSegmentFits { .. }) => return Ok(Vec::new()),
            Err(PreferenceError::InvalidField { .. }) if view.num_steps() < k => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        }
        let kk = self.prefs.num_segments;
        let pool = if self.prefs.disagreement() && model.is_some() {
            count * self.prefs.oversample
        } else {
            count
        };
        let starts = self.sampler.sample_distinct_starts(&view, k, pool, kk)?;
        // Fewer stretches than a query compares: the labels stay due, as above.
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let n = view.num_envs();
        let dim = self.features.dim();
        let mut candidates: Vec<Query> = starts
            .chunks_exact(kk)
            .map(|tuple| {
                let mut q_rows = Vec::with_capacity(kk * k * dim);
                let mut rewards = Vec::with_capacity(kk);
                for &(env, start) in tuple {
                    for t in start..start + k {
                        let r = (t * n + env) * dim;
                        q_rows.extend_from_slice(&rows[r..r + dim]);
                    }
                    rewards.push((start..start + k).map(|t| true_rewards[[t, env]]).collect());
                }
                Query {
                    iteration,
                    global_step,
                    rows: q_rows,
                    true_rewards: rewards,
                    score: None,
                }
            })
            .collect();
        if let (true, Some(model)) = (self.prefs.disagreement(), model) {
            for q in &mut candidates {
                q.score = Some(model.disagreement(&q.rows, &mut self.scratch));
            }
            candidates = most_disputed(candidates, count);
        }
        Ok(candidates)
    }

    /// Counts a round whose labels found no segment; the initial batch may wait only so long,
    /// counted from the first rollout whose kept steps could hold a segment (a segment longer
    /// than a rollout waits for ⌈segment_length / num_steps⌉ of them first, which can be more
    /// than [`MAX_DEFERRED`]).
    fn defer(&mut self, iteration: u64) -> Result<()> {
        self.deferred += 1;
        let held: usize = self.history.iter().map(|r| r.dones.nrows()).sum();
        if held < self.prefs.segment_length {
            self.filling += 1;
        }
        if self.asked == 0 && self.deferred - self.filling > MAX_DEFERRED {
            return Err(anyhow!(
                "iteration {iteration}: in {MAX_DEFERRED} rollouts fewer than \
                 `prefs.num_segments` = {} stretches of `prefs.segment_length` = {} \
                 transitions lay within one episode, so the initial labels could not be asked; \
                 episodes are shorter than a segment: lower prefs.segment_length",
                self.prefs.num_segments,
                self.prefs.segment_length
            ));
        }
        Ok(())
    }

    /// How many labels this iteration asks for.
    fn due(&self, batch: &Collected<'_>) -> u64 {
        let last = batch.global_step >= self.end_step;
        if self.asked == 0 {
            // The initial batch; on the last rollout (its segments found no room earlier, or
            // the run is one rollout long), the whole budget, which the schedule reaches there.
            let initial = self.prefs.initial_labels();
            return if last {
                self.scheduled(batch.global_step).max(initial)
            } else {
                initial
            };
        }
        let due = self.scheduled(batch.global_step).saturating_sub(self.asked);
        if due >= self.prefs.round_size() || (last && due > 0) {
            due
        } else {
            0
        }
    }
}

/// The labels asked by env step `t`: the initial `n0`, then a rate ∝ c/(T + c) that brings the
/// count to `n` at `t_end`: n0 + (n − n0) · ln(1 + t/c) / ln(1 + t_end/c), rounded down.
pub fn labels_by(t: u64, n0: u64, n: u64, c: f64, t_end: u64) -> u64 {
    let share = (1.0 + t as f64 / c).ln() / (1.0 + t_end as f64 / c).ln();
    ((n0 as f64 + (n - n0) as f64 * share.min(1.0)).floor() as u64).min(n)
}

/// The `count` queries of highest disagreement, most disputed first; the sort is stable, so
/// equal scores keep pool order.
fn most_disputed(mut candidates: Vec<Query>, count: usize) -> Vec<Query> {
    candidates.sort_by(|a, b| b.score.partial_cmp(&a.score).expect("finite scores"));
    candidates.truncate(count);
    candidates
}

fn spawn(mut labeller: Labeller, mut fitter: Fitter) -> Engine {
    let (query_tx, query_rx) = mpsc::channel::<Vec<Query>>();
    let (label_tx, label_rx) = mpsc::channel::<Vec<Label>>();
    let latest: Arc<Mutex<Option<Snapshot>>> = Arc::new(Mutex::new(None));
    let human = std::thread::spawn(move || -> Result<()> {
        for queries in query_rx {
            let labels = labeller.answer(queries)?;
            if label_tx.send(labels).is_err() {
                break;
            }
        }
        Ok(())
    });
    let published = latest.clone();
    let fit = std::thread::spawn(move || -> Result<()> {
        while let Ok(mut labels) = label_rx.recv() {
            // Whatever else has been answered meanwhile joins this fit.
            while let Ok(more) = label_rx.try_recv() {
                labels.extend(more);
            }
            let report = fitter.fit(labels);
            let snapshot = Snapshot {
                model: fitter.model.clone_without_labels(),
                report,
                labels: fitter.model.labels.len() as u64,
            };
            *published.lock().expect("snapshot lock") = Some(snapshot);
        }
        Ok(())
    });
    Engine::Async {
        queries: Some(query_tx),
        latest,
        current: None,
        threads: vec![human, fit],
    }
}

impl Hook for PrefsLoop {
    fn columns(&self) -> Vec<String> {
        COLUMNS.iter().map(|c| c.to_string()).collect()
    }

    fn after_collect(&mut self, batch: Collected<'_>) -> Result<()> {
        let rollout = &*batch.rollout;
        if self.prefs.rm_standardize && self.features.scale.is_none() {
            let valid = flat(&rollout.valid);
            let obs: Vec<f32> = flat(&rollout.obs)
                .chunks_exact(rollout.obs_dim)
                .zip(valid)
                .filter(|(_, v)| **v)
                .flat_map(|(o, _)| o.iter().copied())
                .collect();
            self.features.fit_scale(&obs);
        }
        let true_rewards = rollout.rewards.mapv(|r| r as f64);
        let rows = self.rows(rollout);
        self.remember(rollout, true_rewards.clone(), rows.clone());
        let due = self.due(&batch) as usize;
        let fitted = self.asked > 0;
        // Query, label and fit; then the model the learner is paid by this iteration.
        let (model, report, labels_used) = match &mut self.engine {
            Engine::Interleaved { .. } => {
                if due > 0 {
                    let queries = {
                        let model = match &self.engine {
                            Engine::Interleaved { fitter, .. } if fitted => {
                                Some(fitter.model.clone_without_labels())
                            }
                            _ => None,
                        };
                        self.queries(batch.iteration, batch.global_step, due, model.as_ref())?
                    };
                    self.asked += queries.len() as u64;
                    let queries_empty = queries.is_empty();
                    if queries_empty {
                        self.defer(batch.iteration)?;
                    }
                    let Engine::Interleaved {
                        labeller,
                        fitter,
                        report,
                    } = &mut self.engine
                    else {
                        unreachable!()
                    };
                    if !queries_empty {
                        let labels = labeller.answer(queries)?;
                        *report = fitter.fit(labels);
                    }
                }
                let Engine::Interleaved { fitter, report, .. } = &self.engine else {
                    unreachable!()
                };
                (
                    fitter.model.clone_without_labels(),
                    *report,
                    fitter.model.labels.len() as u64,
                )
            }
            Engine::Async { .. } => {
                if due > 0 {
                    let current = match &self.engine {
                        Engine::Async { current, .. } => current.as_ref().map(|s| s.model.clone()),
                        _ => unreachable!(),
                    };
                    let queries =
                        self.queries(batch.iteration, batch.global_step, due, current.as_ref())?;
                    self.asked += queries.len() as u64;
                    if queries.is_empty() {
                        self.defer(batch.iteration)?;
                    }
                    let Engine::Async { queries: tx, .. } = &self.engine else {
                        unreachable!()
                    };
                    if !queries.is_empty() {
                        tx.as_ref()
                            .expect("open until finish")
                            .send(queries)
                            .map_err(|_| anyhow!("the labelling thread has stopped"))?;
                    }
                }
                let Engine::Async {
                    latest,
                    current,
                    threads,
                    ..
                } = &mut self.engine
                else {
                    unreachable!()
                };
                loop {
                    if let Some(s) = latest.lock().expect("snapshot lock").take() {
                        *current = Some(s);
                    }
                    // Nothing asked yet (the window is filling): nothing to wait for.
                    if current.is_some() || self.asked == 0 {
                        break;
                    }
                    // Only the initial fit is waited for.
                    if threads.iter().any(|t| t.is_finished()) {
                        return Err(anyhow!("a preference thread stopped before the first fit"));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                match current.as_ref() {
                    Some(s) => (s.model.clone(), s.report, s.labels),
                    None => (self.unfitted.clone(), FitReport::default(), 0),
                }
            }
        };
        let n = rows.len() / self.features.dim();
        // Before the first fit (the initial batch waits for a segment to fit) the learner is
        // paid 0.
        let predicted = if labels_used == 0 {
            vec![0.0; n]
        } else {
            model.predict(&rows, n, &mut self.scratch)
        };
        let valid = flat(&rollout.valid);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (k, v) in valid.iter().enumerate() {
            if *v {
                xs.push(predicted[k] as f64);
                ys.push(flat(&true_rewards)[k]);
            }
        }
        if xs.iter().any(|x| !x.is_finite()) {
            return Err(anyhow!(
                "the reward model's prediction is not finite (after {labels_used} labels)"
            ));
        }
        let (mean, std) = report.norm;
        let rollout = &mut *batch.rollout;
        for (r, p) in rollout.rewards.iter_mut().zip(&predicted) {
            *r = ((*p as f64 - mean) / std * self.prefs.reward_std) as f32;
        }
        // Learned-reward episode returns, per env, over the samples the learner uses.
        let (steps, envs) = (rollout.shape.num_steps, rollout.shape.num_envs);
        if self.episodic {
            self.learned_sums.fill(0.0);
        }
        let mut finished = Vec::new();
        for t in 0..steps {
            for i in 0..envs {
                if !rollout.valid[[t, i]] {
                    continue;
                }
                self.learned_sums[i] += rollout.rewards[[t, i]] as f64;
                if rollout.dones[[t, i]] {
                    finished.push(self.learned_sums[i]);
                    self.learned_sums[i] = 0.0;
                }
            }
        }
        let mean_of = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        batch
            .row
            .set("labels_used", labels_used)
            .set("learned_episodic_return", mean_of(&finished))
            .set("rm_accuracy", report.val_accuracy)
            .set("rm_train_loss", report.train_loss)
            .set("rm_val_loss", report.val_loss)
            .set("rm_l2", report.l2)
            .set("reward_pearson", pearson(&xs, &ys))
            .set("reward_spearman", spearman(&xs, &ys));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_its_formula() {
        let (n0, n, c, end) = (250, 1000, 100_000.0, 500_000);
        assert_eq!(labels_by(0, n0, n, c, end), 250);
        assert_eq!(labels_by(end, n0, n, c, end), 1000);
        assert_eq!(labels_by(2 * end, n0, n, c, end), 1000);
        // Halfway in steps is more than halfway in labels: the rate falls.
        let half = labels_by(end / 2, n0, n, c, end);
        let expected = 250.0 + 750.0 * (1.0f64 + 2.5).ln() / (1.0f64 + 5.0).ln();
        assert_eq!(half, expected.floor() as u64);
        assert!(half > 625, "{half}");
        // Rate at t ∝ c/(t + c): the labels between t and t + dt shrink as t grows.
        let early = labels_by(60_000, n0, n, c, end) - labels_by(50_000, n0, n, c, end);
        let late = labels_by(460_000, n0, n, c, end) - labels_by(450_000, n0, n, c, end);
        assert!(early > 2 * late, "{early} vs {late}");
    }

    #[test]
    fn disagreement_keeps_the_most_disputed_in_pool_order_on_ties() {
        let query = |score: f64, iteration: u64| Query {
            iteration,
            global_step: 0,
            rows: Vec::new(),
            true_rewards: Vec::new(),
            score: Some(score),
        };
        let pool = vec![
            query(0.1, 0),
            query(0.5, 1),
            query(0.3, 2),
            query(0.5, 3),
            query(0.0, 4),
        ];
        let kept: Vec<u64> = most_disputed(pool, 3).iter().map(|q| q.iteration).collect();
        assert_eq!(kept, vec![1, 3, 2]);
    }
}
