//! `gradgym report DIR…`: the statistics of a results folder as markdown and CSV.
//!
//! Files written into the report folder (default `<first DIR>/report/`):
//! - `per_env.csv`: per env and algo, final score (raw and normalised) IQM, mean, median with
//!   95% bootstrap intervals, and run counts;
//! - `aggregate.csv`: per algo, over its envs, normalised IQM, mean, median, optimality gap
//!   with stratified-bootstrap 95% intervals;
//! - `improvement.csv`: P(X > Y) for every ordered pair of algos over the envs both ran;
//! - `profiles.csv`: performance profiles (fraction of runs above τ) with intervals;
//! - `report.md`: all of the above as tables, plus failed runs with their errors.
//!
//! The score of a run is its `final_return_mean_last100` (`--metric final`, default) or its
//! `eval_return_mean` (`--metric eval`). Failed runs are listed but not scored.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use gradgym_agents::run_folder::write_atomic;

use crate::results::{ResultSet, RunRecord};
use crate::stats::{self, Aggregate, Bootstrap, Interval};
use crate::sweep::csv_field;

/// Which number of a run is its score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Final,
    Eval,
}

impl Metric {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "final" => Ok(Metric::Final),
            "eval" => Ok(Metric::Eval),
            other => bail!("unknown metric `{other}`; valid: final, eval"),
        }
    }
    pub fn of(&self, r: &RunRecord) -> Option<f64> {
        match self {
            Metric::Final => r.final_return,
            Metric::Eval => r.eval_return,
        }
    }
    pub fn column(&self) -> &'static str {
        match self {
            Metric::Final => "final_return_mean_last100",
            Metric::Eval => "eval_return_mean",
        }
    }
}

/// Statistics of one (env, algo).
#[derive(Clone, Debug)]
pub struct EnvRow {
    pub env: String,
    pub label: String,
    pub runs: usize,
    pub failed: usize,
    pub scores: Vec<f64>,
    pub iqm: Interval,
    pub mean: Interval,
    pub median: Interval,
    /// IQM of normalised scores, if the env has a score range.
    pub normalised_iqm: Option<Interval>,
}

/// Statistics of one algo over its envs (normalised scores).
#[derive(Clone, Debug)]
pub struct AggregateRow {
    pub label: String,
    pub envs: Vec<String>,
    pub runs: usize,
    pub values: Vec<(Aggregate, Interval)>,
}

#[derive(Clone, Debug)]
pub struct ImprovementRow {
    pub x: String,
    pub y: String,
    pub envs: usize,
    pub p: Interval,
}

#[derive(Clone, Debug)]
pub struct ProfileRow {
    pub label: String,
    pub tau: f64,
    pub fraction: Interval,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub metric: Metric,
    pub boot: Bootstrap,
    pub per_env: Vec<EnvRow>,
    pub aggregate: Vec<AggregateRow>,
    pub improvement: Vec<ImprovementRow>,
    pub profiles: Vec<ProfileRow>,
    pub failed: Vec<RunRecord>,
    /// What the results folder left out or lacks (interrupted runs, an incomplete sweep).
    pub warnings: Vec<String>,
}

/// Below this many completed runs in a cell, the report says its interval is rough.
pub const FEW_RUNS: usize = 5;

/// The τ values of the performance profiles (normalised score).
pub fn profile_taus() -> Vec<f64> {
    (0..=30).map(|i| i as f64 * 0.05 - 0.25).collect()
}

/// Normalised scores of `label` per env (only envs with a score range and completed runs).
fn normalised_tasks(set: &ResultSet, label: &str, metric: Metric) -> Vec<(String, Vec<f64>)> {
    set.envs()
        .into_iter()
        .filter_map(|env| {
            let scores: Vec<f64> = set
                .completed(&env, label)
                .iter()
                .filter_map(|r| metric.of(r))
                .filter_map(|s| stats::normalise(&env, s))
                .collect();
            (!scores.is_empty()).then_some((env, scores))
        })
        .collect()
}

/// Said when completed runs exist but none has a score under `metric` (runs with
/// `eval_episodes = 0` under `--metric eval`, or runs that never ended an episode): the
/// report's cells are then all empty, which reads as if nothing had run.
pub fn unscored_note(set: &ResultSet, metric: Metric) -> Option<String> {
    let completed = set.runs.iter().filter(|r| r.completed()).count();
    let scored = set
        .runs
        .iter()
        .filter(|r| r.completed() && metric.of(r).is_some())
        .count();
    (completed > 0 && scored == 0).then(|| {
        let other = match metric {
            Metric::Eval => "; runs with eval_episodes = 0 have none, and --metric final scores the training returns",
            Metric::Final => "; runs that never ended an episode have none",
        };
        format!(
            "none of the {completed} completed run(s) has a score in `{}`, so no cell is scored{other}",
            metric.column()
        )
    })
}

/// Computes every table of the report.
pub fn compute(set: &ResultSet, metric: Metric, boot: Bootstrap) -> Result<Report> {
    let folders = || -> String {
        let names: Vec<String> = set.sweeps.iter().map(|d| d.display().to_string()).collect();
        names.join(", ")
    };
    if set.runs.is_empty() {
        bail!(
            "no runs to score in {}{}",
            folders(),
            if set.warnings.is_empty() {
                ""
            } else {
                " (the warning(s) above say what was read and left out)"
            }
        );
    }
    if !set.runs.iter().any(|r| r.completed()) {
        bail!(
            "no run in {} completed ({} failed), so there is no score to report; `gradgym sweep --retry-failed` reruns them",
            folders(),
            set.runs.len()
        );
    }
    let mut per_env = Vec::new();
    for env in set.envs() {
        for label in set.labels() {
            let all = set.all(&env, &label);
            if all.is_empty() {
                continue;
            }
            let scores: Vec<f64> = all
                .iter()
                .filter(|r| r.completed())
                .filter_map(|r| metric.of(r))
                .collect();
            let failed = all.iter().filter(|r| !r.completed()).count();
            if scores.is_empty() {
                let nan = Interval::NAN;
                per_env.push(EnvRow {
                    env: env.clone(),
                    label,
                    runs: all.len(),
                    failed,
                    scores,
                    iqm: nan,
                    mean: nan,
                    median: nan,
                    normalised_iqm: None,
                });
                continue;
            }
            let key = format!("{env}/{label}");
            let task = [scores.clone()];
            let iqm = stats::stratified_interval(&task, &stats::iqm, boot, &format!("{key}/iqm"));
            let mean =
                stats::stratified_interval(&task, &stats::mean, boot, &format!("{key}/mean"));
            let median =
                stats::stratified_interval(&task, &stats::median, boot, &format!("{key}/median"));
            let normalised_iqm = stats::score_range(&env).map(|(lo, hi)| {
                let n = |x: f64| (x - lo) / (hi - lo);
                Interval {
                    point: n(iqm.point),
                    low: n(iqm.low),
                    high: n(iqm.high),
                }
            });
            per_env.push(EnvRow {
                env: env.clone(),
                label,
                runs: all.len(),
                failed,
                scores,
                iqm,
                mean,
                median,
                normalised_iqm,
            });
        }
    }

    let mut aggregate = Vec::new();
    let mut profiles = Vec::new();
    let taus = profile_taus();
    for label in set.labels() {
        let tasks = normalised_tasks(set, &label, metric);
        if tasks.is_empty() {
            continue;
        }
        let envs: Vec<String> = tasks.iter().map(|(e, _)| e.clone()).collect();
        let scores: Vec<Vec<f64>> = tasks.into_iter().map(|(_, s)| s).collect();
        let values = Aggregate::ALL
            .iter()
            .map(|a| {
                let f = |tasks: &[Vec<f64>]| a.over_tasks(tasks);
                let name = format!("{label}/{}", a.name());
                (
                    *a,
                    stats::stratified_interval_over_tasks(&scores, &f, boot, &name),
                )
            })
            .collect();
        for (tau, fraction) in taus.iter().zip(stats::performance_profile(
            &scores,
            &taus,
            boot,
            &format!("{label}/profile"),
        )) {
            profiles.push(ProfileRow {
                label: label.clone(),
                tau: *tau,
                fraction,
            });
        }
        aggregate.push(AggregateRow {
            label,
            runs: scores.iter().map(Vec::len).sum(),
            envs,
            values,
        });
    }

    let mut improvement = Vec::new();
    let labels = set.labels();
    for x in &labels {
        for y in &labels {
            if x == y {
                continue;
            }
            // Raw scores suffice: P(X > Y) is invariant to the per-env normalisation.
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for env in set.envs() {
                let sx: Vec<f64> = set
                    .completed(&env, x)
                    .iter()
                    .filter_map(|r| metric.of(r))
                    .collect();
                let sy: Vec<f64> = set
                    .completed(&env, y)
                    .iter()
                    .filter_map(|r| metric.of(r))
                    .collect();
                if !sx.is_empty() && !sy.is_empty() {
                    xs.push(sx);
                    ys.push(sy);
                }
            }
            if xs.is_empty() {
                continue;
            }
            improvement.push(ImprovementRow {
                x: x.clone(),
                y: y.clone(),
                envs: xs.len(),
                p: stats::probability_of_improvement_interval(
                    &xs,
                    &ys,
                    boot,
                    &format!("poi/{x}/{y}"),
                ),
            });
        }
    }
    let failed = set
        .runs
        .iter()
        .filter(|r| !r.completed())
        .cloned()
        .collect();
    Ok(Report {
        metric,
        boot,
        per_env,
        aggregate,
        improvement,
        profiles,
        failed,
        warnings: set.warnings.clone(),
    })
}

fn f(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x:.4}")
    }
}

/// `point,low,high` as three CSV cells (empty for NaN).
fn cells(i: &Interval) -> String {
    format!("{},{},{}", f(i.point), f(i.low), f(i.high))
}

fn ci(i: &Interval, digits: usize) -> String {
    if i.point.is_nan() {
        return "—".into();
    }
    format!(
        "{:.d$} [{:.d$}, {:.d$}]",
        i.point,
        i.low,
        i.high,
        d = digits
    )
}

impl Report {
    pub fn per_env_csv(&self) -> String {
        let mut s = String::from(
            "env_id,algo,runs,failed,iqm,iqm_low,iqm_high,mean,mean_low,mean_high,median,median_low,median_high,normalised_iqm,normalised_iqm_low,normalised_iqm_high\n",
        );
        for r in &self.per_env {
            let n = r.normalised_iqm.unwrap_or(Interval::NAN);
            let cells = [
                csv_field(&r.env),
                csv_field(&r.label),
                r.runs.to_string(),
                r.failed.to_string(),
                cells(&r.iqm),
                cells(&r.mean),
                cells(&r.median),
                cells(&n),
            ];
            s.push_str(&cells.join(","));
            s.push('\n');
        }
        s
    }

    pub fn aggregate_csv(&self) -> String {
        let mut s = String::from("algo,envs,runs,statistic,value,low,high\n");
        for r in &self.aggregate {
            for (a, i) in &r.values {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{}",
                    csv_field(&r.label),
                    r.envs.len(),
                    r.runs,
                    a.name(),
                    cells(i)
                );
            }
        }
        s
    }

    pub fn improvement_csv(&self) -> String {
        let mut s = String::from("x,y,envs,p_x_better,low,high\n");
        for r in &self.improvement {
            let _ = writeln!(
                s,
                "{},{},{},{}",
                csv_field(&r.x),
                csv_field(&r.y),
                r.envs,
                cells(&r.p)
            );
        }
        s
    }

    pub fn profiles_csv(&self) -> String {
        let mut s = String::from("algo,tau,fraction_above,low,high\n");
        for r in &self.profiles {
            let _ = writeln!(
                s,
                "{},{:.2},{}",
                csv_field(&r.label),
                r.tau,
                cells(&r.fraction)
            );
        }
        s
    }

    /// The cells whose intervals rest on fewer than [`FEW_RUNS`] runs, said (on stderr by
    /// `gradgym report`, and at the top of report.md).
    pub fn few_runs_note(&self) -> Option<String> {
        let few: Vec<String> = self
            .per_env
            .iter()
            .filter(|r| r.scores.len() < FEW_RUNS)
            .map(|r| format!("{} {} ({})", r.env, r.label, r.scores.len()))
            .collect();
        (!few.is_empty()).then(|| {
            format!(
                "{} of {} cells rest on fewer than {FEW_RUNS} completed runs, so their 95% \
                 intervals are rough (a bootstrap over so few runs understates the \
                 uncertainty): {}",
                few.len(),
                self.per_env.len(),
                few.join(", ")
            )
        })
    }

    /// Every env some aggregate row stands on, sorted.
    pub fn aggregate_envs(&self) -> Vec<&String> {
        let mut all: Vec<&String> = self.aggregate.iter().flat_map(|r| &r.envs).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Said when the aggregate rows stand on different sets of envs (an algo that did not run
    /// on every env): their aggregates are then not comparable, as rliable compares
    /// aggregates over one task set. P(X > Y) uses only the envs both ran.
    pub fn env_sets_note(&self) -> Option<String> {
        let first = self.aggregate.first()?;
        if self.aggregate.iter().all(|r| r.envs == first.envs) {
            return None;
        }
        let all = self.aggregate_envs();
        let partial: Vec<String> = self
            .aggregate
            .iter()
            .filter(|r| r.envs.len() < all.len())
            .map(|r| format!("{} over {}", r.label, r.envs.join(" and ")))
            .collect();
        Some(format!(
            "the aggregates stand on different envs ({} of the {} envs scored), so they rank the algos only where they ran the same envs; P(X > Y) compares each pair over the envs both ran",
            partial.join("; "),
            all.len()
        ))
    }

    pub fn markdown(&self, sources: &[String]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# gradgym report\n");
        let _ = writeln!(
            s,
            "Results: {}. Score: `{}` of each completed run. Intervals: 95% stratified bootstrap, \
             percentile method, {} replicates, seed {}.\n",
            sources.join(", "),
            self.metric.column(),
            self.boot.reps,
            self.boot.seed
        );
        for w in &self.warnings {
            let _ = writeln!(s, "**Warning:** {w}.\n");
        }
        if let Some(note) = self.few_runs_note() {
            let _ = writeln!(s, "**Note:** {note}.\n");
        }
        if let Some(note) = self.env_sets_note() {
            let _ = writeln!(s, "**Note:** {note}.\n");
        }
        let _ = writeln!(s, "## Per env\n");
        let _ = writeln!(
            s,
            "| env | algo | runs | IQM [95% CI] | mean [95% CI] | median [95% CI] | normalised IQM [95% CI] |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
        for r in &self.per_env {
            let runs = if r.failed > 0 {
                format!("{} ({} failed)", r.runs, r.failed)
            } else {
                r.runs.to_string()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.env,
                r.label,
                runs,
                ci(&r.iqm, 1),
                ci(&r.mean, 1),
                ci(&r.median, 1),
                r.normalised_iqm.as_ref().map_or("—".into(), |i| ci(i, 3))
            );
        }
        let _ = writeln!(s, "\n## Aggregate over envs (normalised scores)\n");
        let _ = writeln!(
            s,
            "A normalised score is `(score − random) / (reference − random)`:\n"
        );
        let _ = writeln!(s, "| env | random | reference |\n|---|---:|---:|");
        let mut envs: Vec<&String> = self.per_env.iter().map(|r| &r.env).collect();
        envs.dedup();
        for env in envs {
            if let Some((lo, hi)) = stats::score_range(env) {
                let _ = writeln!(s, "| {env} | {lo} | {hi} |");
            }
        }
        let _ = writeln!(
            s,
            "\n| algo | envs | runs | IQM | mean | median | optimality gap |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for r in &self.aggregate {
            let cells: Vec<String> = r.values.iter().map(|(_, i)| ci(i, 3)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.label,
                r.envs.join(", "),
                r.runs,
                cells.join(" | ")
            );
        }
        if !self.improvement.is_empty() {
            let _ = writeln!(
                s,
                "\n## Probability of improvement\n\nP(X > Y): the chance that a run of X scores higher than a run of Y on the same env (Mann–Whitney U / nm, ties ½), averaged over the envs both ran.\n"
            );
            let _ = writeln!(
                s,
                "| X | Y | envs | P(X > Y) [95% CI] |\n|---|---|---:|---:|"
            );
            for r in &self.improvement {
                let _ = writeln!(s, "| {} | {} | {} | {} |", r.x, r.y, r.envs, ci(&r.p, 3));
            }
        }
        let _ = writeln!(
            s,
            "\n## Performance profiles\n\nFraction of runs whose normalised score exceeds τ: `profiles.csv` and `plots/profiles.{{png,svg}}`."
        );
        if !self.failed.is_empty() {
            let _ = writeln!(s, "\n## Failed runs\n\n| run | error |\n|---|---|");
            for r in &self.failed {
                let _ = writeln!(s, "| {} | {} |", r.id, r.error.replace('|', "\\|"));
            }
        }
        s
    }

    /// Writes the CSV files and `report.md` into `out`.
    pub fn write(&self, out: &Path, sources: &[String]) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        write_atomic(&out.join("per_env.csv"), self.per_env_csv().as_bytes())?;
        write_atomic(&out.join("aggregate.csv"), self.aggregate_csv().as_bytes())?;
        write_atomic(
            &out.join("improvement.csv"),
            self.improvement_csv().as_bytes(),
        )?;
        write_atomic(&out.join("profiles.csv"), self.profiles_csv().as_bytes())?;
        write_atomic(&out.join("report.md"), self.markdown(sources).as_bytes())?;
        Ok(())
    }
}
