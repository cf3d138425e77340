//! Reading a results folder (see [`crate::sweep`] for its layout): `summary.csv` for the runs,
//! `runs/<run-id>/metrics.csv` for curves. `report`, `plot` and `compare` read only these files.
//!
//! A folder given to them may be one sweep folder, a folder of sweep folders (the shards of
//! a sweep, `shard-1/`, `shard-2/`, … as `--emit-slurm` lays them out), or the run folder of
//! one `gradgym train` (its `summary.json` stands in for a summary.csv row): the runs of all
//! are pooled. Columns are found by name, so files with extra metric columns read unchanged.
//!
//! What is not scored is said, not hidden: an interrupted run is skipped with a warning, a
//! sweep with fewer finished runs than its manifest planned is named as incomplete, and a
//! number that is not finite (a NaN in a CSV) is an error naming file, line and column.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One row of `summary.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub env_id: String,
    pub algo: String,
    pub seed: u64,
    /// Grid values (empty where the run's group had no such key).
    pub hyperparameters: BTreeMap<String, String>,
    /// The `group` column: the `[[runs]]` group's name or number where the sweep labels it
    /// (groups that repeat another's cells with another config, and named groups); empty
    /// otherwise and in folders without the column.
    pub group: String,
    pub status: String,
    pub final_return: Option<f64>,
    pub eval_return: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub error: String,
    /// The run's folder.
    pub dir: PathBuf,
}

impl RunRecord {
    /// What the statistics compare: the algo, with its group label and grid values if it has
    /// any (`ppo[learning_rate=0.001]`, `ppo[group=2,learning_rate=0.001]`).
    pub fn label(&self) -> String {
        let group = (!self.group.is_empty()).then(|| format!("group={}", self.group));
        let hp: Vec<String> = group
            .into_iter()
            .chain(
                self.hyperparameters
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| format!("{k}={v}")),
            )
            .collect();
        if hp.is_empty() {
            self.algo.clone()
        } else {
            format!("{}[{}]", self.algo, hp.join(","))
        }
    }

    pub fn completed(&self) -> bool {
        self.status == "completed"
    }
}

/// The runs of one or more results folders.
#[derive(Clone, Debug, Default)]
pub struct ResultSet {
    /// The sweep folders (and single run folders) read.
    pub sweeps: Vec<PathBuf>,
    /// Sorted by (env, label, seed).
    pub runs: Vec<RunRecord>,
    /// What was read but not scored, or is missing, one sentence each.
    pub warnings: Vec<String>,
}

impl ResultSet {
    pub fn envs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.runs.iter().map(|r| r.env_id.clone()).collect();
        v.dedup();
        v
    }

    /// Labels in first-seen order of a fixed algo ranking (ppo, a2c, reinforce, others).
    pub fn labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.runs.iter().map(|r| r.label()).collect();
        v.sort_by_key(|l| (algo_rank(l), l.clone()));
        v.dedup();
        v
    }

    /// Completed runs of (env, label).
    pub fn completed(&self, env: &str, label: &str) -> Vec<&RunRecord> {
        self.runs
            .iter()
            .filter(|r| r.env_id == env && r.label() == label && r.completed())
            .collect()
    }

    /// All runs of (env, label), completed or not.
    pub fn all(&self, env: &str, label: &str) -> Vec<&RunRecord> {
        self.runs
            .iter()
            .filter(|r| r.env_id == env && r.label() == label)
            .collect()
    }
}

fn algo_rank(label: &str) -> usize {
    ["ppo", "a2c", "reinforce"]
        .iter()
        .position(|a| label == *a || label.starts_with(&format!("{a}[")))
        .unwrap_or(3)
}

/// The sweep folders under `dir`: itself if it has a summary.csv, otherwise its subfolders
/// that do (sorted by name).
fn sweep_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join("summary.csv").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut subs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("summary.csv").is_file())
        .collect();
    subs.sort();
    if subs.is_empty() && dir.join("summary.json").is_file() {
        bail!(
            "{}: a run folder (summary.json) without its metrics.csv, and no summary.csv \
             either: it cannot be read as a `gradgym train` run or a sweep",
            dir.display()
        );
    }
    if subs.is_empty() {
        bail!(
            "{}: no summary.csv here or in its subfolders; is this a `gradgym sweep` folder?",
            dir.display()
        );
    }
    Ok(subs)
}

/// A CSV file as a header and rows, with line-numbered errors for rows of the wrong width.
pub struct Csv {
    pub path: PathBuf,
    pub header: Vec<String>,
    /// (line number in the file, fields).
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Csv {
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("{}: cannot read the header", path.display()))?
            .iter()
            .map(|s| s.to_string())
            .collect();
        if header.is_empty() || header.iter().all(|h| h.is_empty()) {
            bail!("{}: empty file (no header)", path.display());
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.with_context(|| format!("{}: malformed CSV", path.display()))?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            if record.len() != header.len() {
                bail!(
                    "{}:{line}: expected {} fields, found {} (truncated or corrupted row)",
                    path.display(),
                    header.len(),
                    record.len()
                );
            }
            rows.push((line, record.iter().map(|s| s.to_string()).collect()));
        }
        if !text.is_empty() && !text.ends_with('\n') {
            bail!(
                "{}:{}: the last line has no line end (file truncated?)",
                path.display(),
                rows.last().map_or(1, |(l, _)| *l)
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// An error naming the file where it holds a header and no rows: a file its writer ends
    /// with rows (a run's metrics, a study's evaluations) that was cut short. (summary.csv may
    /// rightly have none: a sweep writes its header first.)
    pub fn ensure_rows(&self) -> Result<()> {
        if self.rows.is_empty() {
            bail!("{}: a header and no rows (truncated?)", self.path.display());
        }
        Ok(())
    }

    pub fn column(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column `{name}`", self.path.display()))
    }

    /// A numeric cell: `None` when empty, an error naming line and column when not a number.
    pub fn number(&self, row: usize, col: usize) -> Result<Option<f64>> {
        let (line, fields) = &self.rows[row];
        let cell = fields[col].trim();
        if cell.is_empty() {
            return Ok(None);
        }
        match cell.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            Ok(_) => bail!(
                "{}:{line}: column `{}` is not a finite number: `{cell}`",
                self.path.display(),
                self.header[col]
            ),
            Err(_) => bail!(
                "{}:{line}: column `{}` is not a number: `{cell}`",
                self.path.display(),
                self.header[col]
            ),
        }
    }
}

fn read_summary_csv(sweep: &Path) -> Result<Vec<RunRecord>> {
    let csv = Csv::read(&sweep.join("summary.csv"))?;
    let col = |n: &str| csv.column(n);
    let (c_id, c_env, c_algo, c_seed, c_status) = (
        col("run_id")?,
        col("env_id")?,
        col("algo")?,
        col("seed")?,
        col("status")?,
    );
    let (c_final, c_eval, c_error, c_wall) = (
        col("final_return_mean_last100")?,
        col("eval_return_mean")?,
        col("error")?,
        col("wall_seconds")?,
    );
    // Between `seed` and `status`: the `group` column where there is one, then the grid keys.
    let c_group = csv.header[..c_status]
        .iter()
        .position(|h| h == "group")
        .filter(|&c| c > c_seed);
    let hyper_cols: Vec<usize> = (c_seed + 1..c_status)
        .filter(|&c| Some(c) != c_group)
        .collect();
    let mut runs = Vec::new();
    for (i, (line, f)) in csv.rows.iter().enumerate() {
        // What a sweep writes, and nothing else: a hand-edited row is named, not scored.
        let bad = |c: usize, what: &str| {
            anyhow::anyhow!(
                "{}:{line}: column `{}` is `{}`: {what}",
                csv.path.display(),
                csv.header[c],
                f[c]
            )
        };
        if !["completed", "failed", "interrupted"].contains(&f[c_status].as_str()) {
            return Err(bad(c_status, "not completed, failed or interrupted"));
        }
        if !gradgym_envs::registry::ENV_IDS.contains(&f[c_env].as_str()) {
            return Err(bad(c_env, "not an environment gradgym has"));
        }
        if gradgym_agents::config::Algo::parse(&f[c_algo]).is_err() {
            return Err(bad(c_algo, "not reinforce, a2c or ppo"));
        }
        let seed = f[c_seed].parse::<u64>().map_err(|_| {
            anyhow::anyhow!(
                "{}:{line}: column `seed` is not an integer: `{}`",
                csv.path.display(),
                f[c_seed]
            )
        })?;
        runs.push(RunRecord {
            id: f[c_id].clone(),
            env_id: f[c_env].clone(),
            algo: f[c_algo].clone(),
            seed,
            hyperparameters: hyper_cols
                .iter()
                .map(|&c| (csv.header[c].clone(), f[c].clone()))
                .collect(),
            group: c_group.map(|c| f[c].clone()).unwrap_or_default(),
            status: f[c_status].clone(),
            final_return: csv.number(i, c_final)?,
            eval_return: csv.number(i, c_eval)?,
            wall_seconds: csv.number(i, c_wall)?,
            error: f[c_error].clone(),
            dir: sweep.join("runs").join(&f[c_id]),
        });
    }
    Ok(runs)
}

/// The runs of every sweep folder under `dirs`, pooled. The same run id in two folders is
/// accepted once if both say the same, and is an error otherwise.
pub fn load(dirs: &[PathBuf]) -> Result<ResultSet> {
    let mut set = ResultSet::default();
    let mut by_id: BTreeMap<String, RunRecord> = BTreeMap::new();
    // The shards found of each sharded sweep (by its parsed sweep file): its name, its
    // shard count, the shards given.
    let mut shards: BTreeMap<String, (String, usize, std::collections::BTreeSet<usize>)> =
        BTreeMap::new();
    for dir in dirs {
        let folders = if is_run_folder(dir) {
            vec![dir.clone()]
        } else {
            sweep_folders(dir)?
        };
        for sweep in folders {
            let runs = if is_run_folder(&sweep) {
                vec![read_run_folder(&sweep)?]
            } else {
                let mut runs = read_summary_csv(&sweep)?;
                // In a sweep folder with its runs/, a row no run folder backs (added by hand,
                // or its folder deleted) is named and left out: its scores are the row's word
                // alone. (A summary.csv kept without any runs/ is read on its word.)
                let with_runs = sweep.join("runs").is_dir();
                runs.retain(|run| {
                    let backed = !with_runs || run.dir.is_dir();
                    if !backed {
                        set.warnings.push(format!(
                            "{}: row of run `{}` has no run folder ({}); it is left out",
                            sweep.join("summary.csv").display(),
                            run.id,
                            run.dir.display()
                        ));
                    }
                    backed
                });
                for run in &runs {
                    same_run_as_its_folder(run, &sweep, &mut set.warnings)?;
                }
                let manifest = sweep_manifest(&sweep, &mut set.warnings);
                if let Some((key, name, i, n)) = manifest.as_ref().and_then(shard_of) {
                    shards
                        .entry(key)
                        .or_insert_with(|| (name, n, Default::default()))
                        .2
                        .insert(i);
                }
                if let Some(planned) = manifest.as_ref().and_then(planned_runs) {
                    if runs.len() > planned {
                        set.warnings.push(format!(
                            "{}: {} runs, more than the {planned} its manifest plans (rows added by hand, or runs of another sweep?)",
                            sweep.display(),
                            runs.len()
                        ));
                    }
                    if runs.len() < planned {
                        set.warnings.push(format!(
                            "{} is incomplete: {} of the {planned} planned runs finished (resume it with the same `gradgym sweep` command)",
                            sweep.display(),
                            runs.len()
                        ));
                    }
                }
                runs
            };
            for run in runs {
                if run.status == "interrupted" {
                    let why = if run.error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", run.error)
                    };
                    set.warnings.push(format!(
                        "run {} was interrupted{why}; it is not scored",
                        run.dir.display(),
                    ));
                    continue;
                }
                if let Some(prev) = by_id.get(&run.id) {
                    // Both scores (either may be `--metric`'s), bit for bit.
                    let bits = |r: &RunRecord| {
                        (
                            r.status.clone(),
                            r.final_return.map(f64::to_bits),
                            r.eval_return.map(f64::to_bits),
                        )
                    };
                    if bits(prev) != bits(&run) {
                        bail!(
                            "run {} is in both {} and {} with different results",
                            run.id,
                            prev.dir.display(),
                            run.dir.display()
                        );
                    }
                    continue;
                }
                by_id.insert(run.id.clone(), run);
            }
            set.sweeps.push(sweep);
        }
    }
    for (name, n, given) in shards.into_values() {
        let missing: Vec<String> = (1..=n)
            .filter(|i| !given.contains(i))
            .map(|i| format!("{i}/{n}"))
            .collect();
        if n > 1 && !missing.is_empty() {
            set.warnings.push(format!(
                "sweep {name} is incomplete: shard(s) {} of its {n} are not in the folders given (run them with `gradgym sweep FILE --shard i/{n}`)",
                missing.join(", ")
            ));
        }
    }
    set.runs = by_id.into_values().collect();
    set.runs.sort_by(|a, b| {
        (&a.env_id, algo_rank(&a.label()), a.label(), a.seed).cmp(&(
            &b.env_id,
            algo_rank(&b.label()),
            b.label(),
            b.seed,
        ))
    });
    // One seed twice in a cell: different runs pooled under one label.
    for pair in set.runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if (&a.env_id, a.label(), a.seed) == (&b.env_id, b.label(), b.seed) {
            set.warnings.push(format!(
                "{} {}: seed {} is in two runs ({} and {}), so the cell pools different runs (two [[runs]] groups with this cell and different configs, in a folder written before sweeps labelled such groups, or two folders of different runs); on a sweep's folder, rerunning its `gradgym sweep` labels them, keeping its finished runs",
                a.env_id,
                a.label(),
                a.seed,
                a.id,
                b.id
            ));
        }
    }
    set.warnings.extend(pooled_train_configs(&set, dirs));
    Ok(set)
}

/// The train run folders given directly (not a sweep's) that one cell pools under a bare algo
/// label though their configs differ beyond the seed: said, naming the fields, since a cell of
/// two learning rates reads as one algo's spread.
fn pooled_train_configs(set: &ResultSet, dirs: &[PathBuf]) -> Vec<String> {
    let given: Vec<&RunRecord> = set
        .runs
        .iter()
        .filter(|r| dirs.iter().any(|d| d == &r.dir) && is_run_folder(&r.dir))
        .collect();
    let mut notes = Vec::new();
    let mut cells: BTreeMap<(String, String), Vec<&RunRecord>> = BTreeMap::new();
    for run in given {
        cells
            .entry((run.env_id.clone(), run.label()))
            .or_default()
            .push(run);
    }
    for ((env, label), runs) in cells {
        let configs: Vec<(&RunRecord, BTreeMap<String, String>)> = runs
            .into_iter()
            .filter_map(|r| resolved_config(&r.dir).ok().flatten().map(|c| (r, c)))
            .collect();
        let Some((first, reference)) = configs.first() else {
            continue;
        };
        let mut fields: Vec<String> = Vec::new();
        for (other, config) in &configs[1..] {
            let ignore = |key: &str| key == "torch_threads";
            for (key, a, b) in differing_fields(reference, config, &ignore) {
                fields.push(format!(
                    "{key} {a} in {}, {b} in {}",
                    first.dir.display(),
                    other.dir.display()
                ));
            }
        }
        if !fields.is_empty() {
            let shown = first_three(&fields);
            notes.push(format!(
                "{env} {label}: the run folders pooled in this cell were configured differently ({shown}), so the cell mixes configs; a sweep with a grid keeps them apart"
            ));
        }
    }
    notes
}

/// The fields of two resolved configs ([`resolved_config`]) whose values differ, with both
/// values (`unset` where one lacks the field). Never named: `seed`, and `checkpoint_every`,
/// which does not change what a run computes; nor what `ignore` names.
pub fn differing_fields<'a>(
    a: &'a BTreeMap<String, String>,
    b: &'a BTreeMap<String, String>,
    ignore: &dyn Fn(&str) -> bool,
) -> Vec<(&'a str, &'a str, &'a str)> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| *k != "seed" && *k != "checkpoint_every" && !ignore(k))
        .filter_map(|k| {
            let (x, y) = (a.get(k), b.get(k));
            (x != y).then(|| {
                let value = |v: Option<&'a String>| v.map_or("unset", String::as_str);
                (k.as_str(), value(x), value(y))
            })
        })
        .collect()
}

/// The first three of `items`, joined, with `; …` where more follow.
pub fn first_three(items: &[String]) -> String {
    let n = items.len();
    items[..n.min(3)].join("; ") + if n > 3 { "; …" } else { "" }
}

/// A run folder's `config.toml` resolved over the defaults and flattened to `field → value`
/// (dotted inside tables: `prefs.epsilon`), so a field an older gradgym did not write reads as
/// its default. `Ok(None)` when the folder has no `config.toml` (a `summary.csv` kept alone).
pub fn resolved_config(dir: &Path) -> Result<Option<BTreeMap<String, String>>> {
    fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (key, value) in table {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => flatten(&name, t, out),
                v => {
                    out.insert(name, v.to_string());
                }
            }
        }
    }
    let path = dir.join("config.toml");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let config = gradgym_agents::config::TrainConfig::default()
        .overlay_toml(&text, &path.display().to_string())
        .map_err(anyhow::Error::msg)?;
    let mut fields = BTreeMap::new();
    if let Ok(table) = toml::Table::try_from(&config) {
        flatten("", &table, &mut fields);
    }
    Ok(Some(fields))
}

/// Checks that the folder of a `summary.csv` row is the run the row describes, by its own
/// `summary.json` (where it has one): the same env, algo, seed, status and scores. A folder
/// replaced after the sweep wrote the row (copied in, or `train --overwrite` into it) would
/// otherwise be plotted under the row's label while the statistics read the row.
fn same_run_as_its_folder(row: &RunRecord, sweep: &Path, warnings: &mut Vec<String>) -> Result<()> {
    if !row.dir.join("summary.json").is_file() {
        return Ok(());
    }
    // A summary.json that cannot be read (cut, say) leaves the row unchecked, as a cut
    // metrics.csv leaves a curve out: said, not fatal to the whole report.
    let own = match read_run_folder(&row.dir) {
        Ok(own) => own,
        Err(e) => {
            warnings.push(format!(
                "{e:#}; whether the folder is the run summary.csv's row describes is not checked"
            ));
            return Ok(());
        }
    };
    let show = |r: &RunRecord| {
        let score = |x: Option<f64>| x.map_or("none".to_string(), |x| x.to_string());
        format!(
            "{} {} seed {}, {}, final return {}, eval return {}",
            r.env_id,
            r.algo,
            r.seed,
            r.status,
            score(r.final_return),
            score(r.eval_return)
        )
    };
    if (
        &own.env_id,
        &own.algo,
        own.seed,
        &own.status,
        own.final_return,
        own.eval_return,
    ) != (
        &row.env_id,
        &row.algo,
        row.seed,
        &row.status,
        row.final_return,
        row.eval_return,
    ) {
        bail!(
            "{}: says {}, but {}'s row for {} says {}: the folder is not the run summary.csv \
             describes (replaced after the sweep wrote it?); restore it, or delete it and resume \
             the sweep",
            row.dir.join("summary.json").display(),
            show(&own),
            sweep.join("summary.csv").display(),
            row.id,
            show(row)
        );
    }
    Ok(())
}

/// A run folder of `gradgym train`: a summary.json and a metrics.csv, no summary.csv.
fn is_run_folder(dir: &Path) -> bool {
    dir.join("summary.json").is_file()
        && dir.join("metrics.csv").is_file()
        && !dir.join("summary.csv").is_file()
}

/// A sweep folder's manifest.json, where it has one; one that cannot be read or parsed is
/// a warning in `warnings` (what it would have said, such as the runs it planned, is not
/// checked).
fn sweep_manifest(sweep: &Path, warnings: &mut Vec<String>) -> Option<serde_json::Value> {
    let path = sweep.join("manifest.json");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "{}: missing; whether the sweep is complete is not checked",
                path.display()
            ));
            return None;
        }
        Err(e) => {
            warnings.push(format!(
                "{}: cannot be read ({e}); whether the sweep is complete is not checked",
                path.display()
            ));
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!(
                "{}: not valid JSON ({e}); whether the sweep is complete is not checked",
                path.display()
            ));
            None
        }
    }
}

/// Which shard of which sweep a sweep folder holds, from its manifest: (its sweep file as
/// parsed, the sweep's name, i, n) of shard i/n.
fn shard_of(manifest: &serde_json::Value) -> Option<(String, String, usize, usize)> {
    let (i, n) = manifest.get("shard")?.as_str()?.split_once('/')?;
    // The runs' plan: a `[slurm]` table edited between submissions changes none of it.
    let mut sweep = manifest.get("sweep")?.clone();
    if let Some(t) = sweep.as_object_mut() {
        t.remove("slurm");
    }
    Some((
        sweep.to_string(),
        manifest.get("name")?.as_str()?.to_string(),
        i.parse().ok()?,
        n.parse().ok()?,
    ))
}

/// The runs a sweep folder's manifest planned (`runs_in_shard`), if it says.
fn planned_runs(manifest: &serde_json::Value) -> Option<usize> {
    manifest.get("runs_in_shard")?.as_u64().map(|n| n as usize)
}

/// One `gradgym train` run folder as a run record (its id is the folder's name).
fn read_run_folder(dir: &Path) -> Result<RunRecord> {
    let path = dir.join("summary.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let s: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let string = |k: &str| -> Result<String> {
        s.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("{}: field `{k}` is missing or not a string", path.display()))
    };
    let number = |k: &str| -> Result<Option<f64>> {
        match s.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => bail!(
                    "{}: field `{k}` is not a finite number: {v}",
                    path.display()
                ),
            },
        }
    };
    let seed = s.get("seed").and_then(|v| v.as_u64()).with_context(|| {
        format!(
            "{}: field `seed` is missing or not an integer",
            path.display()
        )
    })?;
    Ok(RunRecord {
        id: dir
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned()),
        env_id: string("env_id")?,
        algo: string("algo")?,
        seed,
        hyperparameters: BTreeMap::new(),
        group: String::new(),
        status: string("status")?,
        final_return: number("final_return_mean_last100")?,
        eval_return: number("eval_return_mean")?,
        wall_seconds: number("wall_seconds")?,
        error: s
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        dir: dir.to_path_buf(),
    })
}

/// Reads every completed run's learning curve; a run whose metrics.csv cannot be read (a
/// truncated file, a NaN) gives a warning naming the file, line and column.
pub fn check_curves(set: &ResultSet) -> Vec<String> {
    let mut warnings = missing_runs_folders(set);
    for run in set.runs.iter().filter(|r| r.completed()) {
        if !without_runs_folder(run) {
            if let Err(e) = learning_curve(run) {
                warnings.push(format!("{e:#}"));
            }
        }
    }
    warnings
}

/// Whether `run` is a row of a sweep folder kept without its `runs/` (a summary.csv read on
/// its word): its folder `…/runs/<id>` lies in a `runs` folder that does not exist.
pub fn without_runs_folder(run: &RunRecord) -> bool {
    run.dir
        .parent()
        .is_some_and(|runs| runs.file_name().is_some_and(|n| n == "runs") && !runs.exists())
}

/// One warning per sweep folder kept without its `runs/`, not one per run.
pub fn missing_runs_folders(set: &ResultSet) -> Vec<String> {
    let mut counts: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for run in set
        .runs
        .iter()
        .filter(|r| r.completed() && without_runs_folder(r))
    {
        if let Some(runs) = run.dir.parent() {
            *counts.entry(runs.to_path_buf()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(runs, n)| {
            format!(
                "{} does not exist: the {n} completed run(s) its summary.csv lists are scored on its word, and have no learning curves",
                runs.display()
            )
        })
        .collect()
}

/// A learning curve: (global_step, episodic_return) of the iterations that finished episodes.
/// A file with no rows, or whose last row is short of the iterations the run's `summary.json`
/// says it completed (a file cut at a row boundary), is an error naming it.
pub fn learning_curve(run: &RunRecord) -> Result<Vec<(f64, f64)>> {
    let path = run.dir.join("metrics.csv");
    let csv = Csv::read(&path)?;
    csv.ensure_rows()?;
    let iterations = fs::read_to_string(run.dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|s| s["status"] == "completed")
        .and_then(|s| s["iterations"].as_f64());
    if let (Some(want), Ok(c_it)) = (iterations, csv.column("iteration")) {
        let last = csv.number(csv.rows.len() - 1, c_it)?.unwrap_or(f64::NAN);
        if last != want {
            bail!(
                "{}: the last row is iteration {last}, but the run's summary.json says it completed {want} (truncated?)",
                path.display()
            );
        }
    }
    let (c_step, c_ret) = (csv.column("global_step")?, csv.column("episodic_return")?);
    let mut points = Vec::with_capacity(csv.rows.len());
    for i in 0..csv.rows.len() {
        if let (Some(s), Some(r)) = (csv.number(i, c_step)?, csv.number(i, c_ret)?) {
            points.push((s, r));
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_rows_are_named_by_line() {
        let e = Csv::parse("a,b,c\n1,2,3\n4,5\n", Path::new("m.csv"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("m.csv:3") && e.contains("expected 3 fields, found 2"),
            "{e}"
        );
        let e = Csv::parse("a,b\n1,2\n3,4", Path::new("m.csv"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no line end"), "{e}");
        let c = Csv::parse("a,b\n1,x\n", Path::new("m.csv")).unwrap();
        let e = c.number(0, 1).unwrap_err().to_string();
        assert!(e.contains("m.csv:2") && e.contains("`b`"), "{e}");
    }

    #[test]
    fn labels_carry_grid_values() {
        let mut r = RunRecord {
            id: "x".into(),
            env_id: "CartPole-v1".into(),
            algo: "ppo".into(),
            seed: 1,
            hyperparameters: BTreeMap::new(),
            group: String::new(),
            status: "completed".into(),
            final_return: Some(1.0),
            eval_return: None,
            wall_seconds: None,
            error: String::new(),
            dir: PathBuf::new(),
        };
        assert_eq!(r.label(), "ppo");
        r.hyperparameters
            .insert("learning_rate".into(), "0.001".into());
        r.hyperparameters.insert("gamma".into(), String::new());
        assert_eq!(r.label(), "ppo[learning_rate=0.001]");
        r.group = "2".into();
        assert_eq!(r.label(), "ppo[group=2,learning_rate=0.001]");
    }
}
