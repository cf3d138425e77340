//! `gradgym train`, `gradgym prefs` (a training run paid a learned reward), `gradgym eval` and
//! `gradgym info`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use gradgym_agents::config::{Algo, TrainConfig};
use gradgym_agents::run_folder::Existing;
use gradgym_agents::train::{Progress, train_with};
use gradgym_benchmarks::configs::{self, ConfigFlags, Layer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A TOML file of config keys (the flags' names, with underscores).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (default: out/runs/<env>__<algo>__seed<seed>; a preference run's:
    /// out/runs/<env>__<algo>__labels<N>__seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the output folder if it exists (it is kept until the new run is complete).
    #[arg(long)]
    overwrite: bool,
    /// Print the effective config after all layers, and where each layer came from; train
    /// nothing.
    #[arg(long)]
    print_config: bool,
    /// Never draw a progress bar, and print no progress lines.
    #[arg(long)]
    quiet: bool,
    /// Off a terminal (CI logs, batch jobs), print a plain progress line at most this often,
    /// in seconds (0: after every iteration).
    #[arg(long, default_value_t = 10.0)]
    progress_seconds: f64,
    #[command(flatten)]
    fields: ConfigFlags,
}

/// Defaults → shipped config for (env, algo) → `--config` file → flags → `extra`.
pub fn resolve(args: &TrainArgs, extra: &[Layer]) -> Result<(TrainConfig, Vec<String>)> {
    let user = match &args.config {
        Some(path) => Some(Layer::new(
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?,
        )),
        None => None,
    };
    // The env and algo decide which shipped config applies: flags first, then the user file.
    let probe = match &user {
        Some(layer) => TrainConfig::default()
            .overlay_toml(&layer.text, &layer.source)
            .map_err(|e| configs::located(e, layer))?,
        None => TrainConfig::default(),
    };
    let env_id = args
        .fields
        .get("env_id")
        .map_or(probe.env_id.clone(), str::to_string);
    let algo = match args.fields.get("algo") {
        // Named as a bad `--env` is: by the layer and field that gave it.
        Some(a) => Algo::parse(a)
            .map_err(|e| anyhow::anyhow!("command-line flags: config field `algo`: {e}"))?,
        None => probe.algo,
    };
    let mut layers: Vec<Layer> = user.into_iter().collect();
    layers.push(args.fields.layer("command-line flags"));
    layers.extend(extra.iter().cloned());
    configs::resolve(&env_id, algo, &layers)
}

pub fn run_train(args: TrainArgs) -> Result<ExitCode> {
    run_training("gradgym train", args, &[])
}

#[derive(Args, Debug)]
pub struct PrefsArgs {
    /// Environment id (the same as `--env-id`), e.g. FixedHorizonCartPole-v0.
    #[arg(long)]
    env: Option<String>,
    /// The label budget: queries the synthetic human answers over the run (`prefs.labels`;
    /// default 1000; at most 2²⁴ = 16,777,216, gradgym's cap on sizes, and what the
    /// machine's memory holds).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    labels: Option<u64>,
    /// `random` or `disagreement` (`prefs.query`).
    #[arg(long)]
    query: Option<String>,
    /// `interleaved` (reproducible) or `async` (`prefs.mode`).
    #[arg(long)]
    mode: Option<String>,
    /// Transitions per segment (`prefs.segment_length`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    segment_length: Option<u64>,
    #[command(flatten)]
    train: TrainArgs,
}

/// `gradgym prefs`: `gradgym train` with a `[prefs]` table (the config file's, if it has one,
/// then these flags), so the learner is paid the reward model's reward.
pub fn run_prefs(mut args: PrefsArgs) -> Result<ExitCode> {
    if let Some(env) = &args.env {
        if args.train.fields.get("env_id").is_some_and(|e| e != env) {
            anyhow::bail!("--env and --env-id disagree");
        }
        args.train.fields.values.push(("env_id", env.clone()));
    }
    let mut lines = Vec::new();
    if let Some(n) = args.labels {
        lines.push(format!("prefs.labels = {n}"));
    }
    for (key, value) in [("query", &args.query), ("mode", &args.mode)] {
        if let Some(v) = value {
            lines.push(format!("prefs.{key} = {v:?}"));
        }
    }
    if let Some(k) = args.segment_length {
        lines.push(format!("prefs.segment_length = {k}"));
    }
    if lines.is_empty() {
        // No prefs flag: the config file's table, or the defaults.
        lines.push("prefs = {}".into());
    }
    let layer = Layer::new("gradgym prefs flags", lines.join("\n"));
    run_training("gradgym prefs", args.train, &[layer])
}

fn run_training(command: &str, args: TrainArgs, extra: &[Layer]) -> Result<ExitCode> {
    if !(args.progress_seconds.is_finite() && args.progress_seconds >= 0.0) {
        anyhow::bail!(
            "--progress-seconds must be a number ≥ 0 (got {})",
            args.progress_seconds
        );
    }
    let (config, sources) = resolve(&args, extra)?;
    if args.print_config {
        println!("# layers: {}", sources.join(" → "));
        print!("{}", config.echo_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let labels = config
            .prefs
            .as_ref()
            .map_or(String::new(), |p| format!("__labels{}", p.labels));
        PathBuf::from(format!(
            "out/runs/{}__{}{labels}__seed{}",
            config.env_id,
            config.algo.name(),
            config.seed
        ))
    });
    eprintln!(
        "{command}: {} {} seed {} ({} steps){} → {} [config: {}]",
        config.env_id,
        config.algo.name(),
        config.seed,
        config.total_timesteps,
        config.prefs.as_ref().map_or(String::new(), |p| format!(
            ", {} labels, {} queries, {}",
            p.labels, p.query, p.mode
        )),
        out.display(),
        sources.join(" → ")
    );
    if let Some(note) = config.budget_note() {
        eprintln!("{command}: note: {note}");
    }
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(config.total_timesteps);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
            )
            .expect("valid template"),
        );
        bar
    });
    let plain_lines = !args.quiet && bar.is_none();
    let started = std::time::Instant::now();
    let mut last_line: Option<std::time::Instant> = None;
    let mut on_progress = |p: Progress| {
        if let Some(bar) = &bar {
            bar.set_position(p.global_step.min(p.total_timesteps));
            if let Some(r) = p.recent_return {
                bar.set_message(format!("return {r:.1}"));
            }
        } else if plain_lines
            && last_line.is_none_or(|t| t.elapsed().as_secs_f64() >= args.progress_seconds)
        {
            last_line = Some(std::time::Instant::now());
            let ret = p
                .recent_return
                .map_or("none yet".into(), |r| format!("{r:.1}"));
            eprintln!(
                "{command}: step {}/{} ({:.0}%), return (last 100 episodes) {ret}, {:.1} s",
                p.global_step,
                p.total_timesteps,
                100.0 * p.global_step as f64 / p.total_timesteps as f64,
                started.elapsed().as_secs_f64()
            );
        }
    };
    let existing = if args.overwrite {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    // SIGINT or SIGTERM ends the run after its current iteration, sealed as `interrupted`.
    let interrupt = interrupt_on_signals()?;
    let summary = train_with(
        &config,
        &out,
        existing,
        None,
        Some(&interrupt),
        &mut on_progress,
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    for w in &summary.warnings {
        eprintln!("{command}: warning: {w}");
    }
    if summary.status == "completed" {
        return Ok(ExitCode::SUCCESS);
    }
    let sealed = summary.folder.clone().unwrap_or(out);
    Ok(run_ended(
        command,
        &summary.status,
        summary.error.as_deref().unwrap_or("unknown"),
        &format!(
            "{} holds its {} finished iterations",
            sealed.display(),
            summary.iterations
        ),
    ))
}

/// What a run that started but did not complete says, and its exit code: 130 for
/// `interrupted`, else (`failed`) 1. `kept` says where its files are.
pub(crate) fn run_ended(command: &str, status: &str, error: &str, kept: &str) -> ExitCode {
    if status == "interrupted" {
        eprintln!("{command}: {error}; {kept} (status interrupted)");
        ExitCode::from(130)
    } else {
        eprintln!("error: the run failed: {error}; {kept} (status {status})");
        ExitCode::from(1)
    }
}

/// A flag that SIGINT or SIGTERM sets, for a run to stop at its next step and seal its folder
/// as `interrupted`; a second signal while the first is pending exits at once (130). A signal
/// the process was started with ignored stays ignored ([`gradgym_benchmarks::sweep::handled_signals`]).
pub(crate) fn interrupt_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let interrupt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in gradgym_benchmarks::sweep::handled_signals() {
        signal_hook::flag::register_conditional_shutdown(signal, 130, interrupt.clone())
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(signal, interrupt.clone())
            .context("cannot install a signal handler")?;
    }
    // Said when the run has not stopped half a second after the signal (its next check can be
    // a second away: a chunk of best-of-n's samples, a gradient step): a user who hears
    // nothing presses Ctrl-C again, which ends the process without sealing the run. A run
    // that stops sooner says so itself. A handler cannot print; this thread looks every 50 ms.
    let seen = interrupt.clone();
    std::thread::spawn(move || {
        while !seen.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        eprintln!(
            "\ngradgym: signal received: stopping at the next safe point and sealing the run (a second signal ends the process at once)"
        );
    });
    Ok(interrupt)
}

pub fn run_info() -> Result<ExitCode> {
    use gradgym_agents::build_info::*;
    println!("gradgym {GRADGYM_VERSION} (git {})", git_revision());
    println!("libtorch {LIBTORCH_VERSION} via tch 0.24.0");
    println!(
        "CUDA available: {} ({} device(s))",
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    );
    println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    println!("libtorch threads: {}", tch::get_num_threads());
    println!("malloc: {}", crate::malloc::describe());
    println!(
        "CPU cores: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    #[cfg(target_arch = "x86_64")]
    let simd: Vec<&str> = [
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
    ]
    .into_iter()
    .filter_map(|(name, seen)| seen.then_some(name))
    .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let simd: Vec<&str> = Vec::new();
    let simd = if simd.is_empty() {
        "none".to_string()
    } else {
        simd.join(" ")
    };
    println!(
        "gradient steps (backend = auto): native on the CPU (SIMD seen: {}), libtorch on CUDA",
        simd
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run folder of `gradgym train` or of a sweep (`runs/<id>/`), or one of its
    /// `checkpoints/iter-<NNNNNN>/` folders (the run's config.toml is then two levels up).
    run_dir: PathBuf,
    /// Deterministic episodes (default: the run's eval_episodes).
    #[arg(long)]
    episodes: Option<usize>,
    /// Seed of the evaluation envs (default: the run's seed, which repeats its evaluation).
    #[arg(long)]
    seed: Option<u64>,
    /// Write every step of every episode (episode, t, observation, action, reward,
    /// terminated, truncated) to this CSV file (refused if it exists, unless --overwrite; never
    /// inside the run's folder).
    #[arg(long)]
    render_csv: Option<PathBuf>,
    /// Replace an existing --render-csv file, if it is an earlier trace (or empty).
    #[arg(long)]
    overwrite: bool,
}

/// The `config.toml` of the run whose policy `dir` holds: in `dir`, or two levels up from a
/// `checkpoints/iter-<NNNNNN>/` folder.
fn run_config_path(dir: &Path) -> Option<PathBuf> {
    [dir.join("config.toml"), dir.join("../../config.toml")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Refuses a `--render-csv` path that is a folder, lies inside the run's folder (whose files
/// it would replace), or exists without `--overwrite`: before any episode is run.
fn check_render_csv(path: &Path, run_dir: &Path, overwrite: bool) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "--render-csv {}: is a folder; give a file name",
            path.display()
        );
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The run's folder: that of its config.toml (two levels up from a checkpoint's folder).
    let run_root = run_config_path(run_dir)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| run_dir.to_path_buf());
    if let (Ok(parent), Ok(run)) = (parent.canonicalize(), run_root.canonicalize())
        && parent.starts_with(&run)
    {
        anyhow::bail!(
            "--render-csv {}: lies inside the run's folder {}, whose files are the run's; write it elsewhere",
            path.display(),
            run_root.display()
        );
    }
    // A device, FIFO or link is not a file to replace: a rename over /dev/null, or a read of
    // a FIFO that never ends.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_file()
    {
        anyhow::bail!(
            "--render-csv {}: exists and is not a regular file (a device, pipe or link); give a file name",
            path.display()
        );
    }
    if path.exists() {
        anyhow::ensure!(
            overwrite,
            "--render-csv {}: exists; choose another file, or pass --overwrite to replace it",
            path.display()
        );
        // --overwrite replaces an earlier trace (or an empty file), never another kind of
        // file: a sweep's summary.csv or a user's data is not ours to replace.
        let head = gradgym_agents::run_folder::read_head(path, RENDER_HEADER.len() as u64)
            .with_context(|| format!("--render-csv {}: cannot read", path.display()))?;
        anyhow::ensure!(
            head.is_empty() || head == RENDER_HEADER.as_bytes(),
            "--render-csv {}: exists and is not a trace `gradgym eval` wrote (it does not begin `{RENDER_HEADER}`); --overwrite replaces only those, so choose another file",
            path.display()
        );
    }
    Ok(())
}

/// How every `--render-csv` file begins (the columns after it depend on the env).
const RENDER_HEADER: &str = "episode,t,obs_0,";

/// The fields every `config.toml` gradgym writes for a run sets, whatever its version: a file
/// without them (empty, cut, or not a run's) would evaluate under defaults silently.
const RUN_CONFIG_FIELDS: [&str; 3] = ["env_id", "algo", "seed"];

/// `gradgym eval`: loads a saved policy and reports the returns of deterministic episodes.
pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    use gradgym_agents::{checkpoint, collect};
    let dir = &args.run_dir;
    if let Some(path) = &args.render_csv {
        check_render_csv(path, dir, args.overwrite)?;
    }
    let (policy, saved) = checkpoint::load(dir)?;
    let config_path = run_config_path(dir)
        .with_context(|| format!("{}: no config.toml here or two levels up", dir.display()))?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let layer = Layer::new(config_path.display().to_string(), text);
    let mut config = TrainConfig::default()
        .overlay_toml(&layer.text, &layer.source)
        .map_err(|e| configs::located(e, &layer))?;
    let table: toml::Table = layer.text.parse()?;
    // `--seed` gives the one field a default would otherwise fill in.
    if let Some(missing) = RUN_CONFIG_FIELDS
        .iter()
        .filter(|k| !(**k == "seed" && args.seed.is_some()))
        .find(|k| !table.contains_key(**k))
    {
        anyhow::bail!(
            "{}: sets no `{missing}`; a run's config.toml names every field (is it empty or cut?), and eval will not fill one in with a default",
            config_path.display()
        );
    }
    anyhow::ensure!(
        saved.env_id == config.env_id,
        "{}: the policy was trained on {} but config.toml says {}",
        dir.display(),
        saved.env_id,
        config.env_id
    );
    anyhow::ensure!(
        saved.hidden_sizes == config.hidden_sizes,
        "{}: the saved policy's hidden layers are {:?} but config.toml says hidden_sizes = {:?}; they are not one run's files",
        dir.display(),
        saved.hidden_sizes,
        config.hidden_sizes
    );
    if let Some(n) = args.episodes {
        anyhow::ensure!(n >= 1, "--episodes must be at least 1");
        anyhow::ensure!(
            n <= gradgym_agents::limits::MOST_SIZE,
            "--episodes {n}: more than gradgym allows ({})",
            gradgym_agents::limits::MOST_SIZE
        );
        config.eval_episodes = n;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    anyhow::ensure!(
        config.eval_episodes >= 1,
        "the run's eval_episodes is 0; pass --episodes N"
    );
    let spec = gradgym_envs::spec(&config.env_id)?;
    collect::check_fits(&policy, &spec)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("policy.json").display()))?;
    let mut trace = Vec::new();
    let returns = collect::evaluate_episodes(
        &config,
        &policy,
        args.render_csv.as_ref().map(|_| &mut trace),
    )?;
    if let Some(path) = &args.render_csv {
        let obs_dim = policy.obs_dim();
        let action_dim = trace.first().map_or(1, |s| s.action.len());
        let mut header = vec!["episode".to_string(), "t".to_string()];
        header.extend((0..obs_dim).map(|k| format!("obs_{k}")));
        header.extend((0..action_dim).map(|k| format!("action_{k}")));
        header.extend(["reward", "terminated", "truncated"].map(String::from));
        let mut text = header.join(",") + "\n";
        for s in &trace {
            let mut row = vec![s.episode.to_string(), s.t.to_string()];
            row.extend(s.obs.iter().map(|x| x.to_string()));
            row.extend(s.action.iter().map(|x| x.to_string()));
            row.extend([
                s.reward.to_string(),
                s.terminated.to_string(),
                s.truncated.to_string(),
            ]);
            text.push_str(&row.join(","));
            text.push('\n');
        }
        gradgym_agents::run_folder::write_atomic(path, text.as_bytes())?;
    }
    let mean = returns.iter().sum::<f64>() / returns.len() as f64;
    let std =
        (returns.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / returns.len() as f64).sqrt();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "run": dir.display().to_string(),
            "env_id": config.env_id,
            "iteration": saved.iteration,
            "global_step": saved.global_step,
            "seed": config.seed,
            "episodes": returns.len(),
            "eval_return_mean": mean,
            "eval_return_std": std,
            "returns": returns,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
