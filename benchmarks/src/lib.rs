//! The harness behind the `gradgym` binary: run configurations, sweeps, the results folder,
//! statistics, reports, plots and the regression gate. The binary's subcommands are thin
//! wrappers over these modules, which the integration tests also call.

pub mod compare;
pub mod configs;
pub mod plot;
pub mod report;
pub mod results;
pub mod rlhf_study;
pub mod stats;
pub mod sweep;
