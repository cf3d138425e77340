//! `gradgym compare BASELINE CANDIDATE`: the regression gate.
//!
//! For every (env, algo) of the baseline, with the score of `gradgym report` (default the final
//! return):
//! - Δ = IQM(candidate) − IQM(baseline), with a 95% bootstrap interval (each side's runs
//!   resampled independently, 10,000 replicates, seed 0);
//! - **regression** when the whole interval lies below `−tolerance × (reference − random)` of
//!   the env (the tolerance is in normalised score, default 0): the candidate is worse beyond
//!   what seed noise explains. With a constant score on both sides (CartPole at 500) the
//!   interval is a point, so any drop is a regression;
//! - **regression** too when the candidate lacks the pair, has more failed runs than the
//!   baseline, or has no score where the baseline has one (its runs finished without an
//!   episode's end, or without evaluation episodes).
//!
//! Pairs only in the candidate are listed as new. The exit status is 1 when any pair regresses.

use std::fmt::Write as _;

use crate::report::Metric;
use crate::results::ResultSet;
use crate::stats::{self, Bootstrap, Interval};

#[derive(Clone, Debug)]
pub struct Comparison {
    pub env: String,
    pub label: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    pub delta: Option<Interval>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Better,
    Regression(String),
    New,
}

impl Verdict {
    pub fn text(&self) -> String {
        match self {
            Verdict::Ok => "ok".into(),
            Verdict::Better => "better".into(),
            Verdict::Regression(why) => format!("REGRESSION: {why}"),
            Verdict::New => "new (not in baseline)".into(),
        }
    }
}

pub fn compare(
    baseline: &ResultSet,
    candidate: &ResultSet,
    metric: Metric,
    tolerance: f64,
    boot: Bootstrap,
) -> Vec<Comparison> {
    let mut out = Vec::new();
    let scores = |set: &ResultSet, env: &str, label: &str| -> Vec<f64> {
        set.completed(env, label)
            .iter()
            .filter_map(|r| metric.of(r))
            .collect()
    };
    let failures = |set: &ResultSet, env: &str, label: &str| {
        set.all(env, label)
            .iter()
            .filter(|r| !r.completed())
            .count()
    };
    for env in baseline.envs() {
        for label in baseline.labels() {
            if baseline.all(&env, &label).is_empty() {
                continue;
            }
            let b = scores(baseline, &env, &label);
            let c = scores(candidate, &env, &label);
            let (bf, cf) = (
                failures(baseline, &env, &label),
                failures(candidate, &env, &label),
            );
            let mut row = Comparison {
                env: env.clone(),
                label: label.clone(),
                baseline: (!b.is_empty()).then(|| stats::iqm(&b)),
                candidate: (!c.is_empty()).then(|| stats::iqm(&c)),
                delta: None,
                verdict: Verdict::Ok,
            };
            if candidate.all(&env, &label).is_empty() {
                row.verdict = Verdict::Regression("missing from the candidate".into());
            } else if cf > bf {
                row.verdict = Verdict::Regression(format!("{cf} failed run(s), baseline {bf}"));
            } else if !b.is_empty() && c.is_empty() {
                // Its runs finished without the score (no episode ended, or no evaluation):
                // nothing shows it is no worse.
                row.verdict = Verdict::Regression(format!(
                    "no {} score in the candidate's runs (the baseline has {})",
                    metric.column(),
                    b.len()
                ));
            } else if !b.is_empty() && !c.is_empty() {
                let d = stats::difference_interval(
                    &c,
                    &b,
                    &stats::iqm,
                    boot,
                    &format!("compare/{env}/{label}"),
                );
                let margin = stats::score_range(&env).map_or(0.0, |(lo, hi)| tolerance * (hi - lo));
                row.verdict = if d.high < -margin {
                    Verdict::Regression(format!(
                        "ΔIQM interval [{:.2}, {:.2}] below −{margin:.2}",
                        d.low, d.high
                    ))
                } else if d.low > 0.0 {
                    Verdict::Better
                } else {
                    Verdict::Ok
                };
                row.delta = Some(d);
            }
            out.push(row);
        }
    }
    for env in candidate.envs() {
        for label in candidate.labels() {
            if !candidate.all(&env, &label).is_empty() && baseline.all(&env, &label).is_empty() {
                out.push(Comparison {
                    env: env.clone(),
                    label: label.clone(),
                    baseline: None,
                    candidate: {
                        let c = scores(candidate, &env, &label);
                        (!c.is_empty()).then(|| stats::iqm(&c))
                    },
                    delta: None,
                    verdict: Verdict::New,
                });
            }
        }
    }
    out
}

pub fn table(rows: &[Comparison]) -> String {
    let opt = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.1}"));
    let mut s = String::from(
        "| env | algo | baseline IQM | candidate IQM | Δ IQM [95% CI] | verdict |\n|---|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.env,
            r.label,
            opt(r.baseline),
            opt(r.candidate),
            r.delta.map_or("—".into(), |d| format!(
                "{:+.1} [{:+.1}, {:+.1}]",
                d.point, d.low, d.high
            )),
            r.verdict.text()
        );
    }
    s
}

pub fn regressions(rows: &[Comparison]) -> usize {
    rows.iter()
        .filter(|r| matches!(r.verdict, Verdict::Regression(_)))
        .count()
}

/// One sentence per (env, algo) whose candidate lacks seeds that the baseline has: the gate
/// then compares fewer runs than it seems to.
pub fn missing_seeds(baseline: &ResultSet, candidate: &ResultSet) -> Vec<String> {
    let mut notes = Vec::new();
    for env in baseline.envs() {
        for label in baseline.labels() {
            let theirs: Vec<u64> = candidate.all(&env, &label).iter().map(|r| r.seed).collect();
            if theirs.is_empty() {
                continue; // reported as missing from the candidate
            }
            let lacking: Vec<String> = baseline
                .all(&env, &label)
                .iter()
                .map(|r| r.seed)
                .filter(|s| !theirs.contains(s))
                .map(|s| s.to_string())
                .collect();
            if !lacking.is_empty() {
                notes.push(format!(
                    "{env} {label}: the candidate lacks seed(s) {} of the baseline",
                    lacking.join(", ")
                ));
            }
        }
    }
    notes
}

/// One sentence per (env, algo) whose candidate runs were configured otherwise than the
/// baseline's runs of the same seed: the fields, dotted inside tables (`prefs.epsilon`), whose
/// values differ once each `config.toml` is resolved over the defaults (so a field an older
/// gradgym did not write reads as its default, and an unset option as `unset`), with both
/// values. Δ then measures the config as well as the code. Not named: `seed`, and settings
/// that do not change what a run computes (`checkpoint_every`; `torch_threads` where both
/// sides train natively on the CPU). Runs without a readable `config.toml` on either side (a
/// `summary.csv` kept alone) are not compared.
pub fn config_differences(baseline: &ResultSet, candidate: &ResultSet) -> Vec<String> {
    use std::collections::BTreeMap;
    // A config.toml that exists but cannot be resolved is said once, not passed over.
    let mut unreadable: Vec<String> = Vec::new();
    let mut resolved = |dir: &std::path::Path| -> Option<BTreeMap<String, String>> {
        match crate::results::resolved_config(dir) {
            Ok(fields) => fields,
            Err(e) => {
                let said = format!("{e}; this run's config is not compared");
                if !unreadable.contains(&said) {
                    unreadable.push(said);
                }
                None
            }
        }
    };
    let native_cpu = |f: &BTreeMap<String, String>| {
        f.get("device").is_some_and(|d| d == "\"cpu\"")
            && f.get("backend").is_none_or(|b| b != "\"libtorch\"")
    };
    let mut notes = Vec::new();
    for env in baseline.envs() {
        for label in baseline.labels() {
            let mut fields: Vec<String> = Vec::new();
            for ours in candidate.all(&env, &label) {
                let Some(theirs) = baseline
                    .all(&env, &label)
                    .into_iter()
                    .find(|r| r.seed == ours.seed)
                else {
                    continue;
                };
                let (Some(b), Some(c)) = (resolved(&theirs.dir), resolved(&ours.dir)) else {
                    continue;
                };
                let quiet_threads = native_cpu(&b) && native_cpu(&c);
                let ignore = |key: &str| key == "torch_threads" && quiet_threads;
                for (key, bv, cv) in crate::results::differing_fields(&b, &c, &ignore) {
                    let said = format!("{key} {bv} → {cv}");
                    if !fields.contains(&said) {
                        fields.push(said);
                    }
                }
            }
            if !fields.is_empty() {
                let shown = crate::results::first_three(&fields);
                notes.push(format!(
                    "{env} {label}: the candidate's runs were configured otherwise than the baseline's ({shown}), so Δ measures the config as well as the code"
                ));
            }
        }
    }
    notes.extend(unreadable);
    notes
}
