//! The run folder: what every command that writes a run leaves on disk (`gradgym train`, each
//! run of `gradgym sweep`, the preference loop, and `gradgym rlhf`, whose folder holds more
//! files: see docs/rlhf.md).
//!
//! ```text
//! <run>/
//!   manifest.json   first: the resolved config, seed, git revision, versions, device, backend
//!   config.toml     the resolved config as TOML; `gradgym train --config` on it repeats the run
//!   metrics.csv     one row per iteration, named columns in declared order, flushed per row
//!   summary.json    last, also on failure: status `completed`, `failed` or `interrupted`
//!                   (the last two with `error`)
//! ```
//!
//! Completion is atomic: the files are written into `<run>.partial/`, made durable (fsync) and
//! the folder renamed to `<run>/` once the summary is on disk, so a folder named after a run is
//! always whole. A run that fails (a non-finite loss, a libtorch panic) or is stopped by a
//! signal is sealed too: its summary says why, and every metrics row written before stays
//! readable; under `--overwrite` it goes beside the run it was to replace
//! ([`RunFolder::seal_as`]); a run started without it whose name was taken while it ran is
//! sealed beside that folder as `<run>.completed`. Only a process killed outright (SIGKILL, a
//! second signal, a crash) leaves a `.partial` folder, and the next run of that name refuses
//! it unless told to replace it; a run still going holds an exclusive lock (`flock`) on its
//! `.partial` folder, so that folder is refused even then. The lock is seen by the processes of
//! one machine: on a network file system, runs on two nodes are not kept apart by it. A run that `--overwrite` replaces is renamed `<run>.replaced-<k>` until the new
//! one is in its place, then deleted; a process killed while deleting it leaves it there
//! (`gradgym report` names it and leaves it out). JSON and TOML files are written to a
//! temporary name and renamed, so a reader
//! never sees half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::metrics::{Columns, MetricRow};

/// The first `n` bytes of the file at `path` (all of it if shorter): enough to tell what a
/// file gradgym would replace or remove holds, without reading it whole.
pub fn read_head(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs::File::open(path)?, n),
        &mut head,
    )?;
    Ok(head)
}

/// Writes `contents` to `path` through a temporary file and a rename. The temporary file is
/// `<path>.tmp` (the whole name and `.tmp`: `summary.json.tmp`, never another file of the
/// same stem), and is removed again if the rename fails. Its contents are made durable
/// before the rename and the rename after it, so that after a power loss `path` holds the old
/// contents or the new, never an empty file (a sweep's summary.csv and manifest.json live
/// outside any sealed run folder and are written only this way).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = suffixed(path, ".tmp");
    // Named by the file asked for: the temporary file is ours, not the caller's.
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Makes the entries of the folder holding `path` durable (`.` for a bare name).
fn sync_parent(path: &Path) {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_folder(p),
        _ => sync_folder(Path::new(".")),
    }
}

/// Makes the entries of folder `dir` (the names of the files in it) durable. Not every file
/// system can sync a folder opened for reading; that is no error.
fn sync_folder(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `<dir><suffix>`: `dir` with `suffix` added to its last component.
fn suffixed(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// `dir` as a path whose last component names the run's folder: one that ends in `.` or `..`
/// (`--out .`) is resolved first (such a path exists), so that `<dir>.partial` lies beside the
/// folder and not inside the folder it is to replace; a trailing `/` is dropped. A path that
/// names no folder (`/`) is an error.
pub fn folder_path(dir: &Path) -> Result<PathBuf> {
    let bytes = dir.as_os_str().as_encoded_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let last = bytes[..end]
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or_default();
    let resolved = if last == b"." || last == b".." {
        fs::canonicalize(dir).with_context(|| format!("--out {}: cannot resolve", dir.display()))?
    } else {
        // Without a trailing `/`, so that a link is renamed as itself (`link/` is its target).
        dir.components().collect()
    };
    if resolved.file_name().is_none() {
        bail!(
            "--out {}: names no folder a run can be written to and renamed into; choose another --out folder",
            dir.display()
        );
    }
    Ok(resolved)
}

/// Whether `dir` is a `gradgym sweep` results folder: its manifest.json describes a sweep (a
/// `sweep` and its `shard`), or it holds the sweep's `summary.csv` and `runs/`.
pub fn is_sweep_folder(dir: &Path) -> bool {
    let manifest = fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    manifest.is_some_and(|m| m.get("sweep").is_some() && m.get("shard").is_some())
        || (dir.join("summary.csv").is_file() && dir.join("runs").is_dir())
}

/// What a gradgym folder holds, as its `manifest.json` says: `--overwrite` replaces a folder
/// only with one of its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    /// A run of `gradgym train` or `gradgym prefs`.
    Run,
    /// A run of `gradgym rlhf` (its manifest's `kind`).
    Rlhf,
    /// A `gradgym estimators` study (its manifest's `command`).
    Estimators,
}

impl FolderKind {
    fn name(self) -> &'static str {
        match self {
            FolderKind::Run => "training run (gradgym train or prefs)",
            FolderKind::Rlhf => "gradgym rlhf run",
            FolderKind::Estimators => "gradgym estimators study",
        }
    }
}

/// The temporary file a run killed while writing its manifest leaves: `write_atomic`'s
/// `manifest.json.tmp`, or the older `manifest.tmp`.
const MANIFEST_TMP: [&str; 2] = ["manifest.json.tmp", "manifest.tmp"];

/// The kind of gradgym folder `d` is, read from its manifest (`manifest.json`, or the
/// `manifest.json.tmp` / `manifest.tmp` an unfinished run may hold): `None` where there is
/// none, or it is not gradgym's (not JSON, or no `gradgym_version`: a web app's
/// `manifest.json`, say).
pub fn folder_kind(d: &Path) -> Option<FolderKind> {
    for name in std::iter::once("manifest.json").chain(MANIFEST_TMP) {
        let Ok(text) = fs::read_to_string(d.join(name)) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_str(&text).ok()?;
        m.get("gradgym_version")?;
        return Some(if m["kind"] == "rlhf" {
            FolderKind::Rlhf
        } else if m["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("gradgym estimators"))
        {
            FolderKind::Estimators
        } else {
            FolderKind::Run
        });
    }
    // An estimator study written before studies had a manifest.
    ["estimators.csv", "summary.json"]
        .iter()
        .all(|f| d.join(f).is_file())
        .then_some(FolderKind::Estimators)
}

/// The suffix `<run>.replaced-<k>` of a run that `--overwrite` is replacing, kept aside until
/// the new one is in its place.
const REPLACED: &str = ".replaced-";

/// Whether a folder's `name` is that of a replaced run left aside (`<run>.replaced-<k>`).
pub fn is_replaced_name(name: &str) -> bool {
    name.rsplit_once(REPLACED)
        .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// `<dir>.<status>`, or `<dir>.<status>-2`, `-3`, … where that is taken: where a run that
/// must not take its own name is sealed.
fn beside(dir: &Path, status: &str) -> PathBuf {
    (1..)
        .map(|n| match n {
            1 => suffixed(dir, &format!(".{status}")),
            n => suffixed(dir, &format!(".{status}-{n}")),
        })
        .find(|candidate| !candidate.exists())
        .expect("an unused name")
}

/// `<dir>.partial`, where a run is written until it is sealed.
pub fn partial_path(dir: &Path) -> PathBuf {
    suffixed(dir, ".partial")
}

/// Refuses a run folder `dir` whose replacement would delete one of the run's own `inputs`
/// (`(flag, path)`): an input inside `dir` or inside `<dir>.partial`.
pub fn refuse_inputs_inside(dir: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let folder = folder_path(dir)?;
    for place in [partial_path(&folder), folder] {
        let Ok(place) = fs::canonicalize(&place) else {
            continue;
        };
        for (flag, input) in inputs {
            if fs::canonicalize(input).is_ok_and(|i| i.starts_with(&place)) {
                bail!(
                    "--out {}: the run would replace its own input {flag} {} (it lies inside {}); choose another --out folder",
                    dir.display(),
                    input.display(),
                    place.display()
                );
            }
        }
    }
    Ok(())
}

/// What to do when the run's folder already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, naming the folder (nothing is touched).
    Refuse,
    /// Replace it once the new run is sealed.
    Replace,
}

/// A run being written. Create it, write the manifest and config, declare the metric columns,
/// append rows, and [`seal`](RunFolder::seal) it with the summary.
#[derive(Debug)]
pub struct RunFolder {
    done: PathBuf,
    partial: PathBuf,
    metrics: Option<(fs::File, Columns)>,
    /// Whether an existing `done` may be replaced when the run is sealed.
    existing: Existing,
    /// The `.partial` folder, held under an exclusive lock while this run writes it (released
    /// when the process ends, however it ends): another process's `--overwrite` refuses it.
    _lock: fs::File,
}

/// Takes the exclusive lock (`flock`) of the folder `dir` without waiting: the open folder, or
/// `None` where another process holds it. The lock lasts as long as the file stays open, and
/// goes with the process, so a killed run's folder is free again.
fn lock_folder(dir: &Path) -> Result<Option<fs::File>> {
    let file = fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    match flock_exclusive(&file) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", dir.display())),
    }
}

/// flock(2) on `file`, exclusive and without waiting: `true` once this process holds it,
/// `false` where another process does, an error where it cannot be taken (a file system
/// without flock: ENOLCK, EOPNOTSUPP). The lock lasts while `file` is open.
pub fn flock_exclusive(file: &fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The error for a `.partial` folder another process is writing now.
fn in_use(partial: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is being written by another gradgym process now (it holds the folder's lock); wait for that run to end, or choose another --out folder",
        partial.display()
    )
}

/// Makes every file under `dir` durable, in its subfolders too (the models' `sft/`,
/// `policy/`, the classic `checkpoints/iter-*/`), and every folder's entries, so that a run
/// sealed as finished never comes back from a power loss with its weights empty or missing.
/// Links are not followed.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", path.display()))?;
        }
    }
    sync_folder(dir);
    Ok(())
}

impl RunFolder {
    /// Starts a run whose finished folder will be `dir`. A `<dir>.partial/` left by a run that
    /// was killed is refused under [`Existing::Refuse`] (it may hold the only copy of what that
    /// run wrote) and removed under [`Existing::Replace`]. [`Existing::Replace`] replaces only a
    /// run folder (one with a `manifest.json`) or an empty folder: never a user's other files.
    pub fn create(dir: &Path, existing: Existing) -> Result<Self> {
        Self::create_as(dir, existing, FolderKind::Run)
    }

    /// [`RunFolder::create`] for a folder of `kind`: [`Existing::Replace`] replaces only a
    /// folder whose manifest is gradgym's and of that kind (a training run never replaces an
    /// estimator study, nor a web app's folder that happens to hold a `manifest.json`).
    pub fn create_as(dir: &Path, existing: Existing, kind: FolderKind) -> Result<Self> {
        let dir = &folder_path(dir)?;
        if existing == Existing::Refuse && dir.exists() && !dir.is_dir() {
            bail!(
                "{} exists and is a file, not a folder; choose another --out folder",
                dir.display()
            );
        }
        if existing == Existing::Refuse && dir.exists() {
            bail!(
                "{} already exists; choose another --out folder, or pass --overwrite to replace it",
                dir.display()
            );
        }
        // A run folder: one with a manifest.json, which every run writes first (as
        // manifest.json.tmp, then renamed; manifest.tmp before gradgym named it so), or empty. A sweep's folder has a manifest.json too, but
        // holds every run of the sweep: never replaced by one run.
        let replaceable = |d: &Path| {
            let empty = fs::read_dir(d).is_ok_and(|mut e| e.next().is_none());
            d.is_dir() && (empty || (folder_kind(d) == Some(kind) && !is_sweep_folder(d)))
        };
        if existing == Existing::Replace && dir.exists() && is_sweep_folder(dir) {
            bail!(
                "{} is a sweep's results folder (a sweep's manifest.json, or its summary.csv and runs/); --overwrite replaces only a run folder, so choose another --out folder",
                dir.display()
            );
        }
        if existing == Existing::Replace && dir.exists() && !replaceable(dir) {
            match folder_kind(dir) {
                Some(other) => bail!(
                    "{} holds a {} (its manifest.json says so); --overwrite here replaces only a {}, so choose another --out folder",
                    dir.display(),
                    other.name(),
                    kind.name()
                ),
                None => bail!(
                    "{} exists and is not a gradgym run folder (it has no manifest.json that gradgym wrote); --overwrite replaces only run folders, so choose another --out folder",
                    dir.display()
                ),
            }
        }
        let partial = partial_path(dir);
        // A run still going holds its `.partial` folder's lock: refused whatever is asked,
        // and never called a killed run's (whose folder a user may then delete).
        let old_lock = if partial.is_dir() {
            match lock_folder(&partial)? {
                Some(lock) => Some(lock),
                None => return Err(in_use(&partial)),
            }
        } else {
            None
        };
        // The same rule for the `.partial` folder --overwrite removes: a name that merely
        // ends in `.partial` may hold a user's own files (said with or without --overwrite).
        // A run killed while writing its manifest leaves only `manifest.json.tmp` (or the older
        // `manifest.tmp`), perhaps cut short: in a `.partial` folder that still marks a run's.
        let killed_writing_manifest = |d: &Path| {
            !d.join("manifest.json").exists() && MANIFEST_TMP.iter().any(|m| d.join(m).is_file())
        };
        if partial.exists() && !replaceable(&partial) && !killed_writing_manifest(&partial) {
            bail!(
                "{} exists and is not the folder of an unfinished gradgym run of this kind (it has no manifest.json that gradgym wrote for a {}); --overwrite replaces only run folders, so move it or choose another --out folder",
                partial.display(),
                kind.name()
            );
        }
        // Only now a killed run's: told that --overwrite replaces it, which it then does.
        if partial.exists() && existing == Existing::Refuse {
            bail!(
                "{} holds the files of an earlier run of this name that never finished (killed outright, by a second signal or a crash); move or delete it, or pass --overwrite to replace it",
                partial.display()
            );
        }
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("cannot remove {}", partial.display()))?;
        }
        drop(old_lock);
        if let Some(parent) = partial.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Made here and by no one else: two runs started together do not share it.
        if let Err(e) = fs::create_dir(&partial) {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                if partial.is_dir() {
                    return Err(in_use(&partial));
                }
                bail!(
                    "{} exists and is not a folder (a file, or a link to nothing); move it or choose another --out folder",
                    partial.display()
                );
            }
            return Err(e).with_context(|| format!("cannot create {}", partial.display()));
        }
        let Some(lock) = lock_folder(&partial)? else {
            return Err(in_use(&partial));
        };
        Ok(Self {
            done: dir.to_path_buf(),
            partial,
            metrics: None,
            existing,
            _lock: lock,
        })
    }

    /// Where the files are being written now (`<dir>.partial`).
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Where the run will be once sealed.
    pub fn final_path(&self) -> &Path {
        &self.done
    }

    /// Writes `name` (pretty JSON) atomically into the folder.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        write_atomic(
            &self.partial.join(name),
            serde_json::to_string_pretty(value)?.as_bytes(),
        )
    }

    /// Writes `name` (text) atomically into the folder.
    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        write_atomic(&self.partial.join(name), text.as_bytes())
    }

    /// Creates `metrics.csv` with `columns` as its header.
    pub fn start_metrics(&mut self, columns: Columns) -> Result<()> {
        let path = self.partial.join("metrics.csv");
        let mut file =
            fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(file, "{}", columns.header())?;
        self.metrics = Some((file, columns));
        Ok(())
    }

    /// Appends one row to `metrics.csv` and flushes it, so it survives a crash after it.
    pub fn append(&mut self, row: &MetricRow) -> Result<()> {
        let Some((file, columns)) = &mut self.metrics else {
            bail!("metrics.csv: a row was written before the columns were declared");
        };
        let line = columns.line(row)?;
        writeln!(file, "{line}").context("cannot append to metrics.csv")?;
        file.flush().context("cannot flush metrics.csv")?;
        Ok(())
    }

    /// Seals the run with the `status` its summary gives: a `completed` run through
    /// [`RunFolder::seal`]; any other (`failed`, `interrupted`) never replaces an earlier run of
    /// its name, which [`Existing::Replace`] would otherwise do, but goes beside that run as
    /// `<dir>.<status>` (`-2`, `-3`, … if taken). Returns where it went.
    pub fn seal_as(mut self, summary: &impl Serialize, status: &str) -> Result<PathBuf> {
        if status != "completed" && self.done.exists() {
            self.done = beside(&self.done, status);
        }
        self.seal(summary)
    }

    /// Writes `summary.json`, makes every file durable and renames the folder into place
    /// (replacing an earlier run of that name if [`Existing::Replace`] was asked for).
    pub fn seal(mut self, summary: &impl Serialize) -> Result<PathBuf> {
        self.write_json("summary.json", summary)?;
        self.metrics = None;
        sync_tree(&self.partial)?;
        self.move_into_place()?;
        // The rename itself, in the folder that holds the run (`.` for a bare `--out NAME`,
        // whose parent is the empty path).
        sync_parent(&self.done);
        Ok(self.done.clone())
    }

    /// Renames the folder into place. The run it replaces is moved aside, and deleted only
    /// once this one is in its place (and put back if that fails), so that a failed rename
    /// loses neither.
    fn move_into_place(&self) -> Result<()> {
        // A run that was not to replace anything never replaces what appeared under its name
        // while it ran: it is sealed beside it, as `<dir>.completed` (`-2`, … if taken), not
        // left in `.partial`, where it would pass for a killed run's files.
        if self.existing == Existing::Refuse && self.done.exists() {
            let beside = beside(&self.done, "completed");
            fs::rename(&self.partial, &beside).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    self.partial.display(),
                    beside.display()
                )
            })?;
            sync_parent(&beside);
            bail!(
                "{} appeared while this run was going (it did not exist when the run started, and the run was not told to --overwrite); the run is sealed beside it, in {}",
                self.done.display(),
                beside.display()
            );
        }
        let aside = if self.done.exists() {
            let aside = (1..)
                .map(|n| suffixed(&self.done, &format!("{REPLACED}{n}")))
                .find(|candidate| !candidate.exists())
                .expect("an unused name");
            fs::rename(&self.done, &aside)
                .with_context(|| format!("cannot replace {}", self.done.display()))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = fs::rename(&self.partial, &self.done) {
            if let Some(aside) = &aside {
                let _ = fs::rename(aside, &self.done);
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    self.partial.display(),
                    self.done.display()
                )
            });
        }
        if let Some(aside) = aside {
            fs::remove_dir_all(&aside).with_context(|| {
                format!(
                    "the run is in {}, but the one it replaced is left in {}",
                    self.done.display(),
                    aside.display()
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as gradgym writes one (it names gradgym's version).
    const OLD: &str = r#"{"gradgym_version": "old"}"#;

    /// --overwrite reads the manifest: another program's `manifest.json` (a web app's, or not
    /// JSON at all) is no run's, and a run replaces only a folder of its own kind.
    #[test]
    fn overwrite_replaces_only_gradgyms_folders_of_the_same_kind() {
        let dir = scratch("kinds");
        for (name, manifest) in [
            ("webapp", r#"{"name": "My app", "start_url": "/"}"#),
            ("not-json", "not json"),
        ] {
            let d = dir.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("manifest.json"), manifest).unwrap();
            fs::write(d.join("index.html"), "keep").unwrap();
            let e = RunFolder::create(&d, Existing::Replace).unwrap_err();
            assert!(e.to_string().contains("not a gradgym run folder"), "{e}");
            assert!(d.join("index.html").exists() && !partial_path(&d).exists());
        }
        let study = dir.join("study");
        fs::create_dir_all(&study).unwrap();
        fs::write(
            study.join("manifest.json"),
            r#"{"command": "gradgym estimators", "gradgym_version": "0"}"#,
        )
        .unwrap();
        let rlhf = dir.join("rlhf");
        fs::create_dir_all(&rlhf).unwrap();
        fs::write(
            rlhf.join("manifest.json"),
            r#"{"kind": "rlhf", "gradgym_version": "0"}"#,
        )
        .unwrap();
        let run = dir.join("run");
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join("manifest.json"), OLD).unwrap();
        assert_eq!(folder_kind(&study), Some(FolderKind::Estimators));
        assert_eq!(folder_kind(&rlhf), Some(FolderKind::Rlhf));
        assert_eq!(folder_kind(&run), Some(FolderKind::Run));
        let e = RunFolder::create(&study, Existing::Replace).unwrap_err();
        assert!(
            e.to_string().contains("holds a gradgym estimators study")
                && e.to_string().contains("replaces only a training run"),
            "{e}"
        );
        let e = RunFolder::create_as(&run, Existing::Replace, FolderKind::Estimators).unwrap_err();
        assert!(e.to_string().contains("holds a training run"), "{e}");
        let e = RunFolder::create_as(&run, Existing::Replace, FolderKind::Rlhf).unwrap_err();
        assert!(
            e.to_string().contains("replaces only a gradgym rlhf run"),
            "{e}"
        );
        for d in [&study, &rlhf, &run] {
            assert!(d.join("manifest.json").exists() && !partial_path(d).exists());
        }
        // Its own kind it replaces.
        RunFolder::create_as(&rlhf, Existing::Replace, FolderKind::Rlhf)
            .unwrap()
            .seal(&serde_json::json!({}))
            .unwrap();
        assert!(rlhf.join("summary.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
    use crate::metrics::Cell;

    fn scratch(name: &str) -> crate::scratch::Scratch {
        crate::scratch::Scratch::new("runfolder", name)
    }

    #[test]
    fn a_run_is_written_in_partial_and_sealed_whole() {
        let dir = scratch("seal");
        let mut run = RunFolder::create(&dir, Existing::Refuse).unwrap();
        assert_eq!(run.path(), partial_path(&dir));
        run.write_json(
            "manifest.json",
            &serde_json::json!({"seed": 1, "gradgym_version": "0"}),
        )
        .unwrap();
        run.start_metrics(Columns::new(["iteration", "loss"]))
            .unwrap();
        let mut row = MetricRow::new();
        row.set("iteration", 1u64).set("loss", Cell::Missing);
        run.append(&row).unwrap();
        assert!(!dir.exists(), "not visible under its name before sealing");
        // Rows are on disk as soon as they are appended.
        let text = fs::read_to_string(run.path().join("metrics.csv")).unwrap();
        assert_eq!(text, "iteration,loss\n1,\n");
        run.seal(&serde_json::json!({"status": "completed"}))
            .unwrap();
        assert!(dir.join("summary.json").exists() && !partial_path(&dir).exists());
        for f in ["manifest.json", "metrics.csv"] {
            assert!(dir.join(f).exists(), "{f}");
        }
    }

    /// A run still going holds its `.partial` folder: another run of that name, even with
    /// --overwrite, refuses it instead of deleting it under the first; and a run that was not
    /// to replace anything keeps itself whole if its name is taken meanwhile.
    #[test]
    fn a_run_still_going_is_never_replaced() {
        let dir = scratch("live");
        let first = RunFolder::create(&dir, Existing::Refuse).unwrap();
        first
            .write_json(
                "manifest.json",
                &serde_json::json!({"seed": 1, "gradgym_version": "0"}),
            )
            .unwrap();
        for existing in [Existing::Replace, Existing::Refuse] {
            let e = RunFolder::create(&dir, existing).unwrap_err().to_string();
            assert!(
                e.contains("being written by another gradgym process"),
                "{e}"
            );
        }
        assert!(first.path().join("manifest.json").is_file());
        // The name taken while it ran (by hand, here): sealing leaves it and the run apart.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("theirs.txt"), "theirs").unwrap();
        let e = first
            .seal(&serde_json::json!({"status": "completed"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("appeared while this run was going"), "{e}");
        assert!(dir.join("theirs.txt").is_file());
        let beside = suffixed(&dir, ".completed");
        assert!(e.contains(&beside.display().to_string()), "{e}");
        assert!(beside.join("summary.json").is_file() && beside.join("manifest.json").is_file());
        assert!(!partial_path(&dir).exists());
        // A dangling link in the `.partial` name is not called another process's run.
        let _ = fs::remove_dir_all(&beside);
        fs::remove_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(dir.with_extension("nowhere"), partial_path(&dir)).unwrap();
        let e = RunFolder::create(&dir, Existing::Replace);
        fs::remove_file(partial_path(&dir)).unwrap();
        let e = e.unwrap_err().to_string();
        assert!(e.contains("is not a folder"), "{e}");
        // Once that process's lock is gone (here: the run dropped), --overwrite takes it.
        let again = RunFolder::create(&dir, Existing::Replace).unwrap();
        again.seal(&serde_json::json!({})).unwrap();
        assert!(dir.join("summary.json").is_file());
    }

    #[test]
    fn an_existing_run_is_refused_or_replaced_as_asked() {
        let dir = scratch("exists");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep.txt"), "old").unwrap();
        // Not a run folder: --overwrite does not touch it either.
        let e = RunFolder::create(&dir, Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("not a gradgym run folder"), "{e}");
        assert!(dir.join("keep.txt").exists() && !partial_path(&dir).exists());
        fs::write(dir.join("manifest.json"), OLD).unwrap();
        let e = RunFolder::create(&dir, Existing::Refuse).unwrap_err();
        assert!(
            e.to_string().contains("already exists") && e.to_string().contains("--overwrite"),
            "{e}"
        );
        assert!(dir.join("keep.txt").exists(), "a refusal touches nothing");
        let run = RunFolder::create(&dir, Existing::Replace).unwrap();
        assert!(
            dir.join("keep.txt").exists(),
            "the old run stays until the new one is sealed"
        );
        run.seal(&serde_json::json!({})).unwrap();
        assert!(!dir.join("keep.txt").exists() && dir.join("summary.json").exists());
        // A file is called one: --overwrite, which the plain refusal suggested, refuses it too.
        let file = scratch("exists-file");
        fs::write(&file, "not a folder").unwrap();
        let e = RunFolder::create(&file, Existing::Refuse).unwrap_err();
        assert!(e.to_string().contains("is a file, not a folder"), "{e}");
        assert!(!e.to_string().contains("--overwrite"), "{e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "not a folder");
    }

    /// `--out .` from inside a run folder, or `run/.`, `run/sub/..`: the folder itself, not a
    /// `.partial` inside it (which replacing the folder used to delete with the run).
    #[test]
    fn an_out_path_ending_in_a_dot_is_the_folder_it_names() {
        let dir = scratch("dot");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("manifest.json"), OLD).unwrap();
        for (n, out) in [
            dir.join("."),
            dir.join("sub").join(".."),
            dir.join("sub/../."),
        ]
        .into_iter()
        .enumerate()
        {
            fs::create_dir_all(dir.join("sub")).unwrap();
            let run = RunFolder::create(&out, Existing::Replace).unwrap();
            assert_eq!(
                run.path(),
                fs::canonicalize(&dir).unwrap().with_extension("partial"),
                "{}",
                out.display()
            );
            run.write_json(
                "manifest.json",
                &serde_json::json!({"n": n, "gradgym_version": "0"}),
            )
            .unwrap();
            let sealed = run.seal(&serde_json::json!({})).unwrap();
            assert_eq!(sealed, fs::canonicalize(&dir).unwrap());
            let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
            assert!(manifest.contains(&format!("\"n\": {n}")), "{manifest}");
            assert!(!partial_path(&dir).exists());
        }
        let e = RunFolder::create(Path::new("/"), Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("names no folder"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A sweep's folder has a manifest.json, but is never replaced by one run.
    #[test]
    fn overwrite_never_replaces_a_sweeps_folder() {
        let dir = scratch("sweep");
        fs::create_dir_all(dir.join("runs/a")).unwrap();
        fs::write(
            dir.join("manifest.json"),
            r#"{"name": "s", "sweep": {}, "shard": "1/1"}"#,
        )
        .unwrap();
        let e = RunFolder::create(&dir, Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("is a sweep's results folder"), "{e}");
        // Known by its files too (a manifest of another form).
        fs::write(dir.join("manifest.json"), OLD).unwrap();
        fs::write(dir.join("summary.csv"), "run\n").unwrap();
        assert!(RunFolder::create(&dir, Existing::Replace).is_err());
        assert!(dir.join("runs/a").is_dir() && !partial_path(&dir).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// `--out link/` for a link to a run folder: the link is replaced, as `--out link` does
    /// (the trailing `/` used to make the rename fail after the whole run), and its target is
    /// left alone.
    #[test]
    fn a_trailing_slash_names_the_link_not_its_target() {
        let dir = scratch("link");
        let target = dir.join("target");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("manifest.json"), OLD).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut slash = link.clone().into_os_string();
        slash.push("/");
        let run = RunFolder::create(Path::new(&slash), Existing::Replace).unwrap();
        assert_eq!(run.path(), dir.join("link.partial"));
        run.write_json(
            "manifest.json",
            &serde_json::json!({"new": true, "gradgym_version": "0"}),
        )
        .unwrap();
        run.seal(&serde_json::json!({})).unwrap();
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            fs::read_to_string(link.join("manifest.json"))
                .unwrap()
                .contains("new")
        );
        assert_eq!(
            fs::read_to_string(target.join("manifest.json")).unwrap(),
            OLD
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Replacing a run moves it aside until the new one is in place: a failed rename puts it
    /// back.
    #[test]
    fn a_failed_rename_keeps_the_run_it_was_to_replace() {
        let dir = scratch("aside");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("manifest.json"), OLD).unwrap();
        let run = RunFolder::create(&dir, Existing::Replace).unwrap();
        // The new run's folder vanishes before it is moved into place (so its rename fails).
        fs::remove_dir_all(run.path()).unwrap();
        let e = run.move_into_place().unwrap_err();
        assert!(e.to_string().contains("cannot rename"), "{e}");
        assert_eq!(fs::read_to_string(dir.join("manifest.json")).unwrap(), OLD);
        assert!(!suffixed(&dir, ".replaced-1").exists());
        assert!(is_replaced_name("run.replaced-1") && !is_replaced_name("run.replaced-"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_killed_runs_partial_folder_is_kept_unless_overwrite_is_asked() {
        let dir = scratch("stale");
        let partial = partial_path(&dir);
        fs::create_dir_all(&partial).unwrap();
        fs::write(partial.join("manifest.json"), OLD).unwrap();
        fs::write(partial.join("metrics.csv"), "iteration\n1\n").unwrap();
        let e = RunFolder::create(&dir, Existing::Refuse).unwrap_err();
        assert!(
            e.to_string().contains(".partial") && e.to_string().contains("--overwrite"),
            "{e}"
        );
        assert!(
            partial.join("metrics.csv").exists(),
            "a refusal touches nothing"
        );
        let run = RunFolder::create(&dir, Existing::Replace).unwrap();
        assert!(
            !run.path().join("metrics.csv").exists(),
            "replaced when asked"
        );
        // Killed while its manifest was being written: still a run's folder.
        drop(run);
        fs::write(partial.join("manifest.json.tmp"), "{").unwrap();
        fs::write(partial.join("metrics.csv"), "iteration\n").unwrap();
        let run = RunFolder::create(&dir, Existing::Replace).unwrap();
        assert!(!run.path().join("manifest.json.tmp").exists());
    }

    /// The temporary file of an atomic write is the file's whole name and `.tmp`: a user's
    /// `notes.tmp` beside `notes.csv` is not touched, and a failed rename leaves nothing.
    #[test]
    fn atomic_writes_use_their_own_temporary_name() {
        let dir = scratch("atomic");
        fs::create_dir_all(dir.join("taken")).unwrap();
        fs::write(dir.join("notes.tmp"), "mine").unwrap();
        write_atomic(&dir.join("notes.csv"), b"a\n").unwrap();
        assert_eq!(fs::read_to_string(dir.join("notes.tmp")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(dir.join("notes.csv")).unwrap(), "a\n");
        fs::write(dir.join("taken/x"), "").unwrap();
        assert!(write_atomic(&dir.join("taken"), b"b").is_err());
        assert!(!dir.join("taken.tmp").exists());
    }

    #[test]
    fn overwrite_never_removes_a_partial_named_folder_of_other_files() {
        let dir = scratch("notes");
        let partial = partial_path(&dir);
        fs::create_dir_all(&partial).unwrap();
        fs::write(partial.join("notes.txt"), "mine").unwrap();
        // Without --overwrite too: it is not called a killed run's, which --overwrite would
        // then refuse to replace.
        for existing in [Existing::Refuse, Existing::Replace] {
            let e = RunFolder::create(&dir, existing).unwrap_err();
            assert!(
                e.to_string()
                    .contains("not the folder of an unfinished gradgym run"),
                "{existing:?}: {e}"
            );
        }
        assert!(
            partial.join("notes.txt").exists(),
            "the user's file is kept"
        );
        assert!(!dir.exists(), "nothing is created");
        // A plain file of that name is refused in the same words.
        fs::remove_dir_all(&partial).unwrap();
        fs::write(&partial, "a file").unwrap();
        let e = RunFolder::create(&dir, Existing::Replace).unwrap_err();
        assert!(
            e.to_string()
                .contains("not the folder of an unfinished gradgym run"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&partial).unwrap(), "a file");
        let _ = fs::remove_file(&partial);
    }

    #[test]
    fn an_input_inside_the_folder_a_run_would_replace_is_refused() {
        let dir = scratch("inputs");
        fs::create_dir_all(dir.join("sft")).unwrap();
        let inside = dir.join("sft");
        let outside = std::env::temp_dir();
        let e = refuse_inputs_inside(&dir, &[("--rm", &outside), ("--sft", &inside)]).unwrap_err();
        assert!(e.to_string().contains("--sft"), "{e}");
        refuse_inputs_inside(&dir, &[("--rm", &outside)]).unwrap();
        // Through a `..` too.
        let roundabout = dir.join("sft/../sft");
        assert!(refuse_inputs_inside(&dir, &[("--sft", &roundabout)]).is_err());
        // And inside the `.partial` folder that --overwrite would remove.
        let stale = dir.with_file_name(format!(
            "{}-gone",
            dir.file_name().unwrap().to_str().unwrap()
        ));
        fs::create_dir_all(partial_path(&stale).join("sft")).unwrap();
        assert!(
            refuse_inputs_inside(&stale, &[("--sft", &partial_path(&stale).join("sft"))]).is_err()
        );
        fs::remove_dir_all(partial_path(&stale)).ok();
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unfinished_run_never_replaces_an_earlier_one() {
        let dir = scratch("unfinished");
        let first = RunFolder::create(&dir, Existing::Refuse).unwrap();
        first
            .write_json(
                "manifest.json",
                &serde_json::json!({"gradgym_version": "0"}),
            )
            .unwrap();
        first
            .seal(&serde_json::json!({"status": "completed"}))
            .unwrap();
        for expect in ["failed", "failed-2"] {
            let run = RunFolder::create(&dir, Existing::Replace).unwrap();
            let at = run
                .seal_as(&serde_json::json!({"status": "failed"}), "failed")
                .unwrap();
            let name = format!("{}.{expect}", dir.file_name().unwrap().to_str().unwrap());
            assert_eq!(at, dir.with_file_name(name));
            assert!(at.join("summary.json").is_file());
        }
        let kept = fs::read_to_string(dir.join("summary.json")).unwrap();
        assert!(kept.contains("completed"), "{kept}");
        // With no earlier run, it takes its own name.
        let fresh = scratch("unfinished-fresh");
        let at = RunFolder::create(&fresh, Existing::Refuse)
            .unwrap()
            .seal_as(&serde_json::json!({}), "interrupted")
            .unwrap();
        assert_eq!(&at, fresh.path());
    }

    #[test]
    fn an_undeclared_metric_is_an_error() {
        let dir = scratch("undeclared");
        let mut run = RunFolder::create(&dir, Existing::Refuse).unwrap();
        let mut row = MetricRow::new();
        row.set("x", 1u64);
        assert!(run.append(&row).is_err(), "no columns yet");
        run.start_metrics(Columns::new(["y"])).unwrap();
        assert!(run.append(&row).unwrap_err().to_string().contains("`x`"));
    }
}
