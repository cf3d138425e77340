//! The RLHF over-optimisation study from a folder of `gradgym rlhf` stage runs (what
//! `scripts/rlhf-results.sh` writes): its report (`gradgym report DIR`) and plots
//! (`gradgym plot DIR`), drawn from the run folders' files alone.
//!
//! - Reward models (`rlhf rm` runs): comparisons fitted, held-out agreement with the gold judge.
//! - Best-of-n (`rlhf bon` runs, `best_of_n.csv`): proxy and gold score and the KL estimate for
//!   each n, beside the `log n − (n−1)/n` bound.
//! - RL (`rlhf rl` runs, `eval.csv`): the policy on the fixed evaluation prompts every few
//!   updates, for each β.
//! - The functional forms of Gao, Schulman & Hilton 2022 ("Scaling laws for reward model
//!   overoptimization", eqs. 1–2) fitted by least squares to the gold score's gain over the SFT
//!   policy, with d = √KL: best-of-n `d(α − β d)`, RL `d(α − β log d)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::results::Csv;

/// One point of a curve: √KL, proxy, gold, gold's 95% half-width.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub update: Option<f64>,
    pub n: Option<f64>,
    pub kl: f64,
    pub proxy: f64,
    pub gold: f64,
    pub gold_ci: f64,
}

impl Point {
    pub fn d(&self) -> f64 {
        self.kl.max(0.0).sqrt()
    }
}

/// A curve of the study.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// `best-of-n` or `ppo β=…`.
    pub label: String,
    pub run: String,
    /// Comparisons the reward model was fitted on.
    pub labels: Option<u64>,
    pub beta: Option<f64>,
    /// The run's seed (its manifest's; each seed draws its own evaluation prompts).
    pub seed: u64,
    /// What the run is a seed of: its resolved config without the seed, and the folder name of
    /// its reward model. Runs that differ only in seed share it.
    pub setting: String,
    pub best_of_n: bool,
    pub points: Vec<Point>,
    /// The SFT policy's gold score on the same prompts (the curve's d = 0).
    pub gold_sft: f64,
}

impl Curve {
    /// The point of highest gold score.
    pub fn peak(&self) -> &Point {
        self.points
            .iter()
            .max_by(|a, b| a.gold.total_cmp(&b.gold))
            .expect("a curve has points")
    }
}

/// A reward model of the study.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardModelRow {
    pub run: String,
    pub comparisons: u64,
    pub gold_accuracy: f64,
    pub gold_pairs: u64,
}

/// A sample text of the study.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub source: String,
    pub prompt: String,
    pub response: String,
    pub gold: f64,
}

/// The study.
#[derive(Clone, Debug, Default)]
pub struct Study {
    pub dir: PathBuf,
    pub curves: Vec<Curve>,
    pub reward_models: Vec<RewardModelRow>,
    /// Samples by run.
    pub samples: BTreeMap<String, Vec<Sample>>,
    /// Runs left out because they did not complete: (run, status, error).
    pub skipped: Vec<(String, String, String)>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// Whether `dir` holds `gradgym rlhf` run folders (or is one).
pub fn is_study(dir: &Path) -> bool {
    let kind = |d: &Path| {
        read_json(&d.join("manifest.json"))
            .ok()
            .and_then(|m| m.get("kind").and_then(|k| k.as_str()).map(|k| k == "rlhf"))
            .unwrap_or(false)
    };
    if kind(dir) {
        return true;
    }
    std::fs::read_dir(dir)
        .map(|it| it.flatten().any(|e| kind(&e.path())))
        .unwrap_or(false)
}

/// A cell a run always writes: empty is an error naming its line and column.
fn number(csv: &Csv, row: usize, col: usize) -> Result<f64> {
    csv.number(row, col)?.with_context(|| {
        format!(
            "{}:{}: column `{}` is empty",
            csv.path.display(),
            csv.rows[row].0,
            csv.header[col]
        )
    })
}

/// The points of `best_of_n.csv` (`key` = `n`) or `eval.csv` (`key` = `update`), in file order.
fn read_points(path: &Path, key: &str) -> Result<Vec<Point>> {
    let csv = Csv::read(path)?;
    csv.ensure_rows()?;
    let c: Vec<usize> = [key, "proxy", "gold", "gold_ci", "kl"]
        .iter()
        .map(|k| csv.column(k))
        .collect::<Result<_>>()?;
    let mut last = f64::NEG_INFINITY;
    (0..csv.rows.len())
        .map(|i| {
            let at = number(&csv, i, c[0])?;
            // A run writes its updates in increasing order (its n in its config's order, which
            // the caller checks).
            anyhow::ensure!(
                key != "update" || at > last,
                "{}:{}: {key} {at} after {key} {last}: rows out of order or repeated",
                path.display(),
                csv.rows[i].0
            );
            last = at;
            Ok(Point {
                update: (key == "update").then_some(at),
                n: (key == "n").then_some(at),
                proxy: number(&csv, i, c[1])?,
                gold: number(&csv, i, c[2])?,
                // Empty where the evaluation had one prompt, which gives no interval.
                gold_ci: csv.number(i, c[3])?.unwrap_or(f64::NAN),
                kl: number(&csv, i, c[4])?,
            })
        })
        .collect()
}

/// Reads every run folder of `dir` (or `dir` itself, when it is one).
pub fn load(dir: &Path) -> Result<Study> {
    // The folders of `dir`, read once: its runs and, named like the failed runs rather than
    // passed over, its `<name>.partial` folders (a run is written there until it is sealed: one
    // still running, or whose process was killed outright).
    let (mut runs, mut partial): (Vec<PathBuf>, Vec<(String, &str)>) = if dir
        .join("manifest.json")
        .is_file()
    {
        (vec![dir.to_path_buf()], Vec::new())
    } else {
        let folders: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        // `<run>.replaced-<k>`: a run that `--overwrite` replaced, kept while the new one was
        // moved into place, whose deletion was cut short.
        let replaced = |p: &Path| gradgym_agents::run_folder::is_replaced_name(&name(p));
        let (unfinished, folders): (Vec<PathBuf>, Vec<PathBuf>) = folders
            .into_iter()
            .partition(|p| name(p).ends_with(".partial") || replaced(p));
        let mut partial: Vec<(String, &str)> = unfinished
            .iter()
            .map(|p| {
                let why = if replaced(p) {
                    "replaced by a newer run under --overwrite; its process was killed before deleting it"
                } else {
                    "no summary.json: still running, or its process was killed"
                };
                (name(p), why)
            })
            .collect();
        // A sealed run always has its summary.json: one without it has lost it.
        let (runs, unsealed): (Vec<PathBuf>, Vec<PathBuf>) = folders
            .into_iter()
            .filter(|p| p.join("manifest.json").is_file())
            .partition(|p| p.join("summary.json").is_file());
        partial.extend(
                unsealed
                    .iter()
                    .filter(|p| {
                        read_json(&p.join("manifest.json")).is_ok_and(|m| m["kind"] == "rlhf")
                    })
                    .map(|p| {
                        (
                            name(p),
                            "no summary.json, which every sealed run has: deleted, or the folder copied in part",
                        )
                    }),
            );
        (runs, partial)
    };
    runs.sort();
    partial.sort();
    let mut study = Study {
        dir: dir.to_path_buf(),
        ..Study::default()
    };
    for (name, why) in partial {
        study
            .skipped
            .push((name, "unfinished".into(), why.to_string()));
    }
    for run in runs {
        let manifest = read_json(&run.join("manifest.json"))?;
        if manifest.get("kind").and_then(|k| k.as_str()) != Some("rlhf") {
            continue;
        }
        let summary = read_json(&run.join("summary.json"))?;
        let name = run.file_name().unwrap().to_string_lossy().to_string();
        // A run that failed or was interrupted is sealed with what it wrote; its curves stop
        // early, so it is named in the report rather than drawn.
        match summary.get("status").and_then(|s| s.as_str()) {
            None | Some("completed") => {}
            Some(status) => {
                // The first line: a libtorch panic's message carries a C++ backtrace.
                let error = summary["error"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                study.skipped.push((name, status.to_string(), error));
                continue;
            }
        }
        let stage = manifest["stage"].as_str().unwrap_or("");
        let labels = summary
            .get("reward_model_comparisons")
            .or_else(|| summary.get("comparisons"))
            .and_then(|v| v.as_u64());
        if let (Some(c), Some(acc)) = (
            summary.get("comparisons").and_then(|v| v.as_u64()),
            summary.get("rm_gold_accuracy").and_then(|v| v.as_f64()),
        ) {
            study.reward_models.push(RewardModelRow {
                run: name.clone(),
                comparisons: c,
                gold_accuracy: acc,
                gold_pairs: summary["rm_gold_pairs"].as_u64().unwrap_or(0),
            });
        }
        let gold_sft = summary["sft"]["gold"].as_f64().unwrap_or(f64::NAN);
        let seed = manifest["seed"].as_u64().unwrap_or(1);
        let setting = {
            let mut config = canonical_config(&manifest["config"]);
            if let Some(c) = config.as_object_mut() {
                c.remove("seed");
            }
            let rm = manifest["reward_model"]
                .as_str()
                .and_then(|p| Path::new(p).file_name())
                .map(|n| n.to_string_lossy().into_owned());
            format!("{} {config} {rm:?}", manifest["stage"])
        };
        // What a completed run of its stage wrote: best_of_n.csv (a whole or `bon` run with
        // an n to evaluate) and eval.csv (a whole or `rl` run); one gone is an error.
        let bon = run.join("best_of_n.csv");
        let asked_bon = manifest["config"]["eval"]["best_of_n"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if bon.is_file() || (matches!(stage, "all" | "bon") && asked_bon) {
            let points = read_points(&bon, "n")?;
            // A completed run wrote a row per n its config asked for.
            if let Some(want) = manifest["config"]["eval"]["best_of_n"].as_array() {
                let want: Vec<f64> = want.iter().filter_map(|n| n.as_f64()).collect();
                let got: Vec<f64> = points.iter().filter_map(|p| p.n).collect();
                anyhow::ensure!(
                    got == want,
                    "{}: rows for n = {got:?}, but the completed run's eval.best_of_n is {want:?} (truncated?)",
                    bon.display()
                );
            }
            // Best-of-1 is the SFT policy itself, estimated on every reference sample.
            let base = points
                .iter()
                .find(|p| p.n == Some(1.0))
                .map_or(gold_sft, |p| p.gold);
            study.curves.push(Curve {
                label: "best-of-n".into(),
                run: name.clone(),
                labels,
                beta: None,
                seed,
                setting: name.clone(),
                best_of_n: true,
                points,
                gold_sft: base,
            });
        }
        let eval = run.join("eval.csv");
        if matches!(stage, "rl" | "all") {
            let points = read_points(&eval, "update")?;
            // A completed run evaluated its last update.
            if let Some(want) = manifest["config"]["rl"]["updates"].as_f64() {
                let last = points.last().and_then(|p| p.update).unwrap_or(f64::NAN);
                anyhow::ensure!(
                    last == want,
                    "{}: the last row is update {last}, but the completed run made rl.updates = {want} (truncated?)",
                    eval.display()
                );
            }
            let beta = manifest["config"]["rl"]["beta"].as_f64();
            study.curves.push(Curve {
                label: format!(
                    "{} β={}",
                    rl_learner(&manifest["config"]["rl"]),
                    beta.unwrap_or(f64::NAN)
                ),
                run: name.clone(),
                labels,
                beta,
                seed,
                setting,
                best_of_n: false,
                gold_sft: points.first().map_or(gold_sft, |p| p.gold),
                points,
            });
        }
        let samples = run.join("samples.jsonl");
        if samples.is_file() {
            let text = std::fs::read_to_string(&samples)?;
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let s: Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not JSON", samples.display(), i + 1))?;
                let field = |key: &str| {
                    s[key].as_str().map(str::to_string).with_context(|| {
                        format!(
                            "{}:{}: field `{key}` is missing or not a string",
                            samples.display(),
                            i + 1
                        )
                    })
                };
                let mut source = field("source")?;
                if let Some(u) = s["update"].as_u64() {
                    // An RL policy's samples are named as the run's curve is (PPO-KL, not
                    // just the `algo` field's "ppo").
                    if manifest["config"]["rl"]["algo"].as_str() == Some(source.as_str()) {
                        source = rl_learner(&manifest["config"]["rl"]);
                    }
                    source = format!("{source} (update {u})");
                }
                v.push(Sample {
                    source,
                    prompt: field("prompt")?,
                    response: field("response")?,
                    gold: s["gold"].as_f64().with_context(|| {
                        format!(
                            "{}:{}: field `gold` is missing or not a number",
                            samples.display(),
                            i + 1
                        )
                    })?,
                });
            }
            study.samples.insert(name.clone(), v);
        }
    }
    anyhow::ensure!(
        !study.curves.is_empty() || !study.reward_models.is_empty(),
        "{}: no gradgym rlhf runs with results",
        dir.display()
    );
    Ok(study)
}

/// The least-squares (α, β) of `y = α·f(d) − β·g(d)` and R².
fn fit2(rows: &[(f64, f64, f64)]) -> Option<(f64, f64, f64)> {
    // rows: (f, g, y); solve [Σff −Σfg; −Σfg Σgg] [α β] = [Σfy, −Σgy].
    let (mut ff, mut fg, mut gg, mut fy, mut gy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(f, g, y) in rows {
        ff += f * f;
        fg += f * g;
        gg += g * g;
        fy += f * y;
        gy += g * y;
    }
    let det = ff * gg - fg * fg;
    if rows.len() < 2 || det.abs() < 1e-12 {
        return None;
    }
    // y ≈ α f + b g with b = −β.
    let alpha = (fy * gg - gy * fg) / det;
    let b = (ff * gy - fg * fy) / det;
    // R² over the points the fit had to explain: the curve's own start (d = 0: update 0, or
    // n = 1), where both forms are 0 by construction and the gain is 0 by definition, would
    // add a point fitted exactly and inflate it.
    let free: Vec<_> = rows.iter().filter(|r| r.0 != 0.0 || r.1 != 0.0).collect();
    if free.len() < 2 {
        return None;
    }
    let mean = free.iter().map(|r| r.2).sum::<f64>() / free.len() as f64;
    let ss_tot: f64 = free.iter().map(|r| (r.2 - mean).powi(2)).sum();
    let ss_res: f64 = free
        .iter()
        .map(|r| (r.2 - alpha * r.0 - b * r.1).powi(2))
        .sum();
    Some((alpha, -b, 1.0 - ss_res / ss_tot.max(1e-300)))
}

/// Gao et al.'s fit of a curve's gold gain over SFT: (α, β, R²).
pub fn gao_fit(curve: &Curve) -> Option<(f64, f64, f64)> {
    let rows: Vec<(f64, f64, f64)> = curve
        .points
        .iter()
        .filter(|p| p.kl.is_finite() && p.gold.is_finite())
        .map(|p| {
            let d = p.d();
            let g = if curve.best_of_n {
                d * d
            } else if d > 0.0 {
                d * d.ln()
            } else {
                0.0
            };
            (d, g, p.gold - curve.gold_sft)
        })
        .collect();
    fit2(&rows)
}

/// The fitted gold score at d.
pub fn gao_curve(curve: &Curve, fit: (f64, f64, f64), d: f64) -> f64 {
    let (a, b, _) = fit;
    let gain = if curve.best_of_n {
        d * (a - b * d)
    } else if d > 0.0 {
        d * (a - b * d.ln())
    } else {
        0.0
    };
    curve.gold_sft + gain
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "–".into()
    }
}

/// The report, as markdown.
pub fn markdown(study: &Study) -> String {
    let mut s = String::from("# RLHF on the review language: over-optimisation study\n\n");
    s.push_str(&format!(
        "From the runs in `{}` (regenerate with `gradgym report {}`). Scores are means over the \
         fixed evaluation prompts with 95% intervals (1.96 standard errors over prompts); KL is \
         KL(π‖p_SFT) per sequence in nats (k1, from samples).\n\n",
        study.dir.display(),
        study.dir.display()
    ));
    for (run, status, error) in &study.skipped {
        s.push_str(&format!(
            "Left out: `{run}` (status {status}: {error}).\n\n"
        ));
    }
    if !study.reward_models.is_empty() {
        s.push_str("## Reward models\n\n| run | comparisons | held-out pairs | agreement with the gold judge |\n|---|---:|---:|---:|\n");
        for r in &study.reward_models {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1}% |\n",
                r.run,
                r.comparisons,
                r.gold_pairs,
                100.0 * r.gold_accuracy
            ));
        }
        s.push('\n');
    }
    for c in study.curves.iter().filter(|c| c.best_of_n) {
        s.push_str(&format!(
            "## Best-of-n, reward model of {} comparisons (`{}`)\n\n| n | KL estimate | log n − (n−1)/n | proxy | gold |\n|---:|---:|---:|---:|---|\n",
            c.labels.map_or("?".into(), |l| l.to_string()),
            c.run
        ));
        for p in &c.points {
            let n = p.n.unwrap_or(f64::NAN);
            let bound = n.ln() - (n - 1.0) / n;
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} ± {} |\n",
                n,
                f3(p.kl),
                f3(bound),
                f3(p.proxy),
                f3(p.gold),
                f3(p.gold_ci)
            ));
        }
        s.push('\n');
    }
    let rl: Vec<&Curve> = study.curves.iter().filter(|c| !c.best_of_n).collect();
    if !rl.is_empty() {
        s.push_str("## RL\n\n| run | comparisons | β | seed | SFT gold | peak gold (update, √KL) | final gold | final proxy | final KL |\n|---|---:|---:|---:|---|---|---|---:|---:|\n");
        for c in &rl {
            let peak = c.peak();
            let last = c.points.last().unwrap();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} ± {} | {} ± {} ({}, {}) | {} ± {} | {} | {} |\n",
                c.run,
                c.labels.map_or("?".into(), |l| l.to_string()),
                c.beta.map_or("?".into(), |b| b.to_string()),
                c.seed,
                f3(c.points[0].gold),
                f3(c.points[0].gold_ci),
                f3(peak.gold),
                f3(peak.gold_ci),
                peak.update.unwrap_or(f64::NAN),
                f3(peak.d()),
                f3(last.gold),
                f3(last.gold_ci),
                f3(last.proxy),
                f3(last.kl)
            ));
        }
        s.push('\n');
    }
    s.push_str(&seeds_section(study));
    s.push_str("## Gao et al. 2022 fits\n\nLeast squares on the gold score's gain over the SFT policy, d = √KL: best-of-n `d(α − β d)`, RL `d(α − β log d)`. R² is over the points past each curve's start (update 0, or n = 1), which both forms fit exactly by construction.\n\n| curve | comparisons | α | β | R² |\n|---|---:|---:|---:|---:|\n");
    for c in &study.curves {
        if let Some((a, b, r2)) = gao_fit(c) {
            s.push_str(&format!(
                "| {} (`{}`) | {} | {} | {} | {} |\n",
                c.label,
                c.run,
                c.labels.map_or("?".into(), |l| l.to_string()),
                f3(a),
                f3(b),
                f3(r2)
            ));
        }
    }
    s.push('\n');
    if !study.samples.is_empty() {
        s.push_str("## Samples\n\nThe first evaluation prompts, answered by the SFT policy, best-of-4 and the RL policies at their last update, side by side, with the gold judge's score of each.\n\n");
        // Per prompt, one answer per (source, run): its first sample there. An answer that
        // other runs gave from the same source too (the SFT policy seen by each best-of-n
        // run) is listed once, with every run that gave it.
        let mut by_prompt: BTreeMap<String, Vec<(String, String, String, f64)>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut taken = std::collections::BTreeSet::new();
        for (run, samples) in &study.samples {
            let last_update = samples
                .iter()
                .filter(|x| x.source.contains("(update"))
                .map(|x| x.source.clone())
                .next_back();
            for x in samples {
                let keep = !x.source.contains("(update") || Some(&x.source) == last_update.as_ref();
                if !keep {
                    continue;
                }
                if !order.contains(&x.prompt) {
                    order.push(x.prompt.clone());
                }
                if !taken.insert((x.prompt.clone(), x.source.clone(), run.clone())) {
                    continue;
                }
                let answers = by_prompt.entry(x.prompt.clone()).or_default();
                match answers
                    .iter_mut()
                    .find(|(source, _, response, _)| *source == x.source && *response == x.response)
                {
                    Some((_, runs, _, _)) => runs.push_str(&format!(", `{run}`")),
                    None => answers.push((
                        x.source.clone(),
                        format!("`{run}`"),
                        x.response.clone(),
                        x.gold,
                    )),
                }
            }
        }
        for prompt in order.iter().take(4) {
            s.push_str(&format!(
                "**{prompt}**\n\n| source | run | response | gold |\n|---|---|---|---:|\n"
            ));
            for (source, run, response, gold) in &by_prompt[prompt] {
                s.push_str(&format!(
                    "| {source} | {run} | {} | {} |\n",
                    response.replace('|', "\\|"),
                    f3(*gold)
                ));
            }
            s.push('\n');
        }
    }
    s
}

/// A manifest's config with every field a run of this version would write: one written
/// before a field existed has it at its default (which is what that run ran), so runs of one
/// setting group together whichever version wrote them. A config this version cannot read
/// stays as written.
fn canonical_config(config: &Value) -> Value {
    serde_json::from_value::<gradgym_agents::config::rlhf::RlhfConfig>(config.clone())
        .ok()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| config.clone())
}

/// The RL learner of a manifest's `config.rl`, as labels name it: `ppo`, `a2c`, `reinforce`;
/// PPO-KL with its β toward the old policy, `ppo-kl[kl_coef=1]`, and its target when adapted,
/// `ppo-kl[kl_coef=1, ppo_kl_target=0.01]`; an early stop at `target_kl` and an annealed
/// learning rate in the brackets too, `ppo[target_kl=0.02, anneal_lr]`; RLOO and GRPO with
/// their responses per prompt, `grpo[num_generations=4]`.
fn rl_learner(rl: &Value) -> String {
    let mut name = rl["algo"].as_str().unwrap_or("rl").to_string();
    let mut knobs = Vec::new();
    if matches!(name.as_str(), "rloo" | "grpo") {
        // Left out of the config at its default.
        let k = rl["num_generations"]
            .as_u64()
            .unwrap_or(gradgym_agents::config::rlhf::RlConfig::default().generations() as u64);
        knobs.push(format!("num_generations={k}"));
        if rl["scale_rewards"].as_str() == Some("none") {
            knobs.push("scale_rewards=none".into());
        }
    }
    if rl["ppo_loss"].as_str() == Some("kl") {
        name.push_str("-kl");
        // Left out of the config at its default.
        let coef = rl["kl_coef"]
            .as_f64()
            .unwrap_or(gradgym_agents::config::rlhf::RlConfig::default().kl_coef);
        knobs.push(format!("kl_coef={coef}"));
        if let Some(t) = rl["ppo_kl_target"].as_f64() {
            knobs.push(format!("ppo_kl_target={t}"));
        }
    }
    if let Some(t) = rl["target_kl"].as_f64() {
        knobs.push(format!("target_kl={t}"));
    }
    if rl["anneal_lr"].as_bool() == Some(true) {
        knobs.push("anneal_lr".into());
    }
    if knobs.is_empty() {
        name
    } else {
        format!("{name}[{}]", knobs.join(", "))
    }
}

/// The RL curves of one setting (reward model, β), one per seed, in seed order.
pub fn seed_groups(study: &Study) -> Vec<Vec<&Curve>> {
    group_by_setting(study.curves.iter().filter(|c| !c.best_of_n))
}

/// `curves` in groups of one setting each (its seeds, in seed order), groups in order of first
/// appearance; a best-of-n curve is a group of its own.
pub fn group_by_setting<'a>(curves: impl IntoIterator<Item = &'a Curve>) -> Vec<Vec<&'a Curve>> {
    let mut groups: Vec<Vec<&Curve>> = Vec::new();
    for c in curves {
        match groups
            .iter_mut()
            .find(|g| !c.best_of_n && g[0].labels == c.labels && g[0].setting == c.setting)
        {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    for g in &mut groups {
        g.sort_by_key(|c| c.seed);
    }
    groups
}

/// `a ± ea` lies wholly above `b ± eb`.
fn above(a: f64, ea: f64, b: f64, eb: f64) -> &'static str {
    if a - ea > b + eb { "yes" } else { "no" }
}

/// The settings run with more than one seed: each seed's run, and the spread across seeds.
fn seeds_section(study: &Study) -> String {
    let groups: Vec<Vec<&Curve>> = seed_groups(study)
        .into_iter()
        .filter(|g| g.len() > 1)
        .collect();
    if groups.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "## Seeds\n\nThe settings run with more than one seed. Each seed draws its own policy samples and its own evaluation prompts (so its SFT gold differs); best-of-4 is the best-of-n run on the same reward model (seed 1's prompts). \"Above\" means the two 95% intervals do not overlap.\n\n| setting | seed | SFT gold | peak gold (update) | final gold | final above SFT | final above best-of-4 | final proxy | final KL |\n|---|---:|---|---|---|---|---|---:|---:|\n",
    );
    let mut spread = String::new();
    for g in &groups {
        let bo4 = study
            .curves
            .iter()
            .find(|c| c.best_of_n && c.labels == g[0].labels)
            .and_then(|c| c.points.iter().find(|p| p.n == Some(4.0)));
        let setting = format!(
            "{}, {} comparisons",
            g[0].label,
            g[0].labels.map_or("?".into(), |l| l.to_string())
        );
        let mut finals = Vec::new();
        let mut falls = Vec::new();
        for c in g {
            let first = &c.points[0];
            let peak = c.peak();
            let last = c.points.last().unwrap();
            finals.push(last.gold);
            falls.push(peak.gold - last.gold);
            s.push_str(&format!(
                "| {setting} | {} | {} ± {} | {} ± {} ({}) | {} ± {} | {} | {} | {} | {} |\n",
                c.seed,
                f3(first.gold),
                f3(first.gold_ci),
                f3(peak.gold),
                f3(peak.gold_ci),
                peak.update.unwrap_or(f64::NAN),
                f3(last.gold),
                f3(last.gold_ci),
                above(last.gold, last.gold_ci, first.gold, first.gold_ci),
                bo4.map_or("–", |b| above(last.gold, last.gold_ci, b.gold, b.gold_ci)),
                f3(last.proxy),
                f3(last.kl)
            ));
        }
        // The smallest and largest of `x`.
        let extent = |x: &[f64]| {
            x.iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                })
        };
        let (lo, hi) = extent(&finals);
        let (fall_lo, fall_hi) = extent(&falls);
        spread.push_str(&format!(
            "- {setting}: final gold {} over {} seeds (range {} to {}); peak minus final gold {} to {}.\n",
            f3(crate::stats::mean(&finals)),
            finals.len(),
            f3(lo),
            f3(hi),
            f3(fall_lo),
            f3(fall_hi)
        ));
    }
    s.push('\n');
    s.push_str(&spread);
    s.push('\n');
    s
}

/// Writes `<out>/report.md` and returns its text.
pub fn write_report(study: &Study, out: &Path) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = markdown(study);
    std::fs::write(out.join("report.md"), &md)
        .with_context(|| format!("cannot write {}", out.join("report.md").display()))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_by_what_they_ran_and_ppo_kl_is_named_apart() {
        // A committed manifest's rl table (no PPO-KL fields, `kl_target` null) and this
        // version's, which leaves them out at their defaults: one setting.
        let old =
            serde_json::json!({"seed": 1, "rl": {"algo": "ppo", "beta": 0.1, "kl_target": null}});
        let new = serde_json::json!({"seed": 1, "rl": {"algo": "ppo", "beta": 0.1}});
        let nulls = serde_json::json!({"seed": 1, "rl": {"algo": "ppo", "beta": 0.1,
            "ppo_kl_target": null, "target_kl": null}});
        assert_eq!(canonical_config(&old), canonical_config(&new));
        assert_eq!(canonical_config(&old), canonical_config(&nulls));
        // What this version cannot read stays as written; PPO-KL is another setting.
        let future = serde_json::json!({"rl": {"algo": "ppo", "new_field": 1}});
        assert_eq!(canonical_config(&future), future);
        let kl =
            serde_json::json!({"seed": 1, "rl": {"algo": "ppo", "beta": 0.1, "ppo_loss": "kl"}});
        assert_ne!(canonical_config(&kl), canonical_config(&new));
        // Labels: PPO-KL with its β toward the old policy (1 when left out), and its target.
        assert_eq!(rl_learner(&new["rl"]), "ppo");
        assert_eq!(rl_learner(&kl["rl"]), "ppo-kl[kl_coef=1]");
        let adaptive = serde_json::json!({"algo": "ppo", "ppo_loss": "kl", "kl_coef": 0.5,
            "ppo_kl_target": 0.01});
        assert_eq!(
            rl_learner(&adaptive),
            "ppo-kl[kl_coef=0.5, ppo_kl_target=0.01]"
        );
        assert_eq!(rl_learner(&serde_json::json!({"algo": "a2c"})), "a2c");
        let early = serde_json::json!({"algo": "ppo", "target_kl": 0.02});
        assert_eq!(rl_learner(&early), "ppo[target_kl=0.02]");
        let annealed = serde_json::json!({"algo": "a2c", "anneal_lr": true});
        assert_eq!(rl_learner(&annealed), "a2c[anneal_lr]");
        let grpo = serde_json::json!({"algo": "grpo", "num_generations": 8});
        assert_eq!(rl_learner(&grpo), "grpo[num_generations=8]");
        let dr = serde_json::json!({"algo": "grpo", "scale_rewards": "none"});
        assert_eq!(
            rl_learner(&dr),
            "grpo[num_generations=4, scale_rewards=none]"
        );
        assert_eq!(
            rl_learner(&serde_json::json!({"algo": "rloo"})),
            "rloo[num_generations=4]"
        );
    }

    fn curve(best_of_n: bool, gain: impl Fn(f64) -> f64) -> Curve {
        let points = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
            .iter()
            .map(|&d: &f64| Point {
                update: None,
                n: None,
                kl: d * d,
                proxy: 0.0,
                gold: 0.7 + gain(d),
                gold_ci: 0.0,
            })
            .collect();
        Curve {
            label: "test".into(),
            run: "run".into(),
            labels: None,
            beta: None,
            seed: 1,
            setting: "test".into(),
            best_of_n,
            points,
            gold_sft: 0.7,
        }
    }

    #[test]
    fn gaos_forms_are_recovered_from_points_that_follow_them() {
        let bon = curve(true, |d| d * (0.8 - 0.15 * d));
        let (a, b, r2) = gao_fit(&bon).unwrap();
        assert!((a - 0.8).abs() < 1e-9 && (b - 0.15).abs() < 1e-9, "{a} {b}");
        assert!((r2 - 1.0).abs() < 1e-9);
        assert!((gao_curve(&bon, (a, b, r2), 2.5) - (0.7 + 2.5 * (0.8 - 0.375))).abs() < 1e-9);
        let rl = curve(false, |d| {
            if d > 0.0 {
                d * (0.5 - 0.2 * d.ln())
            } else {
                0.0
            }
        });
        let (a, b, r2) = gao_fit(&rl).unwrap();
        assert!((a - 0.5).abs() < 1e-9 && (b - 0.2).abs() < 1e-9, "{a} {b}");
        assert!((r2 - 1.0).abs() < 1e-9);
        // The other form does not fit the RL curve exactly.
        let wrong = Curve {
            best_of_n: true,
            ..rl.clone()
        };
        assert!(gao_fit(&wrong).unwrap().2 < 0.999);
        // Noise lowers R² below 1 but keeps the coefficients near.
        let noisy = curve(true, |d| d * (0.8 - 0.15 * d) + 0.01 * (7.0 * d).sin());
        let (a, b, r2) = gao_fit(&noisy).unwrap();
        assert!((a - 0.8).abs() < 0.05 && (b - 0.15).abs() < 0.05 && r2 < 1.0 && r2 > 0.99);
        // R² is over the points past the start (d = 0), which every fit passes through: a
        // hand count over those alone, the start's zero gain left out of the mean.
        let (rows, want) = {
            let fit = |d: f64| d * (a - b * d);
            let free: Vec<_> = noisy.points.iter().filter(|p| p.kl > 0.0).collect();
            assert!(
                free.len() < noisy.points.len(),
                "the test curve has a start"
            );
            let y: Vec<f64> = free.iter().map(|p| p.gold - noisy.gold_sft).collect();
            let mean = y.iter().sum::<f64>() / y.len() as f64;
            let tot: f64 = y.iter().map(|y| (y - mean).powi(2)).sum();
            let res: f64 = free
                .iter()
                .zip(&y)
                .map(|(p, y)| (y - fit(p.kl.sqrt())).powi(2))
                .sum();
            (free.len(), 1.0 - res / tot)
        };
        assert!(
            rows >= 2 && (r2 - want).abs() < 1e-12,
            "{r2} against {want}"
        );
    }

    #[test]
    fn a_setting_run_with_several_seeds_is_summarised_across_them() {
        // An RL curve: SFT gold 1.0 ± 0.1 at update 0, then `peak` at update 5 and `last`
        // at update 10, each ± 0.05.
        let rl = |beta: f64, seed: u64, peak: f64, last: f64| {
            let point = |u: f64, gold: f64, ci: f64| Point {
                update: Some(u),
                n: None,
                kl: u,
                proxy: u / 10.0,
                gold,
                gold_ci: ci,
            };
            Curve {
                label: format!("ppo β={beta}"),
                run: format!("ppo-beta{beta}-seed{seed}"),
                labels: Some(100),
                beta: Some(beta),
                seed,
                setting: format!("ppo {beta}"),
                best_of_n: false,
                points: vec![
                    point(0.0, 1.0, 0.1),
                    point(5.0, peak, 0.05),
                    point(10.0, last, 0.05),
                ],
                gold_sft: 1.0,
            }
        };
        let mut bon = curve(true, |d| d);
        bon.labels = Some(100);
        bon.points[2].n = Some(4.0);
        bon.points[2].gold = 1.5;
        bon.points[2].gold_ci = 0.05;
        let mut study = Study {
            curves: vec![bon, rl(0.1, 1, 2.0, 1.9), rl(0.0, 1, 2.2, 1.2)],
            ..Study::default()
        };
        // One seed per setting: no section.
        assert!(!markdown(&study).contains("## Seeds"));
        study.curves.push(rl(0.1, 3, 2.1, 1.58));
        study.curves.push(rl(0.1, 2, 2.0, 1.7));
        // The same β in another setting (online rounds, say): a group of its own.
        let mut other = rl(0.1, 1, 2.0, 1.9);
        other.setting = "ppo 0.1, 4 rounds".into();
        study.curves.push(other);
        let groups = seed_groups(&study);
        assert_eq!(groups.len(), 3, "β = 0.1, β = 0, and β = 0.1 in rounds");
        let seeds: Vec<u64> = groups[0].iter().map(|c| c.seed).collect();
        assert_eq!(seeds, [1, 2, 3]);
        let md = markdown(&study);
        let section = &md[md.find("## Seeds").expect(&md)..md.find("## Gao").unwrap()];
        // β = 0 has one seed: not listed.
        assert!(!section.contains("ppo β=0,"), "{section}");
        // Seed 1: 1.9 ± 0.05 is above SFT (1.0 ± 0.1) and best-of-4 (1.5 ± 0.05).
        assert!(
            section.contains("| ppo β=0.1, 100 comparisons | 1 | 1.000 ± 0.100 | 2.000 ± 0.050 (5) | 1.900 ± 0.050 | yes | yes |"),
            "{section}"
        );
        // Seed 3: 1.58 ± 0.05 overlaps best-of-4's interval.
        assert!(
            section.contains("| ppo β=0.1, 100 comparisons | 3 | 1.000 ± 0.100 | 2.100 ± 0.050 (5) | 1.580 ± 0.050 | yes | no |"),
            "{section}"
        );
        assert!(
            section.contains(
                "- ppo β=0.1, 100 comparisons: final gold 1.727 over 3 seeds (range 1.580 to 1.900); peak minus final gold 0.100 to 0.520."
            ),
            "{section}"
        );
    }

    #[test]
    fn samples_are_listed_side_by_side_once_per_source_and_run() {
        let sample = |source: &str, prompt: &str, response: &str| Sample {
            source: source.into(),
            prompt: prompt.into(),
            response: response.into(),
            gold: 1.0,
        };
        let mut study = Study::default();
        for run in ["bon-a", "bon-b"] {
            study.samples.insert(
                run.into(),
                vec![
                    sample("sft", "P1", "same sft answer"),
                    sample("best_of_4", "P1", &format!("best of {run}")),
                    sample("sft", "P1", "a second sft answer to a repeated prompt"),
                ],
            );
        }
        study.samples.insert(
            "ppo".into(),
            vec![
                sample("ppo (update 10)", "P1", "early"),
                sample("ppo (update 20)", "P1", "late | with a bar"),
            ],
        );
        let md = markdown(&study);
        assert_eq!(md.matches("same sft answer").count(), 1, "{md}");
        assert!(
            md.contains("| sft | `bon-a`, `bon-b` | same sft answer |"),
            "{md}"
        );
        assert!(!md.contains("a second sft answer"), "{md}");
        assert!(md.contains("best of bon-a") && md.contains("best of bon-b"));
        assert!(!md.contains("early"), "only the last update: {md}");
        assert!(
            md.contains("| ppo (update 20) | `ppo` | late \\| with a bar | 1.000 |"),
            "{md}"
        );
    }
}
