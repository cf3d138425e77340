//! Training as a library: a run is a function of its configuration and seed.
//!
//! config → `make(env_id, num_envs, seed)` → rollouts ([`crate::collect`]: policy copy in Rust,
//! actions from the run's `"actions"` stream) → an optional [`Hook`] → learner update (backend:
//! native Rust or libtorch) → one [`MetricRow`] per iteration → deterministic evaluation →
//! [`Summary`].
//!
//! Three ways in, from the most control to the least:
//! - [`Trainer`]: the loop itself. A caller steps it one iteration at a time
//!   ([`Trainer::step`]) and may pass a [`Hook`] that sees each rollout between collection and
//!   update, rewrites its rewards and adds metric columns. This is the seam the preference
//!   loop uses: the agent is paid a learned reward while the true one still reaches the logs.
//! - [`run`]: the whole run in memory; returns the metric rows and the summary, writes nothing.
//! - [`train`] / [`train_with`]: the whole run written to a run folder
//!   ([`crate::run_folder`]); what `gradgym train` and each run of `gradgym sweep` call.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use gradgym_envs::rng::{self, Stream};
use gradgym_envs::{EnvOptions, VecEnv, make_with};
use serde::Serialize;

use crate::backend::{Backend, make_backend};
use crate::buffer::Rollout;
use crate::checkpoint;
use crate::collect::{Actor, Episodes, collect, evaluate, head_for};
use crate::config::TrainConfig;
use crate::device::parse_device;
use crate::error::{catch_panics, check_interrupt, ended_status};
pub use crate::hook::{Collected, Hook};
use crate::learners::{Learner, make_learner};
use crate::metrics::{Cell, Columns, MetricRow};
use crate::nn::{Head, Policy};
use crate::prefs::PrefsLoop;
use crate::reference_kl;
use crate::run_folder::{Existing, RunFolder};

/// The columns every training run writes before any a hook adds, in order.
pub const BASE_COLUMNS: [&str; 15] = [
    "iteration",
    "global_step",
    "episodes",
    "episodic_return",
    "episodic_length",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "old_approx_kl",
    "clipfrac",
    "explained_variance",
    "learning_rate",
    "kl_beta",
    "gradient_steps",
];

/// The timing columns, last in every metrics table: the only ones that are not a function of
/// config and seed.
pub const TIMING_COLUMNS: [&str; 2] = ["SPS", "wall_seconds"];

/// The end of a run, as written to `summary.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub status: String,
    pub error: Option<String>,
    pub env_id: String,
    pub algo: String,
    pub seed: u64,
    /// Mean undiscounted return of the last (up to) 100 training episodes.
    pub final_return_mean_last100: Option<f64>,
    pub episodes: u64,
    /// Mean return of `eval_episodes` deterministic episodes after training.
    pub eval_return_mean: Option<f64>,
    pub eval_return_std: Option<f64>,
    pub eval_episodes: usize,
    pub total_timesteps: u64,
    pub iterations: u64,
    pub wall_seconds: f64,
    /// Where the run's folder was sealed (not written to `summary.json`): its `--out`, or
    /// beside it for an unfinished run that was not to replace an earlier one.
    #[serde(skip)]
    pub folder: Option<std::path::PathBuf>,
    /// What the run's user should be told of a run that did not fail (not written to
    /// `summary.json`): a preference run whose every label was a tie.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Progress reported after every iteration.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub global_step: u64,
    pub total_timesteps: u64,
    pub recent_return: Option<f64>,
}

/// What `manifest.json` records of a training run.
#[derive(Serialize)]
struct Manifest<'a> {
    config: &'a TrainConfig,
    seed: u64,
    git_revision: &'a str,
    gradgym_version: &'a str,
    libtorch_version: &'a str,
    tch_version: &'a str,
    device: String,
    /// The backend that computes the gradient steps (`auto` resolved).
    backend: &'static str,
    cuda_available: bool,
    torch_threads: usize,
    /// How the step budget is rounded to whole rollouts, when it is.
    budget_note: Option<String>,
    /// A preference run: `interleaved` or `async` (absent: the learner is paid the env's
    /// reward).
    prefs_mode: Option<&'a str>,
    /// Whether the same config and seed give the same results: false only for `async`
    /// preference runs, whose labelling and fitting threads race the learner.
    reproducible: bool,
}

/// One run's training loop, stepped by its caller.
pub struct Trainer {
    config: TrainConfig,
    env: Box<dyn VecEnv>,
    model: Box<dyn Backend>,
    learner: Box<dyn Learner>,
    rollout: Rollout,
    actor: Actor,
    episodes: Episodes,
    action_rng: Stream,
    minibatch_rng: Stream,
    episodic: bool,
    /// PPO and A2C: a fixed number of iterations (CleanRL's arithmetic); REINFORCE: until the
    /// budget of env steps is used.
    iterations_planned: Option<u64>,
    iteration: u64,
    global_step: u64,
    /// Iterations and env steps of the last iteration that finished (its update included).
    finished: (u64, u64),
    /// The frozen reference of the KL penalty (`ref_kl_coef > 0`): the initial policy.
    reference: Option<Policy>,
    start: Instant,
}

impl Trainer {
    /// Validates `config` and builds the env, networks, optimiser and rollout buffer. Nothing
    /// is written anywhere.
    pub fn new(config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = parse_device(&config.device).map_err(anyhow::Error::msg)?;
        tch::set_num_threads(config.torch_threads as i32);
        let env = make_with(
            &config.env_id,
            &EnvOptions::new(config.num_envs, config.seed),
        )?;
        let spec = env.spec().clone();
        let head = head_for(&spec.action_space);
        let obs_dim = env.obs_dim();
        let mut init_rng = rng::stream(config.seed, "init", 0);
        let model = make_backend(config, obs_dim, head, device, &mut init_rng)?;
        let learner = make_learner(config);
        let episodic = learner.episodic();
        let num_steps = if episodic {
            spec.max_episode_steps as usize
        } else {
            config.num_steps
        };
        let action_dim = match head {
            Head::Categorical { .. } => 1,
            Head::Gaussian { dim } => dim,
        };
        let rollout = Rollout::new(
            num_steps,
            config.num_envs,
            obs_dim,
            action_dim,
            matches!(head, Head::Categorical { .. }),
        );
        let reference = (config.ref_kl_coef > 0.0).then(|| model.snapshot());
        Ok(Self {
            config: config.clone(),
            reference,
            env,
            model,
            learner,
            rollout,
            actor: Actor::new(),
            episodes: Episodes::new(),
            action_rng: rng::stream(config.seed, "actions", 0),
            minibatch_rng: rng::stream(config.seed, "minibatch", 0),
            episodic,
            iterations_planned: (!episodic).then(|| config.num_iterations()),
            iteration: 0,
            global_step: 0,
            finished: (0, 0),
            start: Instant::now(),
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The metric columns of this run with `hook`: [`BASE_COLUMNS`], the hook's, then
    /// [`TIMING_COLUMNS`].
    pub fn columns(&self, hook: Option<&dyn Hook>) -> Columns {
        let mut columns = Columns::new(BASE_COLUMNS);
        if let Some(hook) = hook {
            columns.extend(hook.columns());
        }
        if self.reference.is_some() {
            columns.extend(reference_kl::COLUMNS);
        }
        columns.extend(TIMING_COLUMNS);
        columns
    }

    /// Whether the budget is spent.
    pub fn is_done(&self) -> bool {
        self.global_step >= self.config.total_timesteps
            || self.iterations_planned.is_some_and(|n| self.iteration >= n)
    }

    /// Iterations run so far.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// Env steps consumed so far.
    pub fn global_step(&self) -> u64 {
        self.global_step
    }

    /// Mean return of the last (up to) 100 training episodes.
    pub fn recent_return(&self) -> Option<f64> {
        self.episodes.recent()
    }

    /// Episodes finished so far.
    pub fn episodes(&self) -> u64 {
        self.episodes.count
    }

    /// A CPU copy of the current policy.
    pub fn policy(&self) -> Policy {
        self.model.snapshot()
    }

    /// The learning rate of iteration `iteration` (from 1): linear annealing to 0 over the
    /// planned iterations (PPO, A2C) or over the step budget (REINFORCE), as CleanRL does.
    fn learning_rate(&self, iteration: u64) -> f64 {
        if !self.config.anneal_lr {
            return self.config.learning_rate;
        }
        let frac = match self.iterations_planned {
            Some(n) => 1.0 - (iteration - 1) as f64 / n as f64,
            None => 1.0 - self.global_step as f64 / self.config.total_timesteps as f64,
        };
        frac * self.config.learning_rate
    }

    /// One iteration: collect a rollout, run `hook` on it, update, and return the iteration's
    /// metrics row. Call it while [`is_done`](Trainer::is_done) is false.
    pub fn step(&mut self, hook: Option<&mut (dyn Hook + '_)>) -> Result<MetricRow> {
        self.iteration += 1;
        let iteration = self.iteration;
        let lr = self.learning_rate(iteration);
        self.model.set_learning_rate(lr);
        let policy = self.model.snapshot();
        self.episodes.start_iteration();
        self.global_step += collect(
            &mut *self.env,
            &policy,
            &mut self.actor,
            &mut self.rollout,
            &mut self.action_rng,
            self.episodic,
            &mut self.episodes,
        )?;
        let mut row = MetricRow::new();
        if let Some(hook) = hook {
            hook.after_collect(Collected {
                iteration,
                global_step: self.global_step,
                rollout: &mut self.rollout,
                policy: &policy,
                row: &mut row,
            })
            .map_err(|e| {
                e.context(format!(
                    "iteration {iteration} (global step {}): hook",
                    self.global_step
                ))
            })?;
        }
        // The reference penalty comes after the hook: R = r − β log π/p, whatever paid r.
        if let Some(reference) = &self.reference {
            let paid = reference_kl::apply(
                &mut self.rollout,
                &policy,
                reference,
                self.config.ref_kl_coef,
            );
            row.set("ref_kl", paid.kl)
                .set("ref_kl_penalty", paid.penalty);
        }
        let stats = self
            .learner
            .update(&mut *self.model, &self.rollout, &mut self.minibatch_rng)
            .map_err(|e| {
                anyhow::anyhow!(
                    "iteration {iteration} (global step {}): {e}",
                    self.global_step
                )
            })?;
        let elapsed = self.start.elapsed().as_secs_f64();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        row.set("iteration", iteration)
            .set("global_step", self.global_step)
            .set("episodes", self.episodes.iteration_returns.len())
            .set("episodic_return", mean(&self.episodes.iteration_returns))
            .set("episodic_length", mean(&self.episodes.iteration_lengths))
            .set("policy_loss", stats.policy_loss)
            .set("value_loss", stats.value_loss)
            .set("entropy", stats.entropy)
            .set("approx_kl", stats.approx_kl)
            .set("old_approx_kl", stats.old_approx_kl)
            .set("clipfrac", stats.clipfrac)
            .set("explained_variance", stats.explained_variance)
            .set("learning_rate", lr)
            .set("kl_beta", stats.kl_beta)
            .set("gradient_steps", stats.gradient_steps)
            .set(
                "SPS",
                Cell::Fixed {
                    value: self.global_step as f64 / elapsed,
                    decimals: 0,
                },
            )
            .set(
                "wall_seconds",
                Cell::Fixed {
                    value: elapsed,
                    decimals: 3,
                },
            );
        self.finished = (iteration, self.global_step);
        Ok(row)
    }

    /// Mean and standard deviation of `eval_episodes` deterministic episodes of the current
    /// policy, on envs seeded from the run's `"eval"` stream.
    pub fn evaluate(&self) -> Result<(f64, f64)> {
        evaluate(&self.config, &self.model.snapshot())
    }

    /// A summary of the run up to its last finished iteration (`status` "running").
    fn summary(&self) -> Summary {
        Summary {
            status: "running".into(),
            error: None,
            env_id: self.config.env_id.clone(),
            algo: self.config.algo.name().into(),
            seed: self.config.seed,
            final_return_mean_last100: self.episodes.recent(),
            episodes: self.episodes.count,
            eval_return_mean: None,
            eval_return_std: None,
            eval_episodes: self.config.eval_episodes,
            total_timesteps: self.finished.1,
            iterations: self.finished.0,
            wall_seconds: self.start.elapsed().as_secs_f64(),
            folder: None,
            warnings: Vec::new(),
        }
    }
}

/// A whole run in memory.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub columns: Columns,
    pub rows: Vec<MetricRow>,
    pub summary: Summary,
}

/// Steps `trainer` to the end of its budget, handing each row to `on_row`, then evaluates.
/// Whatever happens, `summary` describes the run up to where it got; a failure inside the
/// loop (non-finite loss, hook error, panic) is recorded as `failed`, not returned.
fn drive(
    trainer: &mut Trainer,
    mut hook: Option<&mut dyn Hook>,
    interrupt: Option<&AtomicBool>,
    on_row: &mut dyn FnMut(&MetricRow, &Trainer) -> Result<()>,
) -> Summary {
    let outcome = catch_panics(|| {
        while !trainer.is_done() {
            check_interrupt(interrupt, || {
                format!("after iteration {}", trainer.finished.0)
            })?;
            let row = trainer.step(hook.as_deref_mut())?;
            on_row(&row, trainer)?;
        }
        Ok(if trainer.config.eval_episodes > 0 {
            Some(trainer.evaluate()?)
        } else {
            None
        })
    });
    let mut summary = trainer.summary();
    match outcome {
        Ok(eval) => {
            summary.status = "completed".into();
            summary.eval_return_mean = eval.map(|e| e.0);
            summary.eval_return_std = eval.map(|e| e.1);
        }
        Err(e) => {
            summary.status = ended_status(&e).into();
            summary.error = Some(format!("{e:#}"));
        }
    }
    summary
}

/// Trains one run in memory with an optional hook and returns its metrics and summary. An
/// error is returned only when the run could not start (bad config); a failure during
/// training is in the summary, with the rows up to it.
///
/// A config with a `[prefs]` table runs the preference loop ([`PrefsLoop`]) as its hook when
/// no other hook is given.
pub fn run(config: &TrainConfig, hook: Option<&mut dyn Hook>) -> Result<RunResult> {
    let mut trainer = catch_panics(|| Trainer::new(config))?;
    let mut prefs = match (&config.prefs, &hook) {
        (Some(_), None) => Some(PrefsLoop::new(config, None)?),
        _ => None,
    };
    let hook: Option<&mut dyn Hook> = match prefs.as_mut() {
        Some(p) => Some(p),
        None => hook.map(|h| -> &mut dyn Hook { h }),
    };
    let columns = trainer.columns(hook.as_deref());
    let mut rows = Vec::new();
    let mut summary = drive(&mut trainer, hook, None, &mut |row, _| {
        rows.push(row.clone());
        Ok(())
    });
    if let Some(p) = prefs.as_mut() {
        finish_prefs(p, &mut summary);
    }
    Ok(RunResult {
        columns,
        rows,
        summary,
    })
}

/// [`train_with`] without a hook.
pub fn train(
    config: &TrainConfig,
    out_dir: &std::path::Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    train_with(config, out_dir, Existing::Refuse, None, None, on_progress)
}

/// Trains one run into the run folder `out_dir` (see [`crate::run_folder`]) and returns its
/// summary (also written to `summary.json`). An error is returned only when the run could not
/// start: a bad config, an existing folder under [`Existing::Refuse`], an unwritable folder.
///
/// When `interrupt` becomes true (a signal handler sets it), the run stops before its next
/// iteration and is sealed with status `interrupted`: every finished iteration stays in
/// metrics.csv and the summary says how far it got.
pub fn train_with(
    config: &TrainConfig,
    out_dir: &std::path::Path,
    existing: Existing,
    hook: Option<&mut dyn Hook>,
    interrupt: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    config.validate()?;
    let device = parse_device(&config.device).map_err(anyhow::Error::msg)?;
    let mut folder = RunFolder::create(out_dir, existing)?;
    folder.write_json(
        "manifest.json",
        &Manifest {
            config,
            seed: config.seed,
            git_revision: crate::build_info::git_revision(),
            gradgym_version: crate::build_info::GRADGYM_VERSION,
            libtorch_version: crate::build_info::LIBTORCH_VERSION,
            tch_version: "0.24.0",
            device: format!("{device:?}"),
            backend: config.backend.resolve(device).name(),
            cuda_available: tch::Cuda::is_available(),
            torch_threads: config.torch_threads,
            budget_note: config.budget_note(),
            prefs_mode: config.prefs.as_ref().map(|p| p.mode.as_str()),
            reproducible: !config.prefs.as_ref().is_some_and(|p| p.is_async()),
        },
    )?;
    folder.write_text("config.toml", &config.echo_toml()?)?;
    let mut trainer = match catch_panics(|| Trainer::new(config)) {
        Ok(t) => t,
        Err(e) => {
            // The config was valid, so this is a failure to build the run (a libtorch panic,
            // a CUDA error): recorded like any failed run.
            let mut summary = failed_before_start(config, &e);
            summary.folder = Some(folder.seal_as(&summary, &summary.status)?);
            return Ok(summary);
        }
    };
    // A preference run writes every answered query to labels.csv.
    let mut prefs = match (&config.prefs, &hook) {
        (Some(_), None) => Some(PrefsLoop::new(
            config,
            Some(&folder.path().join("labels.csv")),
        )?),
        _ => None,
    };
    let hook: Option<&mut dyn Hook> = match prefs.as_mut() {
        Some(p) => Some(p),
        None => hook.map(|h| -> &mut dyn Hook { h }),
    };
    folder.start_metrics(trainer.columns(hook.as_deref()))?;
    let every = config.checkpoint_every;
    let mut summary = drive(&mut trainer, hook, interrupt, &mut |row, trainer| {
        folder.append(row)?;
        let iteration = trainer.iteration();
        if every > 0 && iteration % every == 0 {
            checkpoint::save(
                &folder
                    .path()
                    .join("checkpoints")
                    .join(format!("iter-{iteration:06}")),
                &trainer.policy(),
                &trainer.config().env_id,
                iteration,
                trainer.global_step(),
            )?;
        }
        on_progress(Progress {
            global_step: trainer.global_step(),
            total_timesteps: trainer.config().total_timesteps,
            recent_return: trainer.recent_return(),
        });
        Ok(())
    });
    // The trained policy is kept (a run that failed in training may have weights that are not
    // finite, so not those); a run the preference loop fails at its end keeps it too.
    let trained = summary.status != "failed";
    if let Some(p) = prefs.as_mut() {
        finish_prefs(p, &mut summary);
    }
    if trained {
        checkpoint::save(
            folder.path(),
            &trainer.policy(),
            &config.env_id,
            summary.iterations,
            summary.total_timesteps,
        )?;
    }
    summary.folder = Some(folder.seal_as(&summary, &summary.status)?);
    Ok(summary)
}

/// Joins a preference loop's threads; an error there fails the run, as does a run that went
/// to its end without asking its whole label budget.
fn finish_prefs(prefs: &mut PrefsLoop, summary: &mut Summary) {
    if let Err(e) = prefs.finish() {
        if summary.status != "failed" {
            summary.status = "failed".into();
            summary.error = Some(format!("preference loop: {e:#}"));
        }
    }
    if summary.status == "completed"
        && let Some(why) = prefs.unspent_labels()
    {
        summary.status = "failed".into();
        summary.error = Some(format!("preference loop: {why}"));
    }
    summary.warnings.extend(prefs.all_ties());
}

fn failed_before_start(config: &TrainConfig, e: &anyhow::Error) -> Summary {
    Summary {
        status: "failed".into(),
        error: Some(format!("{e:#}")),
        env_id: config.env_id.clone(),
        algo: config.algo.name().into(),
        seed: config.seed,
        final_return_mean_last100: None,
        episodes: 0,
        eval_return_mean: None,
        eval_return_std: None,
        eval_episodes: config.eval_episodes,
        total_timesteps: 0,
        iterations: 0,
        wall_seconds: 0.0,
        folder: None,
        warnings: Vec::new(),
    }
}
