//! `gradgym estimators`: the estimator study (see `gradgym_algorithms::study`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use gradgym_agents::run_folder::{Existing, RunFolder};
use gradgym_algorithms::study::{Estimator, Measurement, benchmark_cases, measure, random_case};
use serde::{Deserialize, Serialize};

#[derive(Args, Debug)]
pub struct EstimatorArgs {
    /// A TOML file with any of: samples = [16, 64, 256], batches = 64, random_mdps = 4.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seeds the random MDPs and every sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for manifest.json, estimators.csv and summary.json (refused if it exists,
    /// unless --overwrite).
    #[arg(long, default_value = "out/estimators")]
    out: PathBuf,
    /// Replace an existing study folder (kept until the new study is complete).
    #[arg(long)]
    overwrite: bool,
}

/// What the study runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudyConfig {
    /// Trajectories per batch estimate, one measurement per value.
    pub samples: Vec<usize>,
    /// Batch estimates per measurement (K).
    pub batches: usize,
    /// Random MDPs drawn from the seed, besides the fixed benchmark set.
    pub random_mdps: usize,
}

impl Default for StudyConfig {
    fn default() -> Self {
        Self {
            samples: vec![16, 64, 256],
            batches: 64,
            random_mdps: 4,
        }
    }
}

const COLUMNS: &str = "mdp,estimator,samples,bias_norm,bias_z,variance_trace,snr,cosine_to_exact,passes,unchecked_coordinates";

/// The most random MDPs a study takes (the default is 4).
const MOST_RANDOM_MDPS: usize = 1024;

pub fn run(args: EstimatorArgs) -> Result<ExitCode> {
    let config: StudyConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => StudyConfig::default(),
    };
    anyhow::ensure!(
        config.batches >= 2,
        "config field `batches`: needs at least 2 batch estimates (got {})",
        config.batches
    );
    anyhow::ensure!(
        !config.samples.is_empty() && !config.samples.contains(&0),
        "config field `samples`: needs sizes ≥ 1 (got {:?})",
        config.samples
    );
    // estimators.csv holds one row per (mdp, estimator, samples): a size given twice would
    // write each of its rows twice and count its passes twice.
    let distinct: std::collections::BTreeSet<usize> = config.samples.iter().copied().collect();
    anyhow::ensure!(
        distinct.len() == config.samples.len(),
        "config field `samples`: a size is given twice (got {:?})",
        config.samples
    );
    // Trajectories sampled per MDP and estimator: the defaults take 21,504 (3 s in all); past
    // 2²⁴ a study would run for hours or fail to allocate its batches.
    let most = gradgym_agents::limits::MOST_SIZE as u128;
    let per_case = config.batches as u128 * config.samples.iter().map(|&m| m as u128).sum::<u128>();
    anyhow::ensure!(
        per_case <= most,
        "config fields `batches` × `samples`: {} × {:?} = {per_case} trajectories per MDP and estimator, more than gradgym allows ({most})",
        config.batches,
        config.samples
    );
    anyhow::ensure!(
        config.random_mdps <= MOST_RANDOM_MDPS,
        "config field `random_mdps`: {} is more than gradgym allows ({MOST_RANDOM_MDPS})",
        config.random_mdps
    );
    // Written like a run: in `<out>.partial`, renamed into place whole; an existing folder is
    // refused, or replaced only once the new study is complete.
    let folder = RunFolder::create_as(
        &args.out,
        if args.overwrite {
            Existing::Replace
        } else {
            Existing::Refuse
        },
        gradgym_agents::run_folder::FolderKind::Estimators,
    )?;
    folder.write_json(
        "manifest.json",
        &serde_json::json!({
            "command": "gradgym estimators",
            "seed": args.seed,
            "config": &config,
            "git_revision": gradgym_agents::build_info::git_revision(),
            "gradgym_version": gradgym_agents::build_info::GRADGYM_VERSION,
        }),
    )?;
    tch::set_num_threads(1);

    let mut cases = benchmark_cases();
    for k in 0..config.random_mdps {
        let (mdp, theta) = random_case(
            gradgym_envs::rng::derive_seed(args.seed, &format!("study-mdp-{k}")),
            4,
        );
        cases.push((format!("random-{k}"), mdp, theta));
    }
    let mut rows: Vec<Measurement> = Vec::new();
    let mut csv = format!("{COLUMNS}\n");
    for (c, (name, mdp, theta)) in cases.iter().enumerate() {
        for (e, estimator) in Estimator::all().into_iter().enumerate() {
            for &m in &config.samples {
                let seed = gradgym_envs::rng::derive_seed(args.seed, &format!("study-{c}-{e}-{m}"));
                let r = measure(name, mdp, theta, estimator, config.batches, m, seed);
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{}\n",
                    r.mdp,
                    r.estimator,
                    r.samples,
                    r.bias_norm,
                    // A measurement that checked no coordinate has no z and no verdict.
                    if r.judged() {
                        r.bias_z.to_string()
                    } else {
                        String::new()
                    },
                    r.variance_trace,
                    r.snr,
                    r.cosine_to_exact,
                    if r.judged() {
                        r.passes.to_string()
                    } else {
                        String::new()
                    },
                    r.unchecked
                ));
                rows.push(r);
            }
        }
    }
    folder.write_text("estimators.csv", &csv)?;

    // Per estimator: how many measurements passed, and the variance relative to plain REINFORCE
    // (total return) on the benchmark set at the largest sample size.
    let largest = *config.samples.iter().max().expect("non-empty");
    let bench_variance = |estimator: &str| -> f64 {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| {
                r.estimator == estimator && r.samples == largest && r.mdp.starts_with("bench")
            })
            .map(|r| r.variance_trace)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let reference = bench_variance(&Estimator::TotalReturn.name());
    #[derive(Serialize)]
    struct PerEstimator {
        estimator: String,
        biased_by_construction: bool,
        /// Measurements that judged some coordinate (the denominator of `passed`).
        measurements: usize,
        passed: usize,
        /// Measurements that left some coordinates unchecked (too few expected draws).
        with_unchecked_coordinates: usize,
        /// Measurements that left every coordinate unchecked: not in `measurements`.
        not_judged: usize,
        variance_vs_total_return: f64,
    }
    let per: Vec<PerEstimator> = Estimator::all()
        .into_iter()
        .map(|e| {
            let name = e.name();
            let mine: Vec<&Measurement> = rows.iter().filter(|r| r.estimator == name).collect();
            PerEstimator {
                biased_by_construction: e.biased(),
                measurements: mine.iter().filter(|r| r.judged()).count(),
                passed: mine.iter().filter(|r| r.judged() && r.passes).count(),
                with_unchecked_coordinates: mine.iter().filter(|r| r.unchecked > 0).count(),
                not_judged: mine.iter().filter(|r| !r.judged()).count(),
                variance_vs_total_return: bench_variance(&name) / reference,
                estimator: name,
            }
        })
        .collect();
    #[derive(Serialize)]
    struct Summary<'a> {
        seed: u64,
        config: &'a StudyConfig,
        mdps: Vec<&'a str>,
        family_wise_alpha: f64,
        min_expected_draws: f64,
        estimators: &'a [PerEstimator],
    }
    let summary = Summary {
        seed: args.seed,
        config: &config,
        mdps: cases.iter().map(|c| c.0.as_str()).collect(),
        family_wise_alpha: gradgym_algorithms::study::FAMILY_WISE_ALPHA,
        min_expected_draws: gradgym_algorithms::study::MIN_EXPECTED_DRAWS,
        estimators: &per,
    };
    let out = folder.seal(&summary)?;

    println!(
        "{:<32} {:>8} {:>10}   variance / REINFORCE total return (benchmark set, M = {largest})",
        "estimator", "biased", "passed"
    );
    for p in &per {
        println!(
            "{:<32} {:>8} {:>4} / {:<4}  {:>8.3}",
            p.estimator,
            if p.biased_by_construction {
                "yes"
            } else {
                "no"
            },
            p.passed,
            p.measurements,
            p.variance_vs_total_return
        );
    }
    let partial: usize = per.iter().map(|p| p.with_unchecked_coordinates).sum();
    let none: usize = per.iter().map(|p| p.not_judged).sum();
    if partial > 0 {
        println!(
            "{partial} of {} measurements left some coordinates unchecked: an action at their state is expected fewer than {} times in the K·M trajectories (column unchecked_coordinates){}",
            rows.len(),
            gradgym_algorithms::study::MIN_EXPECTED_DRAWS,
            if none > 0 {
                format!(
                    "; {none} left every coordinate unchecked and are not counted above (bias_z and passes empty)"
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "wrote {} and {}",
        out.join("estimators.csv").display(),
        out.join("summary.json").display()
    );
    Ok(ExitCode::SUCCESS)
}
