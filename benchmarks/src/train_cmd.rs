//! `gradgym train` and `gradgym info`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use gradgym_agents::config::{Algo, TrainConfig};
use gradgym_agents::train::{Progress, train};
use gradgym_benchmarks::configs::{self, Layer, toml_line};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Environment id (see `gradgym envs list`).
    #[arg(long)]
    env: Option<String>,
    /// reinforce, a2c or ppo.
    #[arg(long)]
    algo: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    total_timesteps: Option<u64>,
    /// A TOML file of config keys (same names as the flags, with underscores).
    #[arg(long)]
    config: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Output folder (default: out/runs/<env>__<algo>__<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    learning_rate: Option<String>,
    #[arg(long)]
    num_envs: Option<String>,
    #[arg(long)]
    num_steps: Option<String>,
    #[arg(long)]
    anneal_lr: Option<String>,
    #[arg(long)]
    gamma: Option<String>,
    #[arg(long)]
    gae_lambda: Option<String>,
    #[arg(long)]
    num_minibatches: Option<String>,
    #[arg(long)]
    update_epochs: Option<String>,
    #[arg(long)]
    norm_adv: Option<String>,
    #[arg(long)]
    clip_coef: Option<String>,
    #[arg(long)]
    clip_vloss: Option<String>,
    #[arg(long)]
    ent_coef: Option<String>,
    #[arg(long)]
    vf_coef: Option<String>,
    #[arg(long)]
    max_grad_norm: Option<String>,
    #[arg(long)]
    target_kl: Option<String>,
    /// clip or kl.
    #[arg(long)]
    ppo_loss: Option<String>,
    #[arg(long)]
    kl_coef: Option<String>,
    #[arg(long)]
    kl_target: Option<String>,
    /// total or reward_to_go.
    #[arg(long)]
    reinforce_return: Option<String>,
    #[arg(long)]
    baseline: Option<String>,
    /// e.g. "[64, 64]".
    #[arg(long)]
    hidden_sizes: Option<String>,
    #[arg(long)]
    log_std_init: Option<String>,
    #[arg(long)]
    eval_episodes: Option<String>,
    #[arg(long)]
    torch_threads: Option<String>,
    /// auto (native on the CPU, libtorch on CUDA), native or libtorch.
    #[arg(long)]
    backend: Option<String>,
    /// Never draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Defaults → shipped config for (env, algo) → `--config` file → flags.
pub fn resolve(args: &TrainArgs) -> Result<(TrainConfig, Vec<String>)> {
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
            .map_err(anyhow::Error::msg)?,
        None => TrainConfig::default(),
    };
    let env_id = args.env.clone().unwrap_or(probe.env_id.clone());
    let algo = match &args.algo {
        Some(a) => Algo::parse(a).map_err(anyhow::Error::msg)?,
        None => probe.algo,
    };
    let mut lines = Vec::new();
    if let Some(seed) = args.seed {
        lines.push(format!("seed = {seed}"));
    }
    if let Some(t) = args.total_timesteps {
        lines.push(format!("total_timesteps = {t}"));
    }
    if let Some(d) = &args.device {
        lines.push(toml_line("device", &format!("{d:?}")));
    }
    let flags: [(&str, &Option<String>); 25] = [
        ("learning_rate", &args.learning_rate),
        ("num_envs", &args.num_envs),
        ("num_steps", &args.num_steps),
        ("anneal_lr", &args.anneal_lr),
        ("gamma", &args.gamma),
        ("gae_lambda", &args.gae_lambda),
        ("num_minibatches", &args.num_minibatches),
        ("update_epochs", &args.update_epochs),
        ("norm_adv", &args.norm_adv),
        ("clip_coef", &args.clip_coef),
        ("clip_vloss", &args.clip_vloss),
        ("ent_coef", &args.ent_coef),
        ("vf_coef", &args.vf_coef),
        ("max_grad_norm", &args.max_grad_norm),
        ("target_kl", &args.target_kl),
        ("ppo_loss", &args.ppo_loss),
        ("kl_coef", &args.kl_coef),
        ("kl_target", &args.kl_target),
        ("reinforce_return", &args.reinforce_return),
        ("baseline", &args.baseline),
        ("hidden_sizes", &args.hidden_sizes),
        ("log_std_init", &args.log_std_init),
        ("eval_episodes", &args.eval_episodes),
        ("torch_threads", &args.torch_threads),
        ("backend", &args.backend),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            lines.push(toml_line(key, v));
        }
    }
    let mut layers: Vec<Layer> = user.into_iter().collect();
    layers.push(Layer::new("command-line flags", lines.join("\n")));
    configs::resolve(&env_id, algo, &layers)
}

pub fn run_train(args: TrainArgs) -> Result<ExitCode> {
    let (config, sources) = resolve(&args)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "out/runs/{}__{}__{}",
            config.env_id,
            config.algo.name(),
            config.seed
        ))
    });
    eprintln!(
        "gradgym train: {} {} seed {} ({} steps) → {} [config: {}]",
        config.env_id,
        config.algo.name(),
        config.seed,
        config.total_timesteps,
        out.display(),
        sources.join(" → ")
    );
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
    let mut on_progress = |p: Progress| {
        if let Some(bar) = &bar {
            bar.set_position(p.global_step.min(p.total_timesteps));
            if let Some(r) = p.recent_return {
                bar.set_message(format!("return {r:.1}"));
            }
        }
    };
    let summary = train(&config, &out, &mut on_progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary.status == "completed" {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the run failed: {}",
            summary.error.as_deref().unwrap_or("unknown")
        );
        Ok(ExitCode::from(1))
    }
}

pub fn run_info() -> Result<ExitCode> {
    use gradgym_agents::build_info::*;
    println!("gradgym {GRADGYM_VERSION} (git {GIT_REVISION})");
    println!("libtorch {LIBTORCH_VERSION} via tch 0.24.0");
    println!(
        "CUDA available: {} ({} device(s))",
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    );
    println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    println!("libtorch threads: {}", tch::get_num_threads());
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
