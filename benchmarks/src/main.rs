//! The `gradgym` command-line tool.

mod envs_cmd;
mod estimators_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gradgym",
    version,
    about = "A reinforcement-learning gym and benchmark suite"
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
    /// libtorch version, CUDA and cuDNN availability, thread count.
    Info,
    /// The estimator study: bias and variance of every gradient estimator on MDPs with exact gradients.
    Estimators(estimators_cmd::EstimatorArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Envs { command } => envs_cmd::run(command),
        Command::Train(args) => train_cmd::run_train(*args),
        Command::Info => train_cmd::run_info(),
        Command::Estimators(args) => estimators_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
