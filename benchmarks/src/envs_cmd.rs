//! `gradgym envs …`: list, conformance check, throughput benchmark.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use gradgym_envs::conformance::{self, Tolerances};
use gradgym_envs::rng;
use gradgym_envs::{Actions, ENV_IDS, EnvOptions, Kernel, Space, make_with, spec};

#[derive(Subcommand)]
pub enum EnvsCommand {
    /// Print every registered environment with its spaces and limits.
    List,
    /// Check transitions recorded from Gymnasium (CSV) against gradgym's kernels.
    Check {
        /// A transitions file in the format of tests/fixtures/README.md.
        file: PathBuf,
        /// Largest allowed error of the next state.
        #[arg(long, default_value_t = 1e-6)]
        state_tol: f64,
        /// Largest allowed error of the reward.
        #[arg(long, default_value_t = 1e-6)]
        reward_tol: f64,
        /// Largest allowed error of the observation.
        #[arg(long, default_value_t = 1e-5)]
        obs_tol: f64,
    },
    /// Measure env-steps per second, autoreset included, with actions generated ahead.
    Bench {
        #[arg(long)]
        env: String,
        #[arg(long, default_value_t = 4096)]
        num_envs: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Worker threads stepping the batch, at most --num-envs (default: all cores, at most
        /// one per env).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Step-loop variant: `auto` (widest SIMD the CPU has) or `portable` (baseline only).
        #[arg(long, default_value = "auto", value_parser = parse_kernel)]
        kernel: Kernel,
    },
}

fn parse_kernel(s: &str) -> Result<Kernel, String> {
    match s {
        "auto" => Ok(Kernel::Auto),
        "portable" => Ok(Kernel::Portable),
        other => Err(format!(
            "unknown kernel `{other}` (expected auto or portable)"
        )),
    }
}

pub fn run(command: EnvsCommand) -> Result<ExitCode> {
    match command {
        EnvsCommand::List => {
            println!(
                "{:<26} {:<22} {:<12} {:>9} {:>10}",
                "id", "action space", "obs dim", "max steps", "threshold"
            );
            for id in ENV_IDS {
                let s = spec(id)?;
                let action = match &s.action_space {
                    Space::Discrete { n } => format!("Discrete({n})"),
                    Space::Box { low, high } => {
                        format!("Box({}, {}, ({},))", low[0], high[0], low.len())
                    }
                };
                let threshold = s
                    .reward_threshold
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<26} {:<22} {:<12} {:>9} {:>10}",
                    s.id,
                    action,
                    s.observation_space.dim(),
                    s.max_episode_steps,
                    threshold
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        EnvsCommand::Check {
            file,
            state_tol,
            reward_tol,
            obs_tol,
        } => {
            for (flag, t) in [
                ("--state-tol", state_tol),
                ("--reward-tol", reward_tol),
                ("--obs-tol", obs_tol),
            ] {
                // A NaN passed every row and a negative one failed exact matches.
                anyhow::ensure!(
                    t.is_finite() && t >= 0.0,
                    "{flag} {t}: must be a finite number ≥ 0"
                );
            }
            check(
                &file,
                Tolerances {
                    state: state_tol,
                    reward: reward_tol,
                    obs: obs_tol,
                },
            )
        }
        EnvsCommand::Bench {
            env,
            num_envs,
            seconds,
            threads,
            seed,
            kernel,
        } => {
            // By default all cores, but not more threads than envs.
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(num_envs.max(1))
            });
            let most = gradgym_agents::limits::MOST_THREADS;
            anyhow::ensure!(threads >= 1, "--threads 0: give at least 1");
            anyhow::ensure!(
                threads <= most,
                "--threads {threads}: more than gradgym allows ({most})"
            );
            // A thread steps a slice of at least one env; more threads than envs would idle
            // (a thousand threads on 8 envs timed thread wake-ups, not the env).
            anyhow::ensure!(
                threads <= num_envs.max(1),
                "--threads {threads}: more than --num-envs {num_envs}; each thread steps at least one env"
            );
            bench(&env, num_envs, seconds, threads, seed, kernel)
        }
    }
}

fn check(file: &PathBuf, tolerances: Tolerances) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows = conformance::parse(&text, &file.display().to_string())?;
    let reports = conformance::check(&rows, tolerances);
    println!(
        "tolerances: next state {:.0e}, reward {:.0e}, observation {:.0e}, terminated exact",
        tolerances.state, tolerances.reward, tolerances.obs
    );
    println!(
        "{:<26} {:>6} {:>14} {:>14} {:>14} {:>11}  result",
        "env", "rows", "max |Δstate|", "max |Δobs|", "max |Δreward|", "term. diff"
    );
    let mut failed = 0;
    for r in &reports {
        println!(
            "{:<26} {:>6} {:>14.3e} {:>14.3e} {:>14.3e} {:>11}  {}",
            r.env_id,
            r.rows,
            r.max_state_error,
            r.max_obs_error,
            r.max_reward_error,
            r.terminated_mismatches,
            if r.passed() { "ok" } else { "FAIL" }
        );
        failed += r.failures.len();
    }
    if failed == 0 {
        println!("all {} rows within tolerance", rows.len());
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{failed} value(s) outside tolerance; the first ones:");
    for f in reports.iter().flat_map(|r| &r.failures).take(20) {
        println!("  {}:{} {}: {}", file.display(), f.line, f.env_id, f.detail);
    }
    Ok(ExitCode::FAILURE)
}

/// Action buffers generated before timing starts, cycled through during the run.
const ACTION_BUFFERS: usize = 64;

fn bench(
    env_id: &str,
    num_envs: usize,
    seconds: f64,
    threads: usize,
    seed: u64,
    kernel: Kernel,
) -> Result<ExitCode> {
    // At most a day: the run is timed in windows of 0.25 s, whose rates are kept.
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 86_400.0,
        "--seconds must be a positive number of at most 86400 (a day), got {seconds}"
    );
    let most = gradgym_agents::limits::MOST_SIZE;
    anyhow::ensure!(
        (1..=most).contains(&num_envs),
        "--num-envs {num_envs}: give 1 to {most}"
    );
    // The batch's state and observations, and the bench's action buffers: refused before
    // they are allocated where this machine cannot hold them (it used to abort).
    let spec = gradgym_envs::spec(env_id)?;
    let per_env = gradgym_agents::config::env_batch_bytes_per_env(spec.observation_space.dim())
        + (ACTION_BUFFERS * spec.action_space.dim() * 8) as u128;
    let need = per_env * num_envs as u128;
    if let Some((available, has)) = gradgym_agents::config::available_memory()
        && need > available
    {
        anyhow::bail!(
            "--num-envs {num_envs}: {env_id}'s batch and the bench's actions would need about {}; {has}",
            gradgym_agents::config::gib(need),
        );
    }
    let options = EnvOptions {
        threads,
        kernel,
        ..EnvOptions::new(num_envs, seed)
    };
    let mut env = make_with(env_id, &options)?;
    let mut action_rng = rng::stream(seed, "bench-actions", 0);
    let space = env.spec().action_space.clone();
    let discrete: Vec<Vec<i64>>;
    let continuous: Vec<Vec<f32>>;
    match &space {
        Space::Discrete { n } => {
            discrete = (0..ACTION_BUFFERS)
                .map(|_| {
                    (0..num_envs)
                        .map(|_| (rng::uniform01(&mut action_rng) * *n as f64) as i64)
                        .collect()
                })
                .collect();
            continuous = Vec::new();
        }
        Space::Box { low, high } => {
            continuous = (0..ACTION_BUFFERS)
                .map(|_| {
                    (0..num_envs * low.len())
                        .map(|k| {
                            rng::uniform(
                                &mut action_rng,
                                low[k % low.len()] as f64,
                                high[k % low.len()] as f64,
                            ) as f32
                        })
                        .collect()
                })
                .collect();
            discrete = Vec::new();
        }
    }
    let actions = |k: usize| match &space {
        Space::Discrete { .. } => Actions::Discrete(&discrete[k % ACTION_BUFFERS]),
        Space::Box { .. } => Actions::Continuous(&continuous[k % ACTION_BUFFERS]),
    };

    // Warm up caches and the thread pool.
    for k in 0..ACTION_BUFFERS {
        env.step(actions(k))?;
    }
    // The run is timed in windows of about 0.25 s and the median window is reported, so a
    // moment of interference from the rest of the machine does not set the figure.
    let windows = ((seconds / 0.25).round() as usize).max(1);
    let window = Duration::from_secs_f64(seconds / windows as f64);
    let mut rates = Vec::with_capacity(windows);
    let mut steps = 0usize;
    for _ in 0..windows {
        let start = Instant::now();
        let mut window_steps = 0usize;
        while start.elapsed() < window {
            for _ in 0..8 {
                env.step(actions(steps))?;
                steps += 1;
                window_steps += 1;
            }
        }
        rates.push((window_steps * num_envs) as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{env_id}: {:.1} M env-steps/s median of {windows} windows (min {:.1}, max {:.1}); {num_envs} envs, {threads} thread(s), {kernel:?} kernel, {:.0} ns per batch step, autoreset on",
        median / 1e6,
        rates[0] / 1e6,
        rates[rates.len() - 1] / 1e6,
        num_envs as f64 / median * 1e9,
    );
    Ok(ExitCode::SUCCESS)
}
