//! Helpers shared by the CLI tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub use gradgym_agents::scratch::Scratch;
use std::process::{Command, Output};

/// Runs the `gradgym` binary built for this test run.
pub fn gradgym(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The `gradgym` binary with SIGINT and SIGTERM at their default dispositions, for a test that
/// signals it: a test run started as a background job inherits SIGINT ignored, which gradgym
/// keeps ignoring (as a background job's should be).
pub fn signalable() -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_gradgym"));
    // SAFETY: `signal` is async-signal-safe, as a pre-exec hook must be.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    command
}

/// Standard output and standard error together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path unique to this test process and `name`, in a folder removed when the test passes.
pub fn scratch(prefix: &str, name: &str) -> Scratch {
    Scratch::new(prefix, name)
}

/// A CSV file's text without the given columns (timing columns differ run to run).
pub fn without(path: &std::path::Path, drop: &[&str]) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !drop.contains(&header[i]))
        .collect();
    std::iter::once(header.join(","))
        .chain(lines.map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| cells[i]).collect::<Vec<_>>().join(",")
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A run folder's `summary.json`, parsed.
pub fn summary(dir: &std::path::Path) -> serde_json::Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `<dir>.partial`, where a run is written until it ends.
pub fn partial(dir: &std::path::Path) -> PathBuf {
    dir.with_file_name(format!(
        "{}.partial",
        dir.file_name().unwrap().to_str().unwrap()
    ))
}

/// Starts `gradgym ARGS` (writing its run to `out`), waits up to `start_within` for
/// `<out>.partial/metrics.csv` to hold `rows` lines, sends it `kill SIGNAL` (`-INT`, `-TERM`),
/// and returns its output once it has ended, which it must within a minute.
pub fn interrupt_after_rows(
    args: &[&str],
    out: &std::path::Path,
    rows: usize,
    start_within: std::time::Duration,
    signal: &str,
) -> Output {
    interrupt_after_rows_checking(args, out, rows, start_within, signal, || {})
}

/// [`interrupt_after_rows`], running `before_signal` (a check of the state the signal must
/// change) once the rows are there and before the signal is sent. `out` is the run's folder,
/// also where a sweep (`--out DIR`) writes one of its runs: `DIR/runs/<run id>`.
pub fn interrupt_after_rows_checking(
    args: &[&str],
    out: &std::path::Path,
    rows: usize,
    start_within: std::time::Duration,
    signal: &str,
    before_signal: impl FnOnce(),
) -> Output {
    use std::time::{Duration, Instant};
    let mut child = signalable()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = partial(out).join("metrics.csv");
    let deadline = Instant::now() + start_within;
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < rows {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the run never wrote {rows} lines of metrics.csv");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    before_signal();
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // A run that ignored the signal would go on for hours: give it a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the run did not stop within a minute of kill {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
