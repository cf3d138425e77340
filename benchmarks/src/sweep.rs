//! `gradgym sweep`: a grid of runs (envs × algos × hyperparameter values × seeds) trained in
//! parallel into one self-describing results folder that survives interruption.
//!
//! The sweep file:
//!
//! ```toml
//! name = "classic-control"        # optional, default: the file's stem
//! seeds = [1, 2, 3, 4, 5]
//! config = { }                    # optional: keys applied to every run
//!
//! [[runs]]                        # one or more groups; each is a product
//! envs = ["CartPole-v1", "Acrobot-v1"]
//! algos = ["ppo", "a2c"]
//! config = { total_timesteps = 100000 }          # optional, this group only
//! grid = { learning_rate = [2.5e-4, 1e-3] }      # optional: one run per combination
//! ```
//!
//! Each run's config is resolved like `gradgym train`'s: defaults → the shipped config for
//! (env, algo) → the sweep's `config` → the group's `config` → the grid point → the seed
//! (and `--device`). Runs are ordered group by group, then env, algo, grid point (keys sorted,
//! values as listed), seed; `--shard i/n` keeps the runs whose position k (from 0) has
//! `k mod n = i − 1`.
//!
//! The folder:
//! - `manifest.json`: the sweep file (parsed), shard, git revision, versions, device, cores,
//!   jobs, start and end time, and how many sessions it took;
//! - `runs/<run-id>/`: `config.toml` (the full resolved config; `gradgym train --config` on it
//!   repeats the run), `manifest.json`, `metrics.csv`, `summary.json`;
//! - `summary.csv`: one row per finished run, in grid order.
//!
//! Never losing work: a run trains in `runs/<run-id>.partial/` and becomes `runs/<run-id>/` by
//! one rename once all its files are on disk, so a folder named after a run is always complete.
//! Re-running the same command skips finished runs (after checking that their `config.toml` is
//! the one the sweep file resolves to now) and redoes unfinished ones from scratch; every run is
//! a function of its config and seed, so an interrupted sweep resumes to the same results as an
//! uninterrupted one. A run that fails (NaN loss, libtorch panic) is finished too: its
//! `summary.json` says `failed` with the error, and the sweep goes on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use gradgym_agents::config::{Algo, TrainConfig};
use gradgym_agents::run_folder::{Existing, write_atomic};
use gradgym_agents::train::{Progress, Summary, train_with};
use serde::{Deserialize, Serialize};

use crate::configs::{self, Layer};

/// A sweep file, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub config: toml::Table,
    pub runs: Vec<Group>,
    /// Resources of `--emit-slurm` scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSpec>,
    /// The file's text, for the lines that errors name.
    #[serde(skip)]
    text: String,
}

/// One `[[runs]]` block: every env × algo × grid point.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group's own label in reports (`ppo[group=<name>]`); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub envs: Vec<String>,
    pub algos: Vec<String>,
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<toml::Value>>,
}

/// One run of the grid, resolved.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Position in the whole grid (before sharding).
    pub index: usize,
    pub id: String,
    pub config: TrainConfig,
    /// The grid values of this run, as TOML literals.
    pub hyperparameters: BTreeMap<String, String>,
    /// The `group` column of `summary.csv`: the `[[runs]]` group's `name`, or its number
    /// where the group repeats another's cells with another config; empty otherwise.
    pub group: String,
    /// `config.toml` as written into the run's folder.
    pub config_toml: String,
}

/// A slice `i/n` of the grid (1 ≤ i ≤ n).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    pub fn parse(text: &str) -> Result<Self> {
        let parsed = text.split_once('/').and_then(|(i, n)| {
            Some(Shard {
                index: i.trim().parse().ok()?,
                count: n.trim().parse().ok()?,
            })
        });
        match parsed {
            Some(s) if s.count >= 1 && (1..=s.count).contains(&s.index) => Ok(s),
            _ => bail!("--shard must be i/n with 1 ≤ i ≤ n (got `{text}`)"),
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index - 1
    }
}

impl SweepSpec {
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut spec: SweepSpec =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        spec.text = text.to_string();
        if spec.seeds.is_empty() {
            bail!("{source}: `seeds` is empty; give at least one seed");
        }
        // The name is the folder `out/sweeps/<name>`: one folder name, not a path of its own
        // (`../x`, `/tmp/x` and `""` wrote outside `out/sweeps/`, or into it).
        if let Some(name) = &spec.name
            && (name.is_empty()
                || name == "."
                || name == ".."
                || name
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c.is_control()))
        {
            bail!(
                "{source}: `name` = {name:?}: give a folder name, without `/`, `\\` or control characters, and not `.` or `..` (it names the folder out/sweeps/<name>)"
            );
        }
        // Each run's config is TOML, whose integers are signed 64-bit.
        if let Some(seed) = spec.seeds.iter().find(|&&s| s > i64::MAX as u64) {
            bail!(
                "{source}: `seeds`: {seed} is past what a TOML config holds (at most {})",
                i64::MAX
            );
        }
        if spec.runs.is_empty() {
            bail!("{source}: no [[runs]] group; give at least one");
        }
        Ok(spec)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Every run of the grid, resolved and validated, in grid order. `device` (from
    /// `--device`) overrides the device of every run.
    pub fn plan(&self, source: &str, device: Option<&str>) -> Result<Vec<PlannedRun>> {
        for key in ["env_id", "algo", "seed"] {
            if self.config.contains_key(key) {
                bail!("{source}: `{key}` cannot be set in `config`; the grid decides it");
            }
        }
        let table_text = |t: &toml::Table| toml::to_string(t).expect("a TOML table serialises");
        // Where each key of a `config` or `grid` table is written, for errors to name the line.
        let lines = |path: &[&str]| configs::key_lines(&self.text, source, path);
        let top_lines = lines(&["config"]);
        let mut runs = Vec::new();
        // Run id → (position, group) of every run that has it.
        let mut seen: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        // The group of each run, by position.
        let mut group_of: Vec<usize> = Vec::new();
        // (group, algo, grid point) of the groups that repeat an earlier group's cell (env,
        // algo, grid point) with another config.
        let mut repeating: BTreeSet<(usize, String)> = BTreeSet::new();
        let cell =
            |run: &PlannedRun| format!("{} {:?}", run.config.algo.name(), run.hyperparameters);
        for (g, group) in self.runs.iter().enumerate() {
            let where_ = format!("{source} [[runs]] #{}", g + 1);
            if group.envs.is_empty() || group.algos.is_empty() {
                bail!("{where_}: `envs` and `algos` need at least one entry each");
            }
            for key in ["env_id", "algo", "seed"] {
                if group.config.contains_key(key) || group.grid.contains_key(key) {
                    bail!(
                        "{where_}: `{key}` cannot be set in `config` or `grid`; use envs/algos/seeds"
                    );
                }
            }
            for (key, values) in &group.grid {
                if values.is_empty() {
                    bail!("{where_}: grid key `{key}` has no values");
                }
            }
            if let Some(name) = &group.name {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    bail!(
                        "{where_}: `name` = {name:?}: give letters, digits, `.`, `_` or `-` (it labels the group's runs in reports)"
                    );
                }
                // A number is the label of an unnamed group that repeats another's cells.
                if name.bytes().all(|b| b.is_ascii_digit()) {
                    bail!(
                        "{where_}: `name` = {name:?}: a number labels an unnamed group in reports; give a name with a letter in it"
                    );
                }
                if let Some(h) = self.runs[..g]
                    .iter()
                    .position(|o| o.name.as_deref() == Some(name))
                {
                    bail!(
                        "{where_}: `name` = {name:?} is also [[runs]] #{}'s; each group's name is its own",
                        h + 1
                    );
                }
            }
            let points = grid_points(&group.grid);
            let g_text = g.to_string();
            let (config_lines, grid_lines) = (
                lines(&["runs", &g_text, "config"]),
                lines(&["runs", &g_text, "grid"]),
            );
            for env in &group.envs {
                gradgym_envs::spec(env).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
                for algo_name in &group.algos {
                    let algo =
                        Algo::parse(algo_name).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
                    for point in &points {
                        for &seed in &self.seeds {
                            let mut layers = Vec::new();
                            if !self.config.is_empty() {
                                layers.push(
                                    Layer::new(
                                        format!("{source} config"),
                                        table_text(&self.config),
                                    )
                                    .with_lines(top_lines.clone()),
                                );
                            }
                            if !group.config.is_empty() {
                                layers.push(
                                    Layer::new(
                                        format!("{where_} config"),
                                        table_text(&group.config),
                                    )
                                    .with_lines(config_lines.clone()),
                                );
                            }
                            let point_lines: Vec<String> =
                                point.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                            let mut last = point_lines.clone();
                            last.push(format!("seed = {seed}"));
                            if let Some(d) = device {
                                last.push(format!("device = {d:?}"));
                            }
                            layers.push(
                                Layer::new(format!("{where_} grid"), last.join("\n"))
                                    .with_lines(grid_lines.clone()),
                            );
                            let (config, _) =
                                configs::resolve(env, algo, &layers).with_context(|| {
                                    format!("{where_}: {env} {algo_name} seed {seed}")
                                })?;
                            let id = run_id(env, algo, point, seed);
                            // A folder name holds 255 bytes, and the run's folder takes
                            // suffixes (`.partial`, `.replaced-2`, a group's `__g2`): found
                            // here, before anything is written, not when the run starts.
                            if id.len() > MOST_ID_BYTES {
                                let cut = (0..=60)
                                    .rev()
                                    .find(|&i| id.is_char_boundary(i))
                                    .unwrap_or(0);
                                bail!(
                                    "{where_}: run `{}…` would be named by {} bytes, more than a run folder's name may hold ({MOST_ID_BYTES}): its grid keys and values make the name (a float is written out in full); move settings that do not vary into `config`",
                                    &id[..cut],
                                    id.len()
                                );
                            }
                            seen.entry(id.clone()).or_default().push((runs.len(), g));
                            group_of.push(g);
                            let config_toml = config
                                .echo_toml()
                                .context("cannot write the config as TOML")?;
                            runs.push(PlannedRun {
                                index: runs.len(),
                                id,
                                config,
                                hyperparameters: point.iter().cloned().collect(),
                                group: String::new(),
                                config_toml,
                            });
                        }
                    }
                }
            }
        }
        // Groups that differ only in their `config` give runs of one name: those get the
        // group's number in their id (`…__g2__seed1`). The same run twice is an error.
        for (id, places) in seen.into_iter().filter(|(_, p)| p.len() > 1) {
            let groups: BTreeSet<usize> = places.iter().map(|&(_, g)| g).collect();
            if groups.len() < places.len() {
                let (first, g) = places[0];
                bail!(
                    "{source} [[runs]] #{}: run `{id}` appears twice in the grid (first as run {})",
                    g + 1,
                    first + 1
                );
            }
            let configs: BTreeSet<&str> = places
                .iter()
                .map(|&(k, _)| runs[k].config_toml.as_str())
                .collect();
            if configs.len() < places.len() {
                bail!(
                    "{source}: run `{id}` appears in [[runs]] groups {} with the same config",
                    groups
                        .iter()
                        .map(|g| format!("#{}", g + 1))
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
            }
            let first = places.iter().map(|&(_, g)| g).min().expect("a place");
            for (k, g) in places {
                let seed = runs[k].config.seed;
                let cut = id.len() - format!("__seed{seed}").len();
                runs[k].id = format!("{}__g{}__seed{seed}", &id[..cut], g + 1);
                if g != first {
                    repeating.insert((g, cell(&runs[k])));
                }
            }
        }
        // Reports compare cells by label (algo and grid point). Where a later group repeats
        // an earlier group's cell with another config, the later group's (algo, grid point)
        // is labelled by the group's number on every env the group covers (its ids say
        // `__g<k>` only where they collide), so that its runs are never pooled with the
        // earlier group's and take one label across envs; the earlier group keeps its plain
        // label, so adding a group leaves the labels of the others as they were. A named
        // group is always labelled by its name.
        for (k, &g) in group_of.iter().enumerate() {
            let repeats = repeating.contains(&(g, cell(&runs[k])));
            runs[k].group = match &self.runs[g].name {
                Some(name) => name.clone(),
                None if repeats => (g + 1).to_string(),
                None => String::new(),
            };
        }
        Ok(runs)
    }

    /// The grid keys used anywhere in the sweep, sorted (the hyperparameter columns of
    /// `summary.csv`).
    pub fn grid_keys(&self) -> Vec<String> {
        let keys: BTreeSet<&String> = self.runs.iter().flat_map(|g| g.grid.keys()).collect();
        keys.into_iter().cloned().collect()
    }

    pub fn display_name(&self, path: &Path) -> String {
        self.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sweep".into())
        })
    }
}

/// The cartesian product of a grid, keys in sorted order, values as listed, each value as a
/// TOML literal. An empty grid has one point (no keys).
fn grid_points(grid: &BTreeMap<String, Vec<toml::Value>>) -> Vec<Vec<(String, String)>> {
    let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in grid {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.to_string()));
                    q
                })
            })
            .collect();
    }
    points
}

/// `<env>__<algo>[__<key>=<value>…]__seed<seed>`, with characters outside `[A-Za-z0-9._=-]`
/// replaced by `_`.
pub fn run_id(env: &str, algo: Algo, point: &[(String, String)], seed: u64) -> String {
    let mut id = format!("{env}__{}", algo.name());
    for (k, v) in point {
        // A string value without its quotes: `prefs.query=random`.
        id.push_str(&format!("__{k}={}", v.trim_matches('"')));
    }
    id.push_str(&format!("__seed{seed}"));
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Options of one `gradgym sweep` invocation.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub jobs: usize,
    pub device: Option<String>,
    pub shard: Shard,
    pub out: PathBuf,
    /// Never draw progress bars (plain lines instead).
    pub quiet: bool,
    /// Rerun the runs that a previous session finished as `failed`.
    pub retry_failed: bool,
}

/// What a sweep invocation did.
#[derive(Clone, Debug, Default)]
pub struct SweepOutcome {
    pub planned: usize,
    pub skipped: usize,
    pub completed: usize,
    /// Runs that failed in this invocation.
    pub failed: usize,
    /// Finished runs of earlier sessions, skipped now, whose status is `failed`.
    pub failed_earlier: usize,
}

impl SweepOutcome {
    /// Failed runs in the folder (this session's and earlier ones'): what the exit code
    /// reports, so a rerun never hides a failure.
    pub fn failed_in_folder(&self) -> usize {
        self.failed + self.failed_earlier
    }
}

/// The columns of `summary.csv` before the hyperparameter columns.
pub const SUMMARY_HEAD: [&str; 4] = ["run_id", "env_id", "algo", "seed"];
/// The columns of `summary.csv` after the hyperparameter columns; timing last.
pub const SUMMARY_TAIL: [&str; 8] = [
    "status",
    "final_return_mean_last100",
    "eval_return_mean",
    "episodes",
    "total_timesteps",
    "iterations",
    "error",
    "wall_seconds",
];

#[derive(Serialize, Deserialize, Clone, Debug)]
struct SweepManifest {
    name: String,
    sweep_file: String,
    sweep: serde_json::Value,
    shard: String,
    runs_in_grid: usize,
    runs_in_shard: usize,
    git_revision: String,
    /// Every revision a session of this sweep ran, in the order first used (`git_revision`
    /// is the last session's); each run's own manifest names the one that made it.
    #[serde(default)]
    git_revisions: Vec<String>,
    gradgym_version: String,
    libtorch_version: String,
    tch_version: String,
    device: String,
    cuda_available: bool,
    cores: usize,
    jobs: usize,
    started: String,
    finished: Option<String>,
    sessions: usize,
}

/// The revisions of a sweep's sessions, in the order first used, with this session's last
/// (a manifest written before `git_revisions` existed gives its `git_revision`).
fn revisions_so_far(previous: Option<&SweepManifest>, now: &str) -> Vec<String> {
    let mut all: Vec<String> = match previous {
        None => Vec::new(),
        Some(m) if m.git_revisions.is_empty() => vec![m.git_revision.clone()],
        Some(m) => m.git_revisions.clone(),
    };
    if !all.iter().any(|r| r == now) {
        all.push(now.to_string());
    }
    all
}

/// SIGINT and SIGTERM, less any this process was started with ignored. A shell starts a
/// background job (`gradgym sweep … &` in a script) with SIGINT ignored so that Ctrl-C at the
/// terminal does not reach it; a handler would undo that, and only once installed (a SIGINT
/// in the first half second was ignored, a later one stopped the run). Such a run is stopped
/// by SIGTERM.
pub fn handled_signals() -> Vec<libc::c_int> {
    [libc::SIGINT, libc::SIGTERM]
        .into_iter()
        .filter(|&signal| {
            // SAFETY: a null new action only reads the signal's disposition into `old`.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } == 0;
            !(read && old.sa_sigaction == libc::SIG_IGN)
        })
        .collect()
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// The summary of a finished run folder.
fn read_summary(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("summary.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The first field in which a finished run's `config.toml` differs from the config `run`
/// plans, said as `field `total_timesteps`: 4096 there, 60000 now`; `None` where the file does
/// not parse or no top-level field differs.
fn config_difference(existing: &str, run: &PlannedRun) -> Option<String> {
    let old: toml::Table = existing.parse().ok()?;
    let planned: toml::Table = run.config_toml.parse().ok()?;
    let defaults = toml::Table::try_from(TrainConfig::default()).ok()?;
    let keys: BTreeSet<&String> = old.keys().chain(planned.keys()).collect();
    keys.into_iter().find_map(|k| {
        if lacks_at_old_default(&old, k, planned.get(k), &defaults) {
            return None;
        }
        let show = |v: Option<&toml::Value>| v.map_or("absent".to_string(), |v| v.to_string());
        (old.get(k) != planned.get(k)).then(|| {
            format!(
                "field `{k}`: {} there, {} now",
                show(old.get(k)),
                show(planned.get(k))
            )
        })
    })
}

/// Checks that a run whose `summary.json` says `completed` holds what a completed run writes:
/// its `manifest.json`, and a `metrics.csv` that parses whole and ends at the iteration the
/// summary gives. A folder that lost one, or whose metrics were cut, is not skipped as done.
fn completed_run_files(dir: &Path, summary: &serde_json::Value) -> Result<()> {
    let incomplete = |what: String| -> anyhow::Error {
        anyhow::anyhow!("{what}: the run folder is incomplete; delete it to redo the run")
    };
    let manifest = dir.join("manifest.json");
    if !manifest.is_file() {
        return Err(incomplete(format!("{}: missing", manifest.display())));
    }
    let path = dir.join("metrics.csv");
    if !path.is_file() {
        return Err(incomplete(format!("{}: missing", path.display())));
    }
    let csv = crate::results::Csv::read(&path).map_err(|e| incomplete(format!("{e:#}")))?;
    if let Some(want) = summary.get("iterations").and_then(|i| i.as_f64()) {
        let last = match csv.rows.len() {
            0 => None,
            n => csv
                .column("iteration")
                .ok()
                .and_then(|c| csv.number(n - 1, c).ok().flatten()),
        };
        if last != Some(want) {
            return Err(incomplete(format!(
                "{}: ends at iteration {}, but summary.json says the run completed {want}",
                path.display(),
                last.map_or("none".to_string(), |l| l.to_string())
            )));
        }
    }
    Ok(())
}

/// Config fields added after runs were committed whose defaults train as the binaries before
/// them did (no KL penalty against a reference, no checkpoints). `backend`, for one, is not:
/// its default `auto` trains classic runs natively, and before it existed they ran on libtorch.
const FIELDS_ADDED_WITH_OLD_BEHAVIOUR: [&str; 2] = ["ref_kl_coef", "checkpoint_every"];

/// Whether `old` (a finished run's `config.toml`) lacks `key` only because it was written
/// before the field existed: a field of [`FIELDS_ADDED_WITH_OLD_BEHAVIOUR`] that the plan
/// gives (`planned`) at its default, which trains as those versions did.
fn lacks_at_old_default(
    old: &toml::Table,
    key: &str,
    planned: Option<&toml::Value>,
    defaults: &toml::Table,
) -> bool {
    !old.contains_key(key)
        && FIELDS_ADDED_WITH_OLD_BEHAVIOUR.contains(&key)
        && planned.is_some()
        && defaults.get(key) == planned
}

/// Whether a finished run's `config.toml` is the config `run` plans. The same text, or the
/// same config once read, where the file lacks only fields of
/// [`FIELDS_ADDED_WITH_OLD_BEHAVIOUR`] and the plan gives them their defaults: a file written
/// before those fields existed. A missing, empty or cut file is never the same config.
fn same_config(existing: &str, run: &PlannedRun) -> bool {
    if existing == run.config_toml {
        return true;
    }
    let (Ok(old), Ok(planned), Ok(defaults)) = (
        existing.parse::<toml::Table>(),
        toml::Table::try_from(&run.config),
        toml::Table::try_from(TrainConfig::default()),
    ) else {
        return false;
    };
    let lacks_only_added_defaults = planned.iter().all(|(key, value)| {
        old.contains_key(key) || lacks_at_old_default(&old, key, Some(value), &defaults)
    });
    lacks_only_added_defaults
        && TrainConfig::default()
            .overlay_toml(existing, "config.toml")
            .is_ok_and(|c| c == run.config)
}

/// The columns of `summary.csv` between `seed` and `status`, the same for every shard.
struct SummaryColumns {
    /// A `group` column, where some run of the whole grid has a group label.
    group: bool,
    /// The grid keys, sorted.
    grid_keys: Vec<String>,
}

/// `summary.csv` from the finished runs among `runs`, in grid order.
fn write_summary_csv(out: &Path, runs: &[PlannedRun], columns: &SummaryColumns) -> Result<()> {
    let mut header: Vec<String> = SUMMARY_HEAD.iter().map(|s| s.to_string()).collect();
    if columns.group {
        header.push("group".into());
    }
    header.extend(columns.grid_keys.iter().cloned());
    // A grid over `total_timesteps` gives the budget asked for its own column; the tail's,
    // the steps the run took (whole rollouts), is then `total_timesteps_run`, so that no two
    // columns share a name (pandas renames the second, csv.DictReader keeps only one).
    header.extend(SUMMARY_TAIL.iter().map(|s| {
        if columns.grid_keys.iter().any(|k| k == s) {
            format!("{s}_run")
        } else {
            s.to_string()
        }
    }));
    let mut text = header.join(",") + "\n";
    for run in runs {
        let dir = out.join("runs").join(&run.id);
        if !dir.is_dir() {
            continue;
        }
        let s = read_summary(&dir)?;
        let num = |k: &str| s.get(k).and_then(|v| v.as_f64());
        let int = |k: &str| s.get(k).and_then(|v| v.as_u64()).map(|v| v.to_string());
        let mut row = vec![
            run.id.clone(),
            run.config.env_id.clone(),
            run.config.algo.name().to_string(),
            run.config.seed.to_string(),
        ];
        if columns.group {
            row.push(run.group.clone());
        }
        for key in &columns.grid_keys {
            row.push(run.hyperparameters.get(key).cloned().unwrap_or_default());
        }
        row.push(
            s.get("status")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_string(),
        );
        row.push(fmt_opt(num("final_return_mean_last100")));
        row.push(fmt_opt(num("eval_return_mean")));
        row.push(int("episodes").unwrap_or_default());
        row.push(int("total_timesteps").unwrap_or_default());
        row.push(int("iterations").unwrap_or_default());
        row.push(
            s.get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        );
        row.push(num("wall_seconds").map_or(String::new(), |w| format!("{w:.3}")));
        let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        text.push_str(&row.join(","));
        text.push('\n');
    }
    write_atomic(&out.join("summary.csv"), text.as_bytes())
}

/// A lock on the results folder, so two sweeps never write into the same one, also from
/// different hosts (Slurm tasks on several nodes sharing a file system). The file holds
/// `host pid start-ticks`; its owner touches it every [`HEARTBEAT`] while it runs. A lock is
/// live when, on this host, its pid is a running process that started at the recorded tick
/// (so not a later process given a dead sweep's pid), or, from another host, when it was
/// touched less than [`STALE`] ago; a dead or silent one (a killed sweep) is taken over.
struct FolderLock {
    path: PathBuf,
    /// The folder, flock-ed while the sweep runs (`None` where the file system has no flock).
    _held: Option<fs::File>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// What this sweep wrote into the lock file, to remove only its own.
    contents: String,
    /// SIGINT and SIGTERM while the lock is held: the lock file goes, the sweep says how to
    /// resume and exits 130. Its runs in flight stay in their `.partial` folders, which a
    /// resumed sweep redoes; finished runs and summary.csv (written atomically) are kept.
    signals: Option<(signal_hook::iterator::Handle, std::thread::JoinHandle<()>)>,
}

const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);
const STALE: std::time::Duration = std::time::Duration::from_secs(120);
/// When this host's process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` where no such process runs. A lock records its owner's, so a
/// later process given the same pid (after a crash or a reboot) is told from the owner exactly,
/// with no clock compared.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `host, pid <pid>` of a sweep lock's text, for a message (empty where it names none).
fn lock_owner(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(", pid ")
}

/// An error naming the owner where the sweep lock at `path`, read as `text`, belongs to a
/// sweep that is live; nothing where it has ended (or was gone by the time it was read), its
/// folder free to take. `me` is this process's (host, pid).
fn refuse_if_live(out: &Path, path: &Path, text: &str, me: &(String, u32)) -> Result<()> {
    if text.is_empty() && !path.exists() {
        return Ok(());
    }
    let mut parts = text.split_whitespace();
    let (host, pid, started) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), started) => (
            h.to_string(),
            p.parse::<u32>().ok(),
            started.and_then(|t| t.parse::<u64>().ok()),
        ),
        // A lock of an older gradgym: a bare pid on this host.
        (Some(p), None, _) => (me.0.clone(), p.parse::<u32>().ok(), None),
        _ => (String::new(), None, None),
    };
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    let live = match pid {
        // This host's: its process must still run and, where the lock records when it
        // started (gradgym since stop 40), be that process and not a later one given the same
        // pid. A sweep paused for any time (Ctrl-Z, a suspended job) keeps it.
        Some(pid) if host == me.0 => {
            pid != me.1
                && match (process_start_ticks(pid), started) {
                    (Some(now), Some(then)) => now == then,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
        }
        // Another host's, or one that names no owner (empty or garbled: an older gradgym
        // wrote its lock in two steps): live while it is younger than the heartbeat limit.
        _ => age < STALE,
    };
    if live {
        bail!(
            "{} is in use by another gradgym sweep ({}); wait for it or stop it (a lock is taken \
             over once its process has ended, or, from another host or naming no owner, after \
             {} s without a heartbeat)",
            out.display(),
            match pid {
                Some(pid) => format!("host {host}, pid {pid}"),
                None => format!("a lock naming no owner, {} s old", age.as_secs()),
            },
            STALE.as_secs()
        );
    }
    Ok(())
}

impl FolderLock {
    fn take(out: &Path) -> Result<Self> {
        let path = out.join(".sweep.lock");
        let me = (hostname(), std::process::id());
        let ticks = process_start_ticks(me.1);
        let mine = match ticks {
            Some(ticks) => format!("{} {} {ticks}\n", me.0, me.1),
            None => format!("{} {}\n", me.0, me.1),
        };
        // Two layers. On this host (and across hosts where the file system carries flock, as
        // NFSv4 does) the folder itself is flock-ed for the sweep's life: of any number of
        // sweeps started at once only one gets it, and the kernel lets go of it when its
        // process ends, however it ends. The lock file is the record for everything else (an
        // older gradgym, other hosts): judged as before, and replaced whole by a rename, never
        // removed and remade, so it is never absent or half written while a sweep holds it.
        let folder =
            fs::File::open(out).with_context(|| format!("cannot open {}", out.display()))?;
        let held = match gradgym_agents::run_folder::flock_exclusive(&folder) {
            Ok(true) => Some(folder),
            // A file system without flock: the lock file alone decides.
            Err(_) => None,
            Ok(false) => {
                let owner = lock_owner(&fs::read_to_string(&path).unwrap_or_default());
                bail!(
                    "{} is in use by another gradgym sweep{}; wait for it or stop it",
                    out.display(),
                    if owner.is_empty() {
                        String::new()
                    } else {
                        format!(" (host {owner})")
                    }
                );
            }
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        refuse_if_live(out, &path, &text, &me)?;
        let mine_path = out.join(format!(
            ".sweep.lock.{}.{}.{}",
            me.0,
            me.1,
            ticks.unwrap_or_default()
        ));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = fs::File::options()
                .write(true)
                .create_new(true)
                .open(&mine_path)?;
            f.write_all(mine.as_bytes())?;
            f.sync_all()?;
            fs::rename(&mine_path, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&mine_path);
            return Err(e).context(format!("cannot write {}", path.display()));
        }
        // A sweep on another host without a shared flock that replaced it in the same instant.
        let now = fs::read_to_string(&path).unwrap_or_default();
        if now != mine {
            bail!(
                "{} was taken by another gradgym sweep ({}) in the instant this one took it; wait \
                 for it or stop it",
                out.display(),
                lock_owner(&now)
            );
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut waited = std::time::Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    waited += std::time::Duration::from_millis(200);
                    if waited >= HEARTBEAT {
                        waited = std::time::Duration::ZERO;
                        if let Ok(f) = fs::File::options().append(true).open(&path) {
                            let _ = f.set_modified(SystemTime::now());
                        }
                    }
                }
            })
        };
        let signals = {
            // Not one the process was started with ignored (a background job's SIGINT).
            let mut signals = signal_hook::iterator::Signals::new(handled_signals())
                .context("cannot install a signal handler")?;
            let handle = signals.handle();
            let (path, out, ours) = (path.clone(), out.to_path_buf(), mine.clone());
            let thread = std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    // Only this sweep's: one another host took over meanwhile stays.
                    if fs::read_to_string(&path).is_ok_and(|t| t == ours) {
                        let _ = fs::remove_file(&path);
                    }
                    eprintln!(
                        "\ngradgym sweep: interrupted; the finished runs in {} are kept, and the same \
                         command resumes the rest",
                        out.display()
                    );
                    // `_exit`, not `process::exit`: the latter runs the C++ static
                    // destructors (libtorch's operator registry among them) under the workers
                    // still training, whose next operator then fails; the panic was sealed as
                    // a `failed` run, and the process died by SIGSEGV in the teardown. The
                    // runs in flight stay `.partial` folders, redone on resume.
                    // SAFETY: ends the process at once; nothing after it runs.
                    unsafe { libc::_exit(130) };
                }
            });
            Some((handle, thread))
        };
        Ok(Self {
            path,
            _held: held,
            stop,
            heartbeat: Some(heartbeat),
            contents: mine,
            signals,
        })
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        if let Some((handle, thread)) = self.signals.take() {
            handle.close();
            let _ = thread.join();
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // Only its own: a lock another sweep took over (this one silent past the stale limit
        // on another host) stays that sweep's.
        if fs::read_to_string(&self.path).is_ok_and(|t| t == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The longest run id gradgym plans: a folder name holds 255 bytes on common file systems,
/// less the suffixes a run's folder may take.
const MOST_ID_BYTES: usize = 200;

/// Runs (or resumes) a sweep. Returns an error only when the sweep cannot start (bad sweep
/// file, results folder in use or made by a different sweep); failed runs are recorded.
pub fn run_sweep(spec_path: &Path, options: &SweepOptions) -> Result<SweepOutcome> {
    let spec = SweepSpec::read(spec_path)?;
    let source = spec_path.display().to_string();
    let all = spec.plan(&source, options.device.as_deref())?;
    let columns = SummaryColumns {
        group: all.iter().any(|r| !r.group.is_empty()),
        grid_keys: spec.grid_keys(),
    };
    let runs: Vec<PlannedRun> = all
        .iter()
        .filter(|r| options.shard.contains(r.index))
        .cloned()
        .collect();
    let out = &options.out;
    let runs_dir = out.join("runs");
    // A manifest that is not JSON (hand-edited, or another tool's) is not replaced unseen: a
    // sweep's holds its history (started, sessions, git revisions), which a new one would drop.
    // Nor one that names a sweep but cannot be read as a sweep's manifest (a field cut). What
    // it holds is read here once, for the checks below too.
    let refuse = |problem: String| {
        anyhow::anyhow!(
            "--out {}: its manifest.json {problem}; a sweep would replace it and lose the history it holds. Restore it, or move it away to start the sweep's manifest afresh",
            out.display()
        )
    };
    let earlier: Option<serde_json::Value> = match fs::read(out.join("manifest.json")) {
        Err(_) => None,
        Ok(bytes) => {
            let m: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| refuse(format!("is not JSON ({e})")))?;
            if m.get("sweep").is_some() && m.get("shard").is_some() {
                SweepManifest::deserialize(&m).map_err(|e| {
                    refuse(format!(
                        "names a sweep but cannot be read as a sweep's manifest ({e})"
                    ))
                })?;
            }
            Some(m)
        }
    };
    // A run's folder (of `train`, `prefs` or `rlhf`) is not a sweep's: writing runs/ and a
    // sweep manifest into it would overwrite that run's manifest.
    if out.join("manifest.json").is_file() && !gradgym_agents::run_folder::is_sweep_folder(out) {
        bail!(
            "--out {}: a run's folder (its manifest.json describes one run, not a sweep); choose another --out folder",
            out.display()
        );
    }
    // Another sweep's results kept without their runs/ (or a user's own summary.csv): its
    // summary.csv and manifest would be replaced by this plan's. The runs/ check below cannot
    // see that where runs/ is gone.
    let name = spec.display_name(spec_path);
    if let Some(other) = earlier
        .as_ref()
        .and_then(|m| m.get("sweep").and(m.get("name")?.as_str()))
        .filter(|other| *other != name)
    {
        bail!(
            "--out {}: holds the results of sweep `{other}` (its manifest.json), and this is sweep `{name}`: its summary.csv and manifest would be replaced; use another --out folder",
            out.display()
        );
    }
    if out.join("summary.csv").exists() && earlier.is_none() {
        bail!(
            "--out {}: holds a summary.csv that no sweep manifest.json describes (another tool's, or a sweep's whose manifest is gone): this sweep's would replace it; use another --out folder",
            out.display()
        );
    }
    fs::create_dir_all(&runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let _lock = FolderLock::take(out)?;
    // Another shard's folder, or another sweep's: its summary.csv and manifest would be
    // replaced by this plan's, leaving its runs out unseen.
    let this_shard = format!("{}/{}", options.shard.index, options.shard.count);
    let manifest_path = out.join("manifest.json");
    let previous_text = fs::read_to_string(&manifest_path).ok();
    let previous_shard = previous_text
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|m| m.get("shard")?.as_str().map(String::from));
    if let Some(prev) = previous_shard.filter(|p| *p != this_shard) {
        bail!(
            "--out {}: holds shard {prev} of a sweep, and this is shard {this_shard}: each shard takes its own --out folder (`gradgym report` pools them; a changed shard count needs new folders)",
            out.display()
        );
    }
    let planned: std::collections::HashSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let finished: Vec<String> = fs::read_dir(&runs_dir)
        .with_context(|| format!("cannot list {}", runs_dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    let mut foreign: Vec<String> = finished
        .iter()
        .filter(|n| !planned.contains(n.as_str()))
        .cloned()
        .collect();
    if !foreign.is_empty() {
        foreign.sort();
        let n = foreign.len();
        let named = foreign[..n.min(3)].join(", ") + if n > 3 { ", …" } else { "" };
        // None of its runs planned: another sweep's folder. Some: this sweep's, whose file
        // was edited (seeds or groups dropped, or runs moved to another shard by added ones).
        if n == finished.len() {
            bail!(
                "--out {}: holds {n} run(s) and none that this sweep plans ({named}): another sweep's folder, or this one's before an edit renamed its runs; use another --out folder",
                out.display()
            );
        }
        // Said with --quiet too (plain lines, not silence): a Slurm task's log is where a
        // user would look.
        eprintln!(
            "note: {} holds {n} run(s) this sweep no longer plans ({named}); they stay on disk, out of summary.csv",
            out.display()
        );
    }
    // Finished runs must be the ones this sweep file asks for.
    let mut pending = VecDeque::new();
    // Run folders to remove and redo (interrupted, or failed under --retry-failed), and
    // whether each was interrupted.
    let mut redo: Vec<(PathBuf, bool)> = Vec::new();
    let mut outcome = SweepOutcome {
        planned: runs.len(),
        ..Default::default()
    };
    for (k, run) in runs.iter().enumerate() {
        let dir = runs_dir.join(&run.id);
        if dir.is_dir() {
            let config_path = dir.join("config.toml");
            let Ok(existing) = fs::read_to_string(&config_path) else {
                bail!(
                    "{}: missing: the run folder is incomplete; delete it to redo the run",
                    config_path.display()
                );
            };
            if !same_config(&existing, run) {
                bail!(
                    "{} was made with a different config than {source} gives now{}; \
                     use another --out folder, or delete that run to redo it",
                    config_path.display(),
                    config_difference(&existing, run)
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
            let summary = read_summary(&dir)?;
            let status = summary.get("status").and_then(|s| s.as_str());
            // A run stopped by a signal (a `train --out` into the sweep's runs/, or an older
            // gradgym's sweep) did not fail: like a `.partial` one, it is redone.
            if status == Some("interrupted") {
                redo.push((dir, true));
                pending.push_back(k);
                continue;
            }
            let failed = status.is_none_or(|s| s != "completed");
            if !failed {
                completed_run_files(&dir, &summary)?;
            }
            if failed && options.retry_failed {
                redo.push((dir, false));
                pending.push_back(k);
                continue;
            }
            outcome.skipped += 1;
            outcome.failed_earlier += failed as usize;
        } else {
            pending.push_back(k);
        }
    }
    // Runs to redo are removed only once every finished run has passed its checks: a refusal
    // after one had been removed lost its files and redid nothing.
    for (dir, interrupted) in redo {
        if interrupted {
            eprintln!("note: {} was interrupted; redoing it", dir.display());
        }
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    // Leftovers of interrupted runs are redone from scratch.
    for entry in fs::read_dir(&runs_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "partial") {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }

    let previous: Option<SweepManifest> = previous_text.and_then(|t| serde_json::from_str(&t).ok());
    let now = gradgym_agents::build_info::git_revision();
    let git_revisions = revisions_so_far(previous.as_ref(), now);
    if previous.is_some() && outcome.skipped > 0 {
        let before: Vec<&str> = git_revisions
            .iter()
            .map(String::as_str)
            .filter(|r| *r != now)
            .collect();
        if !before.is_empty() {
            eprintln!(
                "note: earlier sessions of the sweep in {} ran gradgym revision {}; this one runs \
                 {now} (each run's manifest.json names the revision that made it)",
                out.display(),
                before.join(", ")
            );
        }
    }
    let device_name = options.device.clone().unwrap_or_else(|| {
        runs.first()
            .map_or("cpu".into(), |r| r.config.device.clone())
    });
    let mut manifest = SweepManifest {
        name,
        sweep_file: source.clone(),
        sweep: serde_json::to_value(&spec)?,
        shard: format!("{}/{}", options.shard.index, options.shard.count),
        runs_in_grid: all.len(),
        runs_in_shard: runs.len(),
        git_revision: now.into(),
        git_revisions,
        gradgym_version: gradgym_agents::build_info::GRADGYM_VERSION.into(),
        libtorch_version: gradgym_agents::build_info::LIBTORCH_VERSION.into(),
        tch_version: "0.24.0".into(),
        device: device_name,
        cuda_available: tch::Cuda::is_available(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        jobs: options.jobs,
        started: previous
            .as_ref()
            .map_or_else(utc_now, |m| m.started.clone()),
        finished: None,
        sessions: previous.as_ref().map_or(1, |m| m.sessions + 1),
    };
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    write_summary_csv(out, &runs, &columns)?;

    let total = runs.len();
    let done_count = Mutex::new(outcome.skipped);
    let counts = Mutex::new((0usize, 0usize));
    let queue = Mutex::new(pending);
    let summary_lock = Mutex::new(());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let ui = Ui::new(total, outcome.skipped, options.quiet);
    // Every run is single-threaded in libtorch; parallelism comes from running several.
    tch::set_num_threads(1);
    let jobs = options.jobs.max(1).min(queue.lock().unwrap().len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if first_error.lock().unwrap().is_some() {
                        return;
                    }
                    let Some(k) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let run = &runs[k];
                    let result = run_one(run, &runs_dir, &ui);
                    match result {
                        Ok(summary) => {
                            {
                                let mut c = counts.lock().unwrap();
                                if summary.status == "completed" {
                                    c.0 += 1;
                                } else {
                                    c.1 += 1;
                                }
                            }
                            let n = {
                                let mut d = done_count.lock().unwrap();
                                *d += 1;
                                *d
                            };
                            let _guard = summary_lock.lock().unwrap();
                            if let Err(e) = write_summary_csv(out, &runs, &columns) {
                                first_error.lock().unwrap().get_or_insert(e);
                            }
                            ui.finished(n, total, &run.id, &summary);
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert(e.context(format!("run {}", run.id)));
                        }
                    }
                }
            });
        }
    });
    ui.clear();
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let (completed, failed) = counts.into_inner().unwrap();
    outcome.completed = completed;
    outcome.failed = failed;
    manifest.finished = Some(utc_now());
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(outcome)
}

fn run_one(run: &PlannedRun, runs_dir: &Path, ui: &Ui) -> Result<Summary> {
    let bar = ui.start(&run.id, run.config.total_timesteps);
    let mut on_progress = |p: Progress| {
        if let Some(bar) = &bar {
            bar.set_position(p.global_step.min(p.total_timesteps));
            if let Some(r) = p.recent_return {
                bar.set_message(format!("return {r:.1}"));
            }
        }
    };
    // Written in `<id>.partial/` and sealed into `<id>/` by the run folder.
    let summary = train_with(
        &run.config,
        &runs_dir.join(&run.id),
        Existing::Refuse,
        None,
        None,
        &mut on_progress,
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// Progress: an overall bar and one bar per running run on a terminal, plain lines otherwise.
struct Ui {
    multi: Option<indicatif::MultiProgress>,
    overall: Option<indicatif::ProgressBar>,
}

impl Ui {
    fn new(total: usize, done: usize, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            eprintln!("gradgym sweep: {total} runs, {done} already finished");
            return Self {
                multi: None,
                overall: None,
            };
        }
        let multi = indicatif::MultiProgress::new();
        let overall = multi.add(indicatif::ProgressBar::new(total as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template("runs {bar:30} {pos}/{len}  eta {eta}")
                .expect("valid template"),
        );
        overall.set_position(done as u64);
        Self {
            multi: Some(multi),
            overall: Some(overall),
        }
    }

    fn start(&self, id: &str, steps: u64) -> Option<indicatif::ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(indicatif::ProgressBar::new(steps));
        bar.set_style(
            indicatif::ProgressStyle::with_template("  {prefix:48} {bar:24} {percent:>3}%  {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(id.to_string());
        Some(bar)
    }

    fn finished(&self, n: usize, total: usize, id: &str, s: &Summary) {
        let mut line = format!(
            "[{n}/{total}] {id}: {}{} ({:.1} s)",
            s.status,
            s.final_return_mean_last100
                .map(|r| format!(", return {r:.1}"))
                .unwrap_or_default(),
            s.wall_seconds
        );
        for w in &s.warnings {
            line.push_str(&format!("\n  warning: {w}"));
        }
        match (&self.multi, &self.overall) {
            (Some(multi), Some(overall)) => {
                let _ = multi.println(line);
                overall.inc(1);
            }
            _ => eprintln!("{line}"),
        }
    }

    fn clear(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

/// An sbatch script that runs shard `$SLURM_ARRAY_TASK_ID` of `shards` per array task, each
/// into `<out>/shard-<i>`; `gradgym report <out>` reads the union.
/// Slurm resources of an emitted job-array script: from the sweep file's `[slurm]` table,
/// overridden by `--slurm-*` flags.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    /// `--cpus-per-task` of each array task (default 2); the task runs that many jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<usize>,
    /// `--time` (e.g. `02:00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--mem` (e.g. `4G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl SlurmSpec {
    /// `self` with the fields `over` sets replaced.
    pub fn overlay(&self, over: &SlurmSpec) -> SlurmSpec {
        SlurmSpec {
            cpus_per_task: over.cpus_per_task.or(self.cpus_per_task),
            time: over.time.clone().or_else(|| self.time.clone()),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
        }
    }
}

const SLURM_MEM_FORM: &str = "Slurm reads a whole number with an optional unit K, M (the default), G or T, which a B may follow, such as 4G or 4GB";

/// Slurm's `--mem` in bytes, read as Slurm's `str_to_mbytes` does: an integer with an
/// optional unit `K`, `M` (the default), `G` or `T`, in either case and optionally followed by
/// `B`; kibibytes round up to whole mebibytes. `None` for `0`, which Slurm reads as all of a
/// node's memory.
pub fn slurm_mem_bytes(text: &str) -> Result<Option<u128>, String> {
    let t = text.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(end);
    let n: u128 = digits
        .parse::<u64>()
        .map_err(|_| SLURM_MEM_FORM.to_string())?
        .into();
    let mut chars = suffix.chars().map(|c| c.to_ascii_uppercase());
    let unit = chars.next().unwrap_or('M');
    if !matches!(chars.next(), None | Some('B')) || chars.next().is_some() {
        return Err(SLURM_MEM_FORM.into());
    }
    let mib = match unit {
        'K' => n.div_ceil(1024),
        'M' => n,
        'G' => n << 10,
        'T' => n << 20,
        _ => return Err(SLURM_MEM_FORM.into()),
    };
    Ok((mib > 0).then_some(mib << 20))
}

/// What a `gradgym sweep` process takes before its runs' buffers: the binary, libtorch's
/// mapped libraries and the allocator's arenas. A sweep of two 2,048-step CartPole runs peaked
/// at 465 MiB of resident memory (475,724 kB; 493 MiB on the libtorch backend), on jobs 1 and
/// 2 alike; 512 MiB leaves room for a node's other libraries.
pub const SLURM_TASK_BASELINE: u128 = 512 << 20;

/// Bytes the busiest array task of an emitted script needs at once: the process's own
/// [`SLURM_TASK_BASELINE`] plus its runs' estimates ([`TrainConfig::memory_estimate`]): task i
/// runs shard i/`shards` with `jobs` runs at a time, so its need is its `jobs` largest runs
/// together. With how many runs that is and the largest of them.
pub fn slurm_task_memory(
    runs: &[PlannedRun],
    shards: usize,
    jobs: usize,
) -> Option<(u128, usize, &PlannedRun)> {
    (1..=shards)
        .filter_map(|i| {
            let shard = Shard {
                index: i,
                count: shards,
            };
            let mut mine: Vec<&PlannedRun> =
                runs.iter().filter(|r| shard.contains(r.index)).collect();
            mine.sort_by_key(|r| std::cmp::Reverse(r.config.memory_estimate()));
            let at_once = mine.len().min(jobs.max(1));
            let need: u128 = SLURM_TASK_BASELINE
                + mine[..at_once]
                    .iter()
                    .map(|r| r.config.memory_estimate())
                    .sum::<u128>();
            mine.first().map(|&r| (need, at_once, r))
        })
        .max_by_key(|&(need, _, _)| need)
}

/// Why `value` cannot be the `[slurm]` field or `--slurm-*` flag `field` (`time`,
/// `partition`, `account`) of an emitted script, if it cannot: each becomes an `#SBATCH` line
/// as written, where a newline would start a shell command and a space or quote would be read
/// as sbatch's next argument. A time is Slurm's `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`,
/// `UNLIMITED`, `INFINITE` (any case) or `-1`; a partition or account is letters, digits, `_`, `-` and `.`
/// (a partition list also `,`).
pub fn slurm_field_problem(field: &str, value: &str) -> Option<String> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match field {
        "time" => {
            // As Slurm's time_str2mins reads them, in any case.
            if value == "-1"
                || value.eq_ignore_ascii_case("UNLIMITED")
                || value.eq_ignore_ascii_case("INFINITE")
            {
                return None;
            }
            let (days, rest) = match value.split_once('-') {
                Some((d, rest)) => (Some(d), rest),
                None => (None, value),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let ok = days.is_none_or(digits) && parts.len() <= 3 && parts.iter().all(|p| digits(p));
            (!ok).then(|| {
                "Slurm reads a time as M, M:S, H:M:S, D-H, D-H:M or D-H:M:S (digits), UNLIMITED, INFINITE or -1".to_string()
            })
        }
        _ => {
            let ok = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.,".contains(c));
            (!ok).then(|| {
                format!("a {field} name is letters, digits, `_`, `-`, `.` and `,` (it is written into an #SBATCH line as is)")
            })
        }
    }
}

/// Why `path` cannot be written into an emitted script, if it cannot: a control character
/// (a newline would end the comment or directive it is in and start a command); for the
/// output folder (`log_folder`), also `"`, `\` and `%`, which the `#SBATCH --output` line's
/// quoting and Slurm's `%` patterns would read otherwise.
pub fn slurm_path_problem(path: &Path, log_folder: bool) -> Option<String> {
    let text = path.display().to_string();
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Some(format!(
            "holds the control character {c:?}, which would break the script's lines"
        ));
    }
    if log_folder && let Some(c) = text.chars().find(|c| "\"\\%".contains(*c)) {
        return Some(format!(
            "holds `{c}`, which Slurm's `--output` pattern would read as quoting or a `%` field; choose a folder without it"
        ));
    }
    None
}

/// `s` quoted for bash: single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `path` made absolute against the current folder (without resolving links).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current folder")?
            .join(path)
    })
}

/// An sbatch job-array script: task i runs shard i/`shards` of the sweep into
/// `<out>/shard-i`. Paths are absolute and quoted, so the script can be submitted from any
/// folder and survives spaces; `out` must exist before submission (Slurm opens the task logs
/// there before the script runs), which `gradgym sweep --emit-slurm` sees to.
pub fn slurm_script(
    spec_path: &Path,
    out: &Path,
    shards: usize,
    device: Option<&str>,
    retry_failed: bool,
    slurm: &SlurmSpec,
) -> String {
    let spec = shell_quote(&spec_path.display().to_string());
    let out_q = shell_quote(&out.display().to_string());
    let mut device_flag = device
        .map(|d| format!(" --device {}", shell_quote(d)))
        .unwrap_or_default();
    if retry_failed {
        device_flag.push_str(" --retry-failed");
    }
    let mut directives = vec![
        "--job-name=gradgym-sweep".to_string(),
        format!("--array=1-{shards}"),
        format!("--cpus-per-task={}", slurm.cpus_per_task.unwrap_or(2)),
    ];
    for (flag, value) in [
        ("time", &slurm.time),
        ("mem", &slurm.mem),
        ("partition", &slurm.partition),
        ("account", &slurm.account),
    ] {
        if let Some(v) = value {
            directives.push(format!("--{flag}={v}"));
        }
    }
    if device.is_some_and(|d| d.starts_with("cuda")) {
        directives.push("--gres=gpu:1".into());
    }
    // sbatch reads #SBATCH lines like a command line: double quotes keep a space in a path.
    directives.push(format!("--output=\"{}/slurm-%A_%a.log\"", out.display()));
    let directives: String = directives
        .iter()
        .map(|d| format!("#SBATCH {d}\n"))
        .collect();
    format!(
        "#!/bin/bash\n\
         # Written by `gradgym sweep {spec} --emit-slurm`. Submit from any folder with\n\
         #   sbatch {{this file}}\n\
         # The log folder {out_q} was made when this script was written (Slurm opens the task\n\
         # logs there before the script runs). `gradgym` must be on the nodes' PATH, or set\n\
         # GRADGYM to its absolute path. Task i runs shard i/{shards} of the grid into\n\
         # {out_q}/shard-i; re-submitting resumes. Pool the shards afterwards with\n\
         #   gradgym report {out_q} && gradgym plot {out_q}\n\
         {directives}\
         set -euo pipefail\n\
         mkdir -p {out_q}\n\
         \"${{GRADGYM:-gradgym}}\" sweep {spec} --shard \"${{SLURM_ARRAY_TASK_ID}}/{shards}\" --jobs \"${{SLURM_CPUS_PER_TASK:-1}}\"{device_flag} --out {out_q}/\"shard-${{SLURM_ARRAY_TASK_ID}}\" --quiet\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_grid() {
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        for k in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.contains(k)).count(), 1);
        }
        assert!(Shard::parse("0/3").is_err());
        assert!(Shard::parse("4/3").is_err());
        assert!(Shard::parse("x").is_err());
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
    }

    #[test]
    fn grid_is_a_product_in_sorted_key_order() {
        let spec = SweepSpec::parse(
            r#"
seeds = [1, 2]
[[runs]]
envs = ["CartPole-v1"]
algos = ["ppo", "a2c"]
grid = { learning_rate = [0.001, 0.0003], gamma = [0.9] }
"#,
            "test.toml",
        )
        .unwrap();
        let runs = spec.plan("test.toml", None).unwrap();
        assert_eq!(runs.len(), 8);
        assert_eq!(
            runs[0].id,
            "CartPole-v1__ppo__gamma=0.9__learning_rate=0.001__seed1"
        );
        assert_eq!(runs[1].config.seed, 2);
        assert_eq!(runs[2].config.learning_rate, 0.0003);
        assert_eq!(runs[4].config.algo, Algo::A2c);
        assert_eq!(runs[4].config.gamma, 0.9);
        assert_eq!(spec.grid_keys(), vec!["gamma", "learning_rate"]);
    }

    #[test]
    fn bad_sweep_files_are_named() {
        let err = |text: &str| {
            SweepSpec::parse(text, "s.toml")
                .and_then(|s| s.plan("s.toml", None))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("seeds = []\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]").contains("seeds")
        );
        assert!(
            err("seeds = [9223372036854775808]\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]")
                .contains("`seeds`: 9223372036854775808 is past")
        );
        let e = err("seeds = [1]\n[[runs]]\nenvs=[\"Nope-v0\"]\nalgos=[\"ppo\"]");
        assert!(
            e.contains("s.toml [[runs]] #1") && e.contains("Nope-v0"),
            "{e}"
        );
        let e = err("seeds = [1]\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"sac\"]");
        assert!(e.contains("sac"), "{e}");
        let e = err("seeds = [1]\nbogus = 1\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]");
        assert!(e.contains("bogus"), "{e}");
        let e = format!(
            "{:#}",
            SweepSpec::parse(
                "seeds = [1]\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]\nconfig={lerning_rate=1}",
                "s.toml"
            )
            .unwrap()
            .plan("s.toml", None)
            .unwrap_err()
        );
        assert!(e.contains("lerning_rate"), "{e}");
        let e =
            err("seeds = [1]\n[[runs]]\nenvs=[\"CartPole-v1\", \"CartPole-v1\"]\nalgos=[\"ppo\"]");
        assert!(e.contains("appears twice"), "{e}");
        let group = "[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]\nconfig={num_envs=8}\n";
        let e = err(&format!("seeds = [1]\n{group}{group}"));
        assert!(e.contains("groups #1 and #2 with the same config"), "{e}");
        // A name too long for a folder is refused in the plan, not when its run starts.
        let e = err(
            "seeds = [1]\n[[runs]]\nenvs=[\"CartPole-v1\"]\nalgos=[\"ppo\"]\ngrid={learning_rate=[1e300, 0.001]}",
        );
        assert!(
            e.contains("[[runs]] #1") && e.contains("more than a run folder's name may hold (200)"),
            "{e}"
        );
        assert!(e.len() < 600, "{e}");
    }

    #[test]
    fn groups_that_differ_only_in_config_get_distinct_ids() {
        let text = "seeds = [1, 2]
[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]
config = { num_envs = 8 }
[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"ppo\", \"a2c\"]
config = { num_envs = 16 }
";
        let runs = SweepSpec::parse(text, "s.toml")
            .unwrap()
            .plan("s.toml", None)
            .unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "CartPole-v1__ppo__g1__seed1",
                "CartPole-v1__ppo__g1__seed2",
                "CartPole-v1__ppo__g2__seed1",
                "CartPole-v1__ppo__g2__seed2",
                "CartPole-v1__a2c__seed1",
                "CartPole-v1__a2c__seed2",
            ]
        );
        assert_eq!(runs[2].config.num_envs, 16);
        // Group 2 repeats group 1's ppo cell: its ppo runs are labelled, its a2c runs and
        // group 1's runs are not.
        let groups: Vec<&str> = runs.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(groups, ["", "", "2", "2", "", ""]);
    }

    #[test]
    fn a_sweep_name_is_a_folder_name_not_a_path() {
        for bad in ["", ".", "..", "../x", "/tmp/x", "a\\b", "a\nb"] {
            let text = format!(
                "name = {bad:?}\nseeds = [1]\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n"
            );
            let e = SweepSpec::parse(&text, "s.toml").unwrap_err().to_string();
            assert!(e.contains("s.toml: `name`"), "{bad:?}: {e}");
        }
        for good in ["my_sweep-2.1", "CartPole sweep (v2)", "..x"] {
            let text = format!(
                "name = {good:?}\nseeds = [1]\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n"
            );
            assert!(SweepSpec::parse(&text, "s.toml").is_ok(), "{good}");
        }
    }

    #[test]
    fn slurm_values_that_would_break_the_script_are_refused() {
        for good in [
            "90",
            "30:00",
            "02:00:00",
            "1-12",
            "1-12:30",
            "2-00:00:00",
            "UNLIMITED",
            "Infinite",
            "-1",
        ] {
            assert_eq!(slurm_field_problem("time", good), None, "{good}");
        }
        for bad in ["", "abc", "1:2:3:4", "1-", "-5", "02:00:00\nrm x", "1h"] {
            assert!(slurm_field_problem("time", bad).is_some(), "{bad:?}");
        }
        for good in ["gpu", "gpu,cpu", "lab_1.a-b"] {
            assert_eq!(slurm_field_problem("partition", good), None, "{good}");
        }
        for bad in ["", "a b", "normal\ncurl x | sh", "x\"y", "#"] {
            assert!(slurm_field_problem("account", bad).is_some(), "{bad:?}");
        }
        assert_eq!(slurm_path_problem(Path::new("/a b/c'd"), true), None);
        assert!(slurm_path_problem(Path::new("/a\ntouch x #"), false).is_some());
        for bad in ["/a%j", "/a\"b", "/a\\b"] {
            assert!(slurm_path_problem(Path::new(bad), true).is_some(), "{bad}");
            assert_eq!(slurm_path_problem(Path::new(bad), false), None, "{bad}");
        }
    }

    #[test]
    fn config_and_grid_errors_name_the_line_of_the_sweep_file() {
        let error = |text: &str| {
            let e = SweepSpec::parse(text, "s.toml")
                .and_then(|s| s.plan("s.toml", None))
                .unwrap_err();
            format!("{e:#}")
        };
        // The top-level `config`, inline.
        let e = error(
            "seeds = [1]
config = { total_timesteps = 1000, gamma = \"high\" }
[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]
",
        );
        assert!(
            e.contains("s.toml:2: config field `gamma`: invalid type"),
            "{e}"
        );
        // A group's `[runs.config]` and `[runs.grid]` tables, the second group's; a key of
        // a nested table (`prefs.labls`), unknown.
        let text = "seeds = [1]

[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]

[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"a2c\"]
[runs.config]
total_timesteps = 1000
prefs = { labls = 3 }
[runs.grid]
learning_rate = [0.1, -2.0]
";
        let e = error(text);
        assert!(e.contains("[[runs]] #2"), "{e}");
        assert!(e.contains("s.toml:12: unknown field `prefs.labls`"), "{e}");
        let e = error(&text.replace("labls", "labels"));
        assert!(
            e.contains("s.toml:14: config field `learning_rate`: must be a positive number"),
            "{e}"
        );
    }

    #[test]
    fn groups_are_labelled_on_every_env_they_cover_and_by_name() {
        let plan = |text: &str| SweepSpec::parse(text, "s.toml")?.plan("s.toml", None);
        // Group 2 repeats group 1's CartPole ppo cell: its ppo runs carry its number on
        // Pendulum too; its a2c runs, and group 1's runs, keep their plain labels.
        let runs = plan(
            "seeds = [1]
[[runs]]
envs = [\"CartPole-v1\", \"Acrobot-v1\"]
algos = [\"ppo\"]
[[runs]]
envs = [\"CartPole-v1\", \"Pendulum-v1\"]
algos = [\"ppo\", \"a2c\"]
config = { num_envs = 8 }
",
        )
        .unwrap();
        let got: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.id.as_str(), r.group.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("CartPole-v1__ppo__g1__seed1", ""),
                ("Acrobot-v1__ppo__seed1", ""),
                ("CartPole-v1__ppo__g2__seed1", "2"),
                ("CartPole-v1__a2c__seed1", ""),
                ("Pendulum-v1__ppo__seed1", "2"),
                ("Pendulum-v1__a2c__seed1", ""),
            ]
        );
        // A named group is labelled by its name, colliding or not.
        let runs = plan(
            "seeds = [1]
[[runs]]
name = \"wide\"
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]
",
        )
        .unwrap();
        assert_eq!(runs[0].group, "wide");
        assert_eq!(runs[0].id, "CartPole-v1__ppo__seed1");
        for (name, says) in [
            ("\"\"", "letters, digits"),
            ("\"a,b\"", "letters, digits"),
            ("\"x\"", "is also [[runs]] #1's"),
            ("\"2\"", "a number labels an unnamed group"),
        ] {
            let text = format!(
                "seeds = [1]
[[runs]]
name = \"x\"
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]
[[runs]]
name = {name}
envs = [\"Acrobot-v1\"]
algos = [\"ppo\"]
"
            );
            let e = plan(&text).unwrap_err().to_string();
            assert!(
                e.contains("s.toml [[runs]] #2: `name`") && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn slurm_mem_reads_as_slurm_does() {
        assert_eq!(slurm_mem_bytes("4G"), Ok(Some(4 << 30)));
        assert_eq!(slurm_mem_bytes("4g"), Ok(Some(4 << 30)));
        assert_eq!(slurm_mem_bytes("512"), Ok(Some(512 << 20)));
        assert_eq!(
            slurm_mem_bytes("3K"),
            Ok(Some(1 << 20)),
            "K rounds up to MiB"
        );
        assert_eq!(slurm_mem_bytes("2049k"), Ok(Some(3 << 20)));
        assert_eq!(slurm_mem_bytes("2T"), Ok(Some(2 << 40)));
        assert_eq!(slurm_mem_bytes("64GB"), Ok(Some(64 << 30)));
        assert_eq!(slurm_mem_bytes("16gb"), Ok(Some(16 << 30)));
        assert_eq!(slurm_mem_bytes("512MB"), Ok(Some(512 << 20)));
        assert_eq!(slurm_mem_bytes("0"), Ok(None));
        assert_eq!(slurm_mem_bytes("0G"), Ok(None));
        for bad in ["", "G", "-1G", "1.5G", "512B", "4GBB", "4X", "4 G"] {
            assert!(slurm_mem_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_dates_are_civil() {
        let now = utc_now();
        assert_eq!(now.len(), 20);
        assert!(now.starts_with("20"), "{now}");
    }
}
