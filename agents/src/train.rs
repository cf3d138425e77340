//! `train(config, out_dir)`: one run, as a function of its configuration and seed.
//!
//! config → `make(env_id, num_envs, seed)` → rollouts (policy copy in Rust, actions from the
//! run's `"actions"` stream) → learner update (backend: native Rust or libtorch) → one metrics row per iteration →
//! deterministic evaluation → summary.
//!
//! Files written into `out_dir`:
//! - `manifest.json` (first): the resolved config, seed, git revision, versions, device;
//! - `metrics.csv`: one row per iteration, flushed as it is written, so an interrupted or
//!   failed run leaves every finished iteration readable. The timing columns (`SPS`,
//!   `wall_seconds`) come last; every other column is a function of config and seed;
//! - `summary.json` (last, also on failure): `status` is `completed` or `failed`, with `error`.
//!
//! JSON files are written to a temporary name and renamed, so a reader never sees half a file.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use gradgym_envs::rng::{self, Stream};
use gradgym_envs::{Actions, Autoreset, EnvOptions, Space, VecEnv, make_with};
use serde::Serialize;

use crate::backend::make_backend;
use crate::buffer::Rollout;
use crate::config::TrainConfig;
use crate::device::parse_device;
use crate::learners::{UpdateStats, make_learner};
use crate::nn::{Head, Policy as FastPolicy, Scratch, sample_categorical, sample_gaussian};

/// The columns of `metrics.csv`, in order.
pub const METRIC_COLUMNS: [&str; 17] = [
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
    "SPS",
    "wall_seconds",
];

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
}

/// Progress reported after every iteration.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub global_step: u64,
    pub total_timesteps: u64,
    pub recent_return: Option<f64>,
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

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
}

fn head_for(space: &Space) -> Head {
    match space {
        Space::Discrete { n } => Head::Categorical { n: *n as usize },
        Space::Box { low, .. } => Head::Gaussian { dim: low.len() },
    }
}

/// Acts for one batch of observations: fills actions, log-probs and values.
struct Actor {
    scratch: Scratch,
    logp: Vec<f64>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        policy: &FastPolicy,
        obs: &[f32],
        n: usize,
        rng: &mut Stream,
        deterministic: bool,
        discrete: &mut [i64],
        continuous: &mut [f32],
        logprobs: &mut [f32],
        values: &mut [f32],
    ) {
        let (out, v) = policy.forward(obs, n, &mut self.scratch);
        values[..n].copy_from_slice(&v[..n]);
        match policy.head {
            Head::Categorical { n: k } => {
                for i in 0..n {
                    let (a, lp) = sample_categorical(
                        &out[i * k..(i + 1) * k],
                        rng,
                        deterministic,
                        &mut self.logp,
                    );
                    discrete[i] = a;
                    logprobs[i] = lp;
                }
            }
            Head::Gaussian { dim } => {
                let log_std = policy
                    .log_std
                    .as_deref()
                    .expect("a Gaussian head has a log-std");
                for i in 0..n {
                    logprobs[i] = sample_gaussian(
                        &out[i * dim..(i + 1) * dim],
                        log_std,
                        rng,
                        deterministic,
                        &mut continuous[i * dim..(i + 1) * dim],
                    );
                }
            }
        }
    }
}

/// Episode statistics of the run.
struct Episodes {
    last100: VecDeque<f64>,
    count: u64,
    iteration_returns: Vec<f64>,
    iteration_lengths: Vec<f64>,
}

impl Episodes {
    fn record(&mut self, env: &dyn VecEnv, only: Option<&[bool]>) {
        for (i, ret, len) in env.finished_episodes() {
            if only.is_some_and(|o| !o[i]) {
                continue;
            }
            self.count += 1;
            if self.last100.len() == 100 {
                self.last100.pop_front();
            }
            self.last100.push_back(ret);
            self.iteration_returns.push(ret);
            self.iteration_lengths.push(len as f64);
        }
    }
    fn recent(&self) -> Option<f64> {
        (!self.last100.is_empty())
            .then(|| self.last100.iter().sum::<f64>() / self.last100.len() as f64)
    }
}

/// Collects `num_steps` steps of every env (PPO, A2C), or, when `episodic`, one complete
/// episode per env starting from a fresh reset (REINFORCE). Returns the env steps consumed.
#[allow(clippy::too_many_arguments)]
fn collect(
    env: &mut dyn VecEnv,
    policy: &FastPolicy,
    actor: &mut Actor,
    r: &mut Rollout,
    rng: &mut Stream,
    episodic: bool,
    episodes: &mut Episodes,
) -> Result<u64> {
    let n = env.num_envs();
    let od = env.obs_dim();
    let ad = r.action_dim;
    let mut discrete = vec![0i64; n];
    let mut continuous = vec![0f32; n * ad];
    let mut running = vec![true; n];
    if episodic {
        env.reset(None);
    }
    let mut steps = 0u64;
    let mut t = 0;
    while t < r.shape.num_steps {
        let row = t * n..(t + 1) * n;
        r.obs[t * n * od..(t + 1) * n * od].copy_from_slice(env.observations());
        let (lp, vals) = (&mut r.logprobs[row.clone()], &mut r.values[row.clone()]);
        actor.act(
            policy,
            env.observations(),
            n,
            rng,
            false,
            &mut discrete,
            &mut continuous,
            lp,
            vals,
        );
        if r.discrete {
            r.actions_discrete[row.clone()].copy_from_slice(&discrete);
        } else {
            r.actions_continuous[t * n * ad..(t + 1) * n * ad].copy_from_slice(&continuous);
        }
        if t > 0 {
            // The value of this step's observation is the bootstrap of the previous step,
            // where that step did not end an episode.
            for i in 0..n {
                let prev = (t - 1) * n + i;
                if !r.dones[prev] {
                    r.next_values[prev] = r.values[t * n + i];
                }
            }
        }
        let actions = if r.discrete {
            Actions::Discrete(&discrete)
        } else {
            Actions::Continuous(&continuous)
        };
        env.step(actions)?;
        let (term, trunc) = (env.terminated(), env.truncated());
        for i in 0..n {
            let k = t * n + i;
            r.rewards[k] = env.rewards()[i] as f32;
            r.dones[k] = term[i] || trunc[i];
            r.valid[k] = running[i];
            r.next_values[k] = 0.0;
        }
        // Truncated (and not terminated) episodes bootstrap from their final observation.
        let cut: Vec<usize> = (0..n).filter(|&i| trunc[i] && !term[i]).collect();
        if !cut.is_empty() {
            let rows: Vec<f32> = cut
                .iter()
                .flat_map(|&i| {
                    env.final_observations()[i * od..(i + 1) * od]
                        .iter()
                        .copied()
                })
                .collect();
            let v = policy.values(&rows, cut.len(), &mut actor.scratch);
            for (j, &i) in cut.iter().enumerate() {
                r.next_values[t * n + i] = v[j];
            }
        }
        steps += running.iter().filter(|&&x| x).count() as u64;
        episodes.record(&*env, episodic.then_some(&running[..]));
        if episodic {
            for i in 0..n {
                running[i] &= !(term[i] || trunc[i]);
            }
        }
        t += 1;
        if episodic && !running.iter().any(|&x| x) {
            break;
        }
    }
    // Rows past the last step of an episodic rollout are not part of the batch.
    for k in t * n..r.shape.len() {
        r.valid[k] = false;
        r.dones[k] = true;
        r.rewards[k] = 0.0;
        r.next_values[k] = 0.0;
    }
    if !episodic {
        // Bootstrap the episodes the window cut with the value of the current observation.
        let final_values = policy.values(env.observations(), n, &mut actor.scratch);
        for (i, &v) in final_values.iter().enumerate() {
            let k = (t - 1) * n + i;
            if !r.dones[k] {
                r.next_values[k] = v;
            }
        }
    }
    Ok(steps)
}

/// Mean and standard deviation of `episodes` deterministic episodes (one per env of a batch
/// seeded from the run's `"eval"` stream).
fn evaluate(config: &TrainConfig, policy: &FastPolicy) -> Result<(f64, f64)> {
    let episodes = config.eval_episodes;
    let seed = rng::derive_seed(config.seed, "eval");
    let mut env = make_with(
        &config.env_id,
        &EnvOptions {
            autoreset: Autoreset::SameStep,
            ..EnvOptions::new(episodes, seed)
        },
    )?;
    let mut actor = Actor {
        scratch: Scratch::default(),
        logp: Vec::new(),
    };
    let ad = match env.spec().action_space {
        Space::Box { ref low, .. } => low.len(),
        Space::Discrete { .. } => 1,
    };
    let (mut discrete, mut continuous) = (vec![0i64; episodes], vec![0f32; episodes * ad]);
    let (mut lp, mut vals) = (vec![0f32; episodes], vec![0f32; episodes]);
    // Deterministic actions draw nothing; the stream only fills the argument.
    let mut no_draws = rng::stream(config.seed, "eval-actions", 0);
    let mut returns: Vec<Option<f64>> = vec![None; episodes];
    while returns.iter().any(Option::is_none) {
        let obs = env.observations().to_vec();
        actor.act(
            policy,
            &obs,
            episodes,
            &mut no_draws,
            true,
            &mut discrete,
            &mut continuous,
            &mut lp,
            &mut vals,
        );
        let actions = if matches!(policy.head, Head::Categorical { .. }) {
            Actions::Discrete(&discrete)
        } else {
            Actions::Continuous(&continuous)
        };
        env.step(actions)?;
        for (i, ret, _) in env.finished_episodes() {
            returns[i].get_or_insert(ret);
        }
    }
    let r: Vec<f64> = returns
        .into_iter()
        .map(|x| x.expect("all finished"))
        .collect();
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    let std = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
    Ok((mean, std))
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v}")).unwrap_or_default()
}

/// Trains one run into `out_dir`. Returns the summary (also written to `summary.json`); an
/// error is returned only when the run could not start (bad config, unwritable folder).
pub fn train(
    config: &TrainConfig,
    out_dir: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    config.validate()?;
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let device = parse_device(&config.device).map_err(anyhow::Error::msg)?;
    tch::set_num_threads(config.torch_threads as i32);
    let manifest = Manifest {
        config,
        seed: config.seed,
        git_revision: crate::build_info::GIT_REVISION,
        gradgym_version: crate::build_info::GRADGYM_VERSION,
        libtorch_version: crate::build_info::LIBTORCH_VERSION,
        tch_version: "0.24.0",
        device: format!("{device:?}"),
        backend: config.backend.resolve(device).name(),
        cuda_available: tch::Cuda::is_available(),
        torch_threads: config.torch_threads,
    };
    write_atomic(
        &out_dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;

    let start = Instant::now();
    let mut summary = Summary {
        status: "running".into(),
        error: None,
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
    };
    // A panic inside libtorch or tch (they panic on some errors) ends the run like an error:
    // recorded in the summary, with everything written so far kept.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(config, device, out_dir, start, &mut summary, on_progress)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        Err(anyhow::anyhow!("panic: {message}"))
    });
    summary.wall_seconds = start.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => summary.status = "completed".into(),
        Err(e) => {
            summary.status = "failed".into();
            summary.error = Some(format!("{e:#}"));
        }
    }
    write_atomic(
        &out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

fn run(
    config: &TrainConfig,
    device: tch::Device,
    out_dir: &Path,
    start: Instant,
    summary: &mut Summary,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let mut env = make_with(
        &config.env_id,
        &EnvOptions::new(config.num_envs, config.seed),
    )?;
    let spec = env.spec().clone();
    let head = head_for(&spec.action_space);
    let obs_dim = env.obs_dim();
    let mut init_rng = rng::stream(config.seed, "init", 0);
    let mut action_rng = rng::stream(config.seed, "actions", 0);
    let mut minibatch_rng = rng::stream(config.seed, "minibatch", 0);
    let mut model = make_backend(config, obs_dim, head, device, &mut init_rng)?;
    let mut learner = make_learner(config);
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
    let mut rollout = Rollout::new(
        num_steps,
        config.num_envs,
        obs_dim,
        action_dim,
        matches!(head, Head::Categorical { .. }),
    );
    let mut actor = Actor {
        scratch: Scratch::default(),
        logp: Vec::new(),
    };
    let mut episodes = Episodes {
        last100: VecDeque::new(),
        count: 0,
        iteration_returns: Vec::new(),
        iteration_lengths: Vec::new(),
    };

    let mut metrics =
        fs::File::create(out_dir.join("metrics.csv")).context("cannot create metrics.csv")?;
    writeln!(metrics, "{}", METRIC_COLUMNS.join(","))?;
    let mut global_step = 0u64;
    let mut iteration = 0u64;
    // PPO and A2C: a fixed number of iterations (CleanRL's arithmetic); REINFORCE: until the
    // budget of env steps is used.
    let iterations_planned = if episodic {
        None
    } else {
        Some(config.num_iterations())
    };
    while global_step < config.total_timesteps && iterations_planned.is_none_or(|n| iteration < n) {
        iteration += 1;
        let frac = match iterations_planned {
            Some(n) => 1.0 - (iteration - 1) as f64 / n as f64,
            None => 1.0 - global_step as f64 / config.total_timesteps as f64,
        };
        let lr = if config.anneal_lr {
            frac * config.learning_rate
        } else {
            config.learning_rate
        };
        model.set_learning_rate(lr);
        let policy = model.snapshot();
        episodes.iteration_returns.clear();
        episodes.iteration_lengths.clear();
        global_step += collect(
            &mut *env,
            &policy,
            &mut actor,
            &mut rollout,
            &mut action_rng,
            episodic,
            &mut episodes,
        )?;
        let stats: UpdateStats = learner
            .update(&mut *model, &rollout, &mut minibatch_rng)
            .map_err(|e| {
                anyhow::anyhow!("iteration {iteration} (global step {global_step}): {e}")
            })?;
        let elapsed = start.elapsed().as_secs_f64();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let row = [
            iteration.to_string(),
            global_step.to_string(),
            episodes.iteration_returns.len().to_string(),
            fmt_opt(mean(&episodes.iteration_returns)),
            fmt_opt(mean(&episodes.iteration_lengths)),
            stats.policy_loss.to_string(),
            stats.value_loss.to_string(),
            stats.entropy.to_string(),
            stats.approx_kl.to_string(),
            stats.old_approx_kl.to_string(),
            stats.clipfrac.to_string(),
            stats.explained_variance.to_string(),
            lr.to_string(),
            stats.kl_beta.to_string(),
            stats.gradient_steps.to_string(),
            format!("{:.0}", global_step as f64 / elapsed),
            format!("{elapsed:.3}"),
        ];
        writeln!(metrics, "{}", row.join(","))?;
        metrics.flush()?;
        summary.total_timesteps = global_step;
        summary.iterations = iteration;
        summary.episodes = episodes.count;
        summary.final_return_mean_last100 = episodes.recent();
        on_progress(Progress {
            global_step,
            total_timesteps: config.total_timesteps,
            recent_return: episodes.recent(),
        });
    }
    if config.eval_episodes > 0 {
        let (mean, std) = evaluate(config, &model.snapshot())?;
        summary.eval_return_mean = Some(mean);
        summary.eval_return_std = Some(std);
    }
    Ok(())
}
