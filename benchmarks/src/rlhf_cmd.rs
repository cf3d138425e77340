//! `gradgym rlhf`: RLHF on the review language, whole or one stage at a time, and its
//! throughput benchmark.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gradgym_agents::config::rlhf::{ModelConfig, RlConfig, RlhfConfig, TextAlgo};
use gradgym_agents::config::{Algo, BackendKind};
use gradgym_agents::device::parse_device;
use gradgym_agents::limits::MOST_THREADS;
use gradgym_agents::nn::gelu;
use gradgym_agents::nn::gpt::{Gpt, GptConfig};
use gradgym_agents::nn::sampling::{SamplingConfig, generate, generate_libtorch};
use gradgym_agents::rlhf::learner::TokenLearner;
use gradgym_agents::rlhf::pipeline::{self, Inputs, Stage};
use gradgym_agents::run_folder::Existing;
use gradgym_envs::rng;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RlhfArgs {
    #[command(subcommand)]
    stage: Option<RlhfStage>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Subcommand, Debug)]
enum RlhfStage {
    /// Pretraining on the grammar's corpus, then SFT on demonstrations (writes pretrain/, sft/).
    Sft(CommonArgs),
    /// Labels from the gold judge (or --data FILE) and the reward model, on --sft DIR.
    Rm(CommonArgs),
    /// Token-level RL (rl.algo) on --sft DIR against the reward model --rm DIR.
    Rl(CommonArgs),
    /// Best-of-n for eval.best_of_n on --sft DIR with the reward model --rm DIR.
    Bon(CommonArgs),
    /// Samples of --model DIR or --sft DIR (one of them), scored by the gold judge (and --rm DIR).
    Sample(CommonArgs),
    /// Generation and PPO-update throughput on the GPT-2-shaped bench model, and peak memory.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct CommonArgs {
    /// The run's TOML config (every field has a default; see docs/rlhf.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides the config's seed (at most 2⁶³ − 1, the largest integer TOML holds).
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64)
    )]
    seed: Option<u64>,
    /// Sets one config field, as `table.field=VALUE` (a TOML value; repeatable), after the
    /// file: `--set rl.beta=0.01 --set labels.comparisons=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The run folder (default: out/rlhf/<stage>__seed<N>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overrides the config's device: cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// `rm` and a whole run: a preference JSONL file to fit the reward model on instead of the
    /// judge's labels.
    #[arg(long)]
    data: Option<PathBuf>,
    /// `rm`, `rl`, `bon`, `sample`: an SFT model folder (or a run folder holding sft/).
    #[arg(long)]
    sft: Option<PathBuf>,
    /// `rl`, `bon`, `sample`: a reward model folder (or a run folder holding reward_model/).
    #[arg(long)]
    rm: Option<PathBuf>,
    /// `sample`: the model to sample (a model folder, or a run folder holding policy/).
    #[arg(long)]
    model: Option<PathBuf>,
    /// `sample`: how many evaluation prompts to answer (1 to eval.prompts; default 16, or
    /// eval.prompts if fewer).
    #[arg(long)]
    samples: Option<usize>,
    /// Replace the output folder if it exists (kept until the new run is complete).
    #[arg(long)]
    overwrite: bool,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug, Clone)]
struct BenchArgs {
    /// Bench the model of this RLHF config instead (its `[model]` over the review language's
    /// vocabulary, `rl.batch_size` prompts of 8 tokens, `rl.max_response` response tokens):
    /// `--config configs/rlhf/demo.toml` is the demo model.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Timed repetitions (the median is printed).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// libtorch intra-op threads (0: its default).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=MOST_THREADS as i64))]
    threads: u16,
    /// The PPO updates' backend (`rl.backend`): auto (native on the CPU, libtorch on a GPU),
    /// native (CPU only), libtorch, or both, their updates alternated (the peak memory is then
    /// the two learners' together). Default: the `--config` file's `rl.backend`, else auto
    /// (the RL stage's default).
    #[arg(long, value_parser = ["auto", "native", "libtorch", "both"])]
    backend: Option<String>,
}

pub fn run(args: RlhfArgs) -> Result<ExitCode> {
    let (stage, common) = match args.stage {
        None => (Stage::All, args.common),
        Some(RlhfStage::Sft(c)) => (Stage::Sft, c),
        Some(RlhfStage::Rm(c)) => (Stage::Rm, c),
        Some(RlhfStage::Rl(c)) => (Stage::Rl, c),
        Some(RlhfStage::Bon(c)) => (Stage::Bon, c),
        Some(RlhfStage::Sample(c)) => (Stage::Sample, c),
        Some(RlhfStage::Bench(b)) => return bench(&b),
    };
    check_flags(stage, &common)?;
    // --seed and --device apply before the config is validated, so a file written for a GPU
    // machine runs here with --device cpu.
    let mut sets = common.set.clone();
    // A flag and a --set of the same field that disagree: which one was meant is unknown.
    // The --set's value is read as TOML, as the config reads it (`1_000` is 1000).
    let set_of = |key: &str| -> Option<(String, toml::Value)> {
        common.set.iter().rev().find_map(|s| {
            let (k, v) = s.split_once('=')?;
            (k.trim() == key).then(|| {
                let value = apply_sets(toml::Table::new(), std::slice::from_ref(s))
                    .ok()
                    .and_then(|mut t| t.remove(key))
                    .unwrap_or_else(|| toml::Value::String(v.trim().to_string()));
                (v.trim().to_string(), value)
            })
        })
    };
    if let Some(s) = common.seed {
        if let Some((v, value)) = set_of("seed")
            && value.as_integer().is_none_or(|i| i < 0 || i as u64 != s)
        {
            anyhow::bail!("--seed {s} and --set seed={v} disagree; give one of them");
        }
        sets.push(format!("seed={s}"));
    }
    if let Some(d) = &common.device {
        let flag = parse_device(d).map_err(|e| anyhow::anyhow!("--device {d}: {e}"))?;
        if let Some((v, value)) = set_of("device")
            && value
                .as_str()
                .is_none_or(|named| parse_device(named).ok() != Some(flag))
        {
            anyhow::bail!("--device {d} and --set device={v} disagree; give one of them");
        }
        sets.push(format!("device={}", toml::Value::String(d.clone())));
    }
    let mut inputs = Inputs {
        sft: common.sft.clone(),
        reward_model: common.rm.clone(),
        data: common.data.clone(),
        model: common.model.clone(),
        samples: 0,
    };
    // A language model brought as input is the run's model: its shape is the config's
    // [model] before the config is checked (the run says so when it differs).
    let shape = pipeline::input_shape(stage, &inputs);
    let (config, replaced) = load_config(
        common.config.as_deref(),
        &sets,
        shape.as_ref().map(|(s, path)| (s, path.as_path())),
    )?;
    inputs.samples = common.samples.unwrap_or(16.min(config.eval.prompts));
    let out = common.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("out/rlhf/{}__seed{}", stage.name(), config.seed))
    });
    let existing = if common.overwrite {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    let start = Instant::now();
    let quiet = common.quiet;
    let mut header = String::new();
    if !quiet {
        let rl = if config.algo().grouped() {
            let k = config.rl.generations();
            format!(
                "{} ({} updates of {} prompts × {k} responses)",
                config.rl.algo,
                config.rl.updates,
                config.rl.batch_size / k
            )
        } else {
            format!(
                "{} ({} updates of {} prompts)",
                config.rl.algo, config.rl.updates, config.rl.batch_size
            )
        };
        let what = match stage {
            Stage::All => format!("pretraining, SFT, labels, reward model, best-of-n, {rl}"),
            Stage::Sft => "pretraining and SFT".to_string(),
            Stage::Rm => "labels and reward model".to_string(),
            Stage::Rl => rl,
            Stage::Bon => format!("best-of-n for n in {:?}", config.eval.best_of_n),
            Stage::Sample => format!("{} samples", inputs.samples),
        };
        header = format!(
            "gradgym rlhf {}: seed {}, {what} → {}",
            stage.name(),
            config.seed,
            out.display()
        );
        if let Some(own) = replaced {
            header.push_str(&format!(
                "\n  the input model has {}; the run uses that instead of the config's [model] ({})",
                config.model.describe(),
                own.describe()
            ));
        }
    }
    // The header waits for the pipeline's first line: a refused input (a bad --data line, a
    // missing --sft) is then the only thing printed, not an "→ OUT" for a run that never
    // started.
    let mut header = Some(header).filter(|h| !h.is_empty());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar_shown = false;
    // Off a terminal (a log file, CI), a bar's state is printed as a plain line when nothing
    // has been printed for this long, so a long stage is never silent for minutes.
    const QUIET_FOR: f64 = 30.0;
    let mut last_line = 0.0f64;
    let mut progress = |line: &str| {
        if quiet {
            return;
        }
        if let Some(h) = header.take() {
            eprintln!("{h}");
        }
        let elapsed = start.elapsed().as_secs_f64();
        if let Some(state) = line.strip_prefix(pipeline::PROGRESS) {
            // `rl 12/60 proxy …` as a bar: rl [#####.....] 12/60 proxy …
            let (label, rest) = state.split_once(' ').unwrap_or(("", state));
            if terminal {
                let (done, total) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.split_once('/'))
                    .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)))
                    .unwrap_or((0.0, 1.0));
                let width = 30;
                let filled = ((done / total) * width as f64).round() as usize;
                eprint!(
                    "\r  [{elapsed:6.1}s] {label} [{}{}] {rest}\x1b[K",
                    "#".repeat(filled.min(width)),
                    ".".repeat(width - filled.min(width))
                );
                bar_shown = true;
            } else if elapsed - last_line >= QUIET_FOR {
                eprintln!("  [{elapsed:6.1}s] {label} {rest}");
                last_line = elapsed;
            }
            return;
        }
        if bar_shown {
            eprintln!();
            bar_shown = false;
        }
        eprintln!("  [{elapsed:6.1}s] {line}");
        last_line = elapsed;
    };
    // SIGINT or SIGTERM ends the run at its next step, sealed as `interrupted`.
    let interrupt = crate::train_cmd::interrupt_on_signals()?;
    let result = pipeline::run(
        &config,
        stage,
        &inputs,
        &out,
        existing,
        &mut progress,
        Some(&interrupt),
    );
    // A run that started but printed nothing still names itself.
    let started = result
        .as_ref()
        .map_or_else(|e| e.is::<pipeline::RunEnded>(), |_| true);
    if let Some(h) = header.take().filter(|_| started) {
        eprintln!("{h}");
    }
    if terminal && !quiet {
        eprintln!();
    }
    let result = match result {
        Ok(r) => r,
        // The run started and its folder was sealed with what it wrote: not a refusal of its
        // input (exit 2) but a run that ended early (1, or 130 for a signal, as `gradgym train`).
        Err(e) => match e.downcast::<pipeline::RunEnded>() {
            Ok(ended) => {
                return Ok(crate::train_cmd::run_ended(
                    &format!("gradgym rlhf {}", stage.name()),
                    ended.status,
                    &format!("{:#}", ended.error),
                    &format!("{} holds what the run wrote", ended.folder.display()),
                ));
            }
            // A signal before the run's folder was made: nothing to keep.
            Err(e) if e.is::<gradgym_agents::error::Interrupted>() => {
                return Ok(crate::train_cmd::run_ended(
                    &format!("gradgym rlhf {}", stage.name()),
                    "interrupted",
                    &format!("{e:#}"),
                    &format!("nothing was written ({} was not made)", out.display()),
                ));
            }
            Err(e) => return Err(e),
        },
    };
    if !quiet {
        eprintln!(
            "done in {:.1}s: {}",
            start.elapsed().as_secs_f64(),
            result["folder"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a flag that `stage` does not read, rather than ignoring it (or recording in the
/// manifest an input that was never used).
fn check_flags(stage: Stage, c: &CommonArgs) -> Result<()> {
    use Stage::*;
    let flags: [(&str, bool, &[Stage]); 5] = [
        ("--data", c.data.is_some(), &[All, Rm]),
        ("--sft", c.sft.is_some(), &[Rm, Rl, Bon, Sample]),
        ("--rm", c.rm.is_some(), &[Rl, Bon, Sample]),
        ("--model", c.model.is_some(), &[Sample]),
        ("--samples", c.samples.is_some(), &[Sample]),
    ];
    for (flag, given, readers) in flags {
        if given && !readers.contains(&stage) {
            let names: Vec<String> = readers
                .iter()
                .map(|s| match s {
                    All => "`gradgym rlhf` (all stages)".to_string(),
                    s => format!("`gradgym rlhf {}`", s.name()),
                })
                .collect();
            anyhow::bail!(
                "`gradgym rlhf{}` does not read {flag}; it is read by {}",
                match stage {
                    All => String::new(),
                    s => format!(" {}", s.name()),
                },
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// The config file (or the defaults) with `--set` overrides applied, and `[model]` replaced by
/// `shape` if given (an input model's; the config's own `[model]` is returned beside it where
/// they differ); errors name the file or the flag.
fn load_config(
    path: Option<&std::path::Path>,
    sets: &[String],
    shape: Option<(&ModelConfig, &std::path::Path)>,
) -> Result<(RlhfConfig, Option<ModelConfig>)> {
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (String::new(), "the default config".to_string()),
    };
    let base: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    // The file's own faults are the file's, before any --set is tried on it.
    toml::from_str::<RlhfConfig>(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let mut table = apply_sets(base.clone(), sets)?;
    // A field that does not exist or a value of the wrong type: blame the --set that brought
    // it, by the field's full name (the merged text's line numbers would mean nothing to the
    // user): the one without which the rest would parse.
    if let Err(e) = toml::from_str::<RlhfConfig>(&toml::to_string(&table)?) {
        for (i, set) in sets.iter().enumerate() {
            let mut others = sets.to_vec();
            others.remove(i);
            let t = apply_sets(base.clone(), &others)?;
            if toml::from_str::<RlhfConfig>(&toml::to_string(&t)?).is_ok() {
                let key = set.split_once('=').map_or(set.as_str(), |(k, _)| k.trim());
                anyhow::bail!("--set {set}: field `{key}`: {}", e.message().trim());
            }
        }
    }
    let mut replaced = None;
    if let Some((shape, path)) = shape {
        // The config file's [model] gives way to the input model's shape (said on stderr); a
        // --set the user wrote for this run does not give way silently: one that asks for
        // another shape is refused.
        let theirs = toml::Value::try_from(shape).context("the input model's shape")?;
        let asked = apply_sets(toml::Table::new(), sets)?;
        if let Some(toml::Value::Table(mine)) = asked.get("model") {
            for (field, value) in mine {
                if let Some(has) = theirs.get(field).filter(|h| *h != value) {
                    let set = sets
                        .iter()
                        .rev()
                        .find(|s| {
                            s.split_once('=')
                                .is_some_and(|(k, _)| k.trim() == format!("model.{field}"))
                        })
                        .cloned()
                        .unwrap_or_else(|| format!("model.{field}={value}"));
                    anyhow::bail!(
                        "--set {set}: field `model.{field}`: the input model {} has {field} = {}, \
                         and a model brought as input is the run's model; drop the --set, or \
                         fit a model of that shape (`gradgym rlhf sft`)",
                        path.display(),
                        has
                    );
                }
            }
        }
        let own: ModelConfig = match table.get("model") {
            Some(m) => m.clone().try_into()?,
            None => ModelConfig::default(),
        };
        if own != *shape {
            replaced = Some(own);
        }
        table.insert("model".into(), theirs);
    }
    let mut with = source;
    if !sets.is_empty() {
        with = format!("{with} with --set {}", sets.join(" --set "));
    }
    if let Some((_, path)) = shape {
        with = format!("{with}, [model] from the input model {}", path.display());
    }
    Ok((
        RlhfConfig::from_toml(&toml::to_string(&table)?, &with)?,
        replaced,
    ))
}

/// `table` with each `KEY=VALUE` of `sets` written into it (VALUE as TOML, else as a string).
fn apply_sets(mut table: toml::Table, sets: &[String]) -> Result<toml::Table> {
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {set}: expected KEY=VALUE"))?;
        if let Some(why) = gradgym_benchmarks::configs::flag_value_problem(value) {
            anyhow::bail!("--set {set}: {why}");
        }
        let value: toml::Value = match format!("v = {value}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("the key just written"),
            Err(_) => toml::Value::String(value.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut at = &mut table;
        for part in &parts[..parts.len() - 1] {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("--set {set}: `{part}` is not a table"))?;
        }
        at.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(table)
}

fn peak_rss_mib() -> Option<f64> {
    let bytes = gradgym_agents::host_memory::proc_bytes("/proc/self/status", "VmHWM")?;
    Some(bytes as f64 / (1024.0 * 1024.0))
}

/// Waits for the GPU's queued work, so that a timer read after it counts that work.
fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// `tokens` over the median wall time of `reps` calls of `once` (each ended by a device
/// sync), after one warm-up call.
fn median_rate(
    reps: usize,
    tokens: f64,
    device: tch::Device,
    mut once: impl FnMut() -> Result<()>,
) -> Result<f64> {
    once()?;
    sync(device);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        once()?;
        sync(device);
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(tokens / median(times))
}

/// The throughput benchmark of issue 13: by default the GPT-2-shaped bench model (vocabulary
/// 512, context 64, width 128, 2 layers, 4 heads), 64 prompts of 8 tokens, 24 response tokens,
/// fp32; with `--config`, that config's model and batch.
fn bench(args: &BenchArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let loaded = match &args.config {
        Some(path) => Some(load_config(Some(path), &[], None)?.0),
        None => None,
    };
    // --threads, else a config's `threads`, else libtorch's default.
    let threads = match (args.threads, &loaded) {
        (0, Some(c)) => c.threads,
        (t, _) => t as usize,
    };
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    // The backend asked for, and where the ask came from (named if it is refused).
    let (backend, source) = match (&args.backend, &loaded) {
        (Some(b), _) => (b.as_str(), "--backend".to_string()),
        (None, Some(c)) => (
            c.rl.backend.name(),
            format!(
                "rl.backend in {}",
                args.config.as_ref().expect("loaded").display()
            ),
        ),
        (None, None) => ("auto", "--backend".to_string()),
    };
    if matches!(backend, "native" | "both") && args.device != "cpu" {
        eprintln!(
            "gradgym rlhf bench: {source} {backend}: the native backend runs on the CPU only, and --device is {}",
            args.device
        );
        return Ok(ExitCode::from(2));
    }
    let device = parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let (with_libtorch, with_native) = match backend {
        "native" => (false, true),
        "both" => (true, true),
        "libtorch" => (true, false),
        _ => match BackendKind::Auto.resolve(device) {
            BackendKind::Native => (false, true),
            _ => (true, false),
        },
    };
    let prompt_len = gradgym_envs::text::PROMPT_LEN;
    // With --config, its model, batch, lengths and PPO update's shape (epochs, minibatches).
    let (config, batch, response, epochs, minibatches) = match &loaded {
        None => (GptConfig::bench(), 64usize, 24usize, 4usize, 1usize),
        Some(c) => (
            pipeline::model_config(c),
            c.rl.batch_size,
            c.rl.max_response,
            c.rl.update_epochs,
            c.rl.num_minibatches,
        ),
    };
    let mut init = rng::stream(0, "bench/rlhf", 0);
    let policy = Gpt::new(config.clone(), device, &mut init)?;
    let reference = policy.duplicate()?;
    let reward_model = policy.with_scalar_head(&mut init)?;
    let value = reward_model.duplicate()?;
    let mut data = rng::stream(0, "bench/rlhf-data", 0);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..prompt_len)
                .map(|_| {
                    (rng::uniform01(&mut data) * config.vocab as f64) as u32 % config.vocab as u32
                })
                .collect()
        })
        .collect();
    // No row stops early: every response is 24 tokens.
    let never = u32::MAX;
    let sampling = SamplingConfig::default();
    println!(
        "gradgym rlhf bench{}: {} parameters (vocab {}, context {}, width {}, {} layers, {} heads), {batch} prompts × {prompt_len} tokens, {response} response tokens, fp32, {} threads, {:?}",
        args.config
            .as_ref()
            .map_or(String::new(), |p| format!(" ({})", p.display())),
        config.num_parameters(),
        config.vocab,
        config.context,
        config.width,
        config.layers,
        config.heads,
        tch::get_num_threads(),
        device
    );
    println!("malloc: {}", crate::malloc::describe());
    println!(
        "backend of the PPO updates: {}",
        match (backend, with_native) {
            ("both", _) => "libtorch and native, their updates alternated".to_string(),
            ("auto", true) => "native (rl.backend = \"auto\", the default, on the CPU)".into(),
            ("auto", false) => "libtorch (rl.backend = \"auto\", the default, on a GPU)".into(),
            (b, _) => format!("{b} (rl.backend = \"{b}\")"),
        }
    );
    let tokens = (batch * response) as f64;
    let reps = args.reps;
    let gen_rate = median_rate(reps, tokens, device, || {
        let g = generate(&policy, &prompts, response, never, &sampling, &mut data);
        assert!(g.iter().all(|g| g.tokens.len() == response));
        Ok(())
    })?;
    // On the CPU, generation runs gradgym's own forward pass (agents/src/nn/gpt_cpu.rs); the
    // same generation through libtorch's operators, for comparison.
    let torch_rate = if device == tch::Device::Cpu {
        Some(median_rate(reps, tokens, device, || {
            let g = generate_libtorch(&policy, &prompts, response, never, &sampling, &mut data);
            assert!(g.iter().all(|g| g.tokens.len() == response));
            Ok(())
        })?)
    } else {
        None
    };
    let targets = args.config.is_none();
    let rl = RlConfig {
        update_epochs: epochs,
        num_minibatches: minibatches,
        batch_size: batch,
        max_response: response,
        backend: BackendKind::Libtorch,
        ..RlConfig::default()
    };
    // The libtorch backend and the native one, each its own learner from the same weights.
    let native_rl = RlConfig {
        backend: BackendKind::Native,
        ..rl.clone()
    };
    let mut learners = Vec::new();
    if with_libtorch {
        learners.push(TokenLearner::new(
            Algo::Ppo,
            rl,
            policy.duplicate()?,
            value.duplicate()?,
        )?);
    }
    if with_native {
        learners.push(TokenLearner::new(Algo::Ppo, native_rl, policy, value)?);
    }
    let mut phases: Vec<[f64; 3]> = Vec::with_capacity(reps + 1);
    let mut native_phases: Vec<[f64; 3]> = Vec::with_capacity(reps + 1);
    // One update of `learner` on `prompts`, its phases' times pushed to `phases`: PPO's below,
    // and RLOO's on its grouped prompts.
    let mut update = |learner: &mut TokenLearner,
                      phases: &mut Vec<[f64; 3]>,
                      prompts: &[Vec<u32>]|
     -> Result<()> {
        let t0 = Instant::now();
        let g = generate(
            &learner.policy,
            prompts,
            response,
            never,
            &sampling,
            &mut data,
        );
        let p: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let r: Vec<&[u32]> = g.iter().map(|g| g.tokens.as_slice()).collect();
        sync(device);
        let t1 = Instant::now();
        let rollout = learner.rollout(&reference, &reward_model, &p, &r, 0.05);
        sync(device);
        let t2 = Instant::now();
        learner.update(&rollout, &mut data)?;
        sync(device);
        let t3 = Instant::now();
        phases.push([t1 - t0, t2 - t1, t3 - t2].map(|d| d.as_secs_f64() * 1e3));
        Ok(())
    };
    // On the CPU the model's GELU is gradgym's operator (agents/src/nn/gelu.rs); updates with
    // libtorch's `gelu` (the same bits) and updates on the native backend alternate with them
    // (the order turning each round), so that every median sees the same moments of the
    // machine.
    // What alternates: the libtorch backend with gradgym's GELU (what runs), with libtorch's
    // GELU where gradgym's operator exists, and the native backend when both are asked for.
    #[derive(Clone, Copy, PartialEq)]
    enum Variant {
        Libtorch,
        LibtorchGelu,
        Native,
    }
    let mut variants = Vec::new();
    if with_libtorch {
        variants.push(Variant::Libtorch);
        if device == tch::Device::Cpu && gelu::gelu_tanh_fused() {
            variants.push(Variant::LibtorchGelu);
        }
    }
    if with_native {
        variants.push(Variant::Native);
    }
    let (ppo_rate, libtorch_gelu_rate, native_rate) = if variants.len() > 1 {
        // Back to gradgym's operator however this ends.
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                gelu::use_gradgym_operator(true);
            }
        }
        let _restore = Restore;
        let n = variants.len();
        let mut times = vec![vec![]; n];
        let mut discard = vec![];
        for rep in 0..=reps {
            // The order turns each round, so that each goes first as often as the others.
            for j in 0..n {
                let k = (j + rep) % n;
                let variant = variants[k];
                gelu::use_gradgym_operator(variant != Variant::LibtorchGelu);
                let (learner, sink) = match variant {
                    Variant::Libtorch => (&mut learners[0], &mut phases),
                    Variant::LibtorchGelu => (&mut learners[0], &mut discard),
                    Variant::Native => {
                        (learners.last_mut().expect("a learner"), &mut native_phases)
                    }
                };
                let t = Instant::now();
                update(learner, sink, &prompts)?;
                if rep > 0 {
                    times[k].push(t.elapsed().as_secs_f64());
                }
            }
        }
        let rate = |v: Variant| {
            variants
                .iter()
                .position(|&x| x == v)
                .map(|k| tokens / median(times[k].clone()))
        };
        (
            rate(Variant::Libtorch).expect("libtorch runs when two variants alternate"),
            rate(Variant::LibtorchGelu),
            rate(Variant::Native),
        )
    } else {
        (
            median_rate(reps, tokens, device, || {
                update(&mut learners[0], &mut phases, &prompts)
            })?,
            None,
            None,
        )
    };
    // The targets and the peers' figures were measured on the bench model only.
    let (gen_note, ppo_note) = if targets {
        (
            "   (target ≥ 36,000; HF generate ≈ 12,000)",
            "   (target ≥ 3,600; TRL PPOTrainer ≈ 1,200, RLOOTrainer ≈ 4,100)\n  the peers' speeds drift with the machine's (HF generate 7,800-24,000 and TRL's PPOTrainer 820-2,500 tokens/s on the machines of docs/rlhf.md): `make bench-rlhf-peers` measures them alongside",
        )
    } else {
        ("", "")
    };
    println!("generation (KV cache, top-k/top-p off):  {gen_rate:>9.0} tokens/s{gen_note}");
    if let Some(r) = torch_rate {
        println!("  the same through libtorch's operators: {r:>9.0} tokens/s");
    }
    let shape = format!(
        "{epochs} epoch{}, {minibatches} minibatch{}",
        if epochs == 1 { "" } else { "s" },
        if minibatches == 1 { "" } else { "es" }
    );
    println!(
        "{:<40}{ppo_rate:>9.0} tokens/s{ppo_note}",
        format!("PPO end to end ({shape}):")
    );
    if let Some(r) = libtorch_gelu_rate {
        println!(
            "  the same with libtorch's GELU:         {r:>9.0} tokens/s   (alternated with the line above)"
        );
    }
    // Where an update's time goes (medians of the timed updates, the warm-up left out).
    let phase =
        |phases: &[[f64; 3]], i: usize| median(phases.iter().skip(1).map(|p| p[i]).collect());
    println!(
        "  per update: generation {:.1} ms, rollout scoring (policy, value, reference, reward model) {:.1} ms, gradient steps {:.1} ms",
        phase(&phases, 0),
        phase(&phases, 1),
        phase(&phases, 2)
    );
    if let Some(r) = native_rate {
        println!(
            "PPO on the native backend (rl.backend):  {r:>9.0} tokens/s   (alternated with the lines above)"
        );
        println!(
            "  per update: generation {:.1} ms, rollout scoring {:.1} ms, gradient steps {:.1} ms",
            phase(&native_phases, 0),
            phase(&native_phases, 1),
            phase(&native_phases, 2)
        );
    }
    // RLOO as TRL's RLOOTrainer runs in scripts/bench-trl.py: k = 4 responses to each of
    // batch/4 prompts, one gradient step per update, on the backend PPO's line ran by default.
    // PPO's learners are dropped first, so that the peak memory below stays PPO's.
    drop(learners);
    let k = loaded
        .as_ref()
        .filter(|c| c.algo().grouped())
        .map_or(4, |c| c.rl.generations());
    let rloo_rate = if batch % k == 0 && batch >= k {
        let rl = RlConfig {
            num_generations: Some(k),
            update_epochs: 1,
            num_minibatches: 1,
            batch_size: batch,
            max_response: response,
            backend: if with_native {
                BackendKind::Native
            } else {
                BackendKind::Libtorch
            },
            ..RlConfig::default()
        };
        // The same starting weights as PPO's: the reference and the reward model are the
        // policy's and the value function's untrained copies.
        let (p, v) = (reference.duplicate()?, reward_model.duplicate()?);
        let mut learner = TokenLearner::new(TextAlgo::Rloo, rl, p, v)?;
        let grouped: Vec<Vec<u32>> = prompts[..batch / k]
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), k))
            .collect();
        let mut phases = Vec::new();
        Some(median_rate(reps, tokens, device, || {
            update(&mut learner, &mut phases, &grouped)
        })?)
    } else {
        None
    };
    if let Some(r) = rloo_rate {
        println!(
            "{:<40}{r:>9.0} tokens/s{}",
            format!("RLOO end to end (k = {k}, 1 step):"),
            if targets {
                "   (TRL RLOOTrainer ≈ 4,100, the same shape)"
            } else {
                ""
            }
        );
    }
    match (peak_rss_mib(), device) {
        (Some(m), tch::Device::Cpu) => println!(
            "peak memory (VmHWM):                    {m:>9.0} MiB{}",
            if targets {
                "      (TRL ≈ 1,100 MiB)"
            } else {
                ""
            }
        ),
        (Some(m), _) => println!(
            "peak host memory (VmHWM):               {m:>9.0} MiB      (GPU memory not measured: libtorch's allocator statistics are not exposed by tch)"
        ),
        (None, _) => println!("peak memory: not available on this system"),
    }
    Ok(ExitCode::SUCCESS)
}
