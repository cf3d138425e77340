//! The `gradgym` command-line tool.

mod envs_cmd;
mod estimators_cmd;
mod harness_cmd;
mod malloc;
mod rlhf_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gradgym",
    version,
    about = "A reinforcement-learning gym and benchmark suite",
    after_help = "Environment:\n  MKL_CBWR              MKL's reproducibility mode (gradgym sets AUTO unless this is set)\n  GRADGYM_MALLOC        keep (default: glibc's malloc keeps freed memory for reuse) or glibc (its own thresholds)\n  GRADGYM_SGEMM         mkl (default) or matrixmultiply: the native RLHF backend's products without MKL's sgemm\n  GRADGYM_MEMORY_LIMIT  GiB an RLHF run on the CPU plans for (default: the machine's; 0: no check)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, check and benchmark environments.
    Envs {
        #[command(subcommand)]
        command: envs_cmd::EnvsCommand,
    },
    /// Train one run (REINFORCE, A2C or PPO) and write metrics, manifest and summary.
    Train(Box<train_cmd::TrainArgs>),
    /// Train one run paid a reward model fitted to a synthetic human's preferences
    /// (Christiano et al. 2017); writes what `train` writes, plus labels.csv.
    Prefs(Box<train_cmd::PrefsArgs>),
    /// RLHF on the review language: pretrain → SFT → labels → reward model → best-of-n → RL,
    /// or one stage (`sft`, `rm`, `rl`, `bon`, `sample`), or the throughput `bench`.
    Rlhf(Box<rlhf_cmd::RlhfArgs>),
    /// Load a run's saved policy and report the returns of deterministic episodes.
    Eval(train_cmd::EvalArgs),
    /// libtorch version, CUDA and cuDNN availability, thread count.
    Info,
    /// The estimator study: bias and variance of every gradient estimator on MDPs with exact gradients.
    Estimators(estimators_cmd::EstimatorArgs),
    /// Train a grid of runs (envs × algos × hyperparameters × seeds) into one results folder; resumes.
    Sweep(harness_cmd::SweepArgs),
    /// IQM, mean, median, optimality gap, bootstrap intervals, P(improvement), profiles.
    Report(harness_cmd::ReportArgs),
    /// Learning curves, interval plots, performance profiles, estimator-study plots (PNG + SVG).
    Plot(harness_cmd::PlotArgs),
    /// Regression gate: exit 1 when the candidate is worse than the baseline beyond the interval.
    Compare(harness_cmd::CompareArgs),
}

fn main() -> std::process::ExitCode {
    // This binary's revision, from a build script that sees every crate's source.
    gradgym_agents::build_info::set_git_revision(env!("GRADGYM_GIT_REVISION"));
    reproducible_mkl();
    short_panic_messages();
    if let Err(e) = malloc::keep_freed_memory() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = gradgym_agents::nn::gpt_native::sgemm_choice() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    // Rust ignores SIGPIPE, so printing into a closed pipe (`gradgym info | head -1`) would
    // panic with a backtrace; end quietly instead, as other command-line tools do. A run cut
    // short this way is left as any interrupted run is: in its `.partial` folder (metrics rows
    // flushed one by one), never sealed as finished, and the sweep run again redoes it.
    #[cfg(unix)]
    // SAFETY: SIG_DFL installs no handler; it only sets the process's action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Envs { command } => envs_cmd::run(command),
        Command::Train(args) => train_cmd::run_train(*args),
        Command::Prefs(args) => train_cmd::run_prefs(*args),
        Command::Rlhf(args) => rlhf_cmd::run(*args),
        Command::Eval(args) => train_cmd::run_eval(args),
        Command::Info => train_cmd::run_info(),
        Command::Estimators(args) => estimators_cmd::run(args),
        Command::Sweep(args) => harness_cmd::run_sweep(args),
        Command::Report(args) => harness_cmd::run_report(args),
        Command::Plot(args) => harness_cmd::run_plot(args),
        Command::Compare(args) => harness_cmd::run_compare(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Prints a panic as Rust's own hook does, with its message shortened: a libtorch error that
/// tch panics with carries dozens of lines of C++ stack frames, and a failed allocation says
/// `out of memory` with the size (`gradgym_agents::error::panic_text`). A run catches the panic
/// afterwards and ends with the same short message, sealing its folder.
///
/// A failed allocation is not a defect to locate: where a run will catch it, the hook prints
/// nothing (the run's error names it with its stage); elsewhere only its short message. It
/// never captures a backtrace for one either: symbolising a backtrace allocates, and with
/// memory exhausted Rust's allocation-failure handler would then wait on the backtrace lock
/// this very thread holds, and the process would hang, its signal handler blocked behind the
/// hook's hold on standard error.
fn short_panic_messages() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let text = gradgym_agents::error::panic_text(info.payload());
        let text = text.strip_prefix("panic: ").unwrap_or(&text);
        if gradgym_agents::error::is_out_of_memory(text) {
            if !gradgym_agents::error::panic_is_caught() {
                let _ = writeln!(std::io::stderr(), "error: {text}");
            }
            return;
        }
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        // Write errors are ignored (a closed pipe): a panic inside the hook would abort the
        // process before the run could seal its folder.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\nthread '{}' panicked{location}:\n{text}",
            thread.name().unwrap_or("<unnamed>")
        );
        let trace = std::backtrace::Backtrace::capture();
        let _ = if trace.status() == std::backtrace::BacktraceStatus::Captured {
            writeln!(err, "stack backtrace:\n{trace}")
        } else {
            writeln!(
                err,
                "note: run with `RUST_BACKTRACE=1` to display a backtrace"
            )
        };
    }));
}

/// Puts libtorch's MKL into its conditional numerical reproducibility mode (`MKL_CBWR=AUTO`:
/// the code path it would pick anyway), unless the caller chose a mode. MKL's documentation
/// promises bit-identical results from run to run, for a fixed thread count, only in that
/// mode: by default "certain threaded algorithms" may order their sums differently from one
/// run to the next. On this project's machines the mode gives the same bits as the default
/// (the committed RLHF study retrains bit for bit under it) at no measured cost (PPO in
/// `gradgym rlhf bench`: medians 4,794 and 4,731 tokens/s with and without, five alternated
/// runs each). MKL reads the variable when it starts, at the first product, so it is set here,
/// before any libtorch call.
fn reproducible_mkl() {
    if std::env::var_os("MKL_CBWR").is_none() {
        // SAFETY: the first statement of `main`, before this process starts any thread (libtorch
        // starts its OpenMP workers at its first parallel operator), so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("MKL_CBWR", "AUTO") };
    }
}
