//! `gradgym envs …` end to end: exit codes and what the user reads.

mod common;

use common::{gradgym, text};

use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gymnasium-classic-control-transitions.csv")
}

/// A scratch file unique to this test process, removed when the test passes.
fn scratch(name: &str, contents: &str) -> common::Scratch {
    let path = common::scratch("cli-envs", name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn list_prints_every_env() {
    let o = gradgym(&["envs", "list"]);
    assert!(o.status.success());
    let t = text(&o);
    for id in gradgym_envs::ENV_IDS {
        assert!(t.contains(id), "{t}");
    }
    assert!(
        t.contains("Discrete(2)") && t.contains("Box(-2, 2, (1,))"),
        "{t}"
    );
}

#[test]
fn check_passes_on_the_gymnasium_fixture() {
    let o = gradgym(&["envs", "check", fixture().to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("all 7307 rows within tolerance"), "{t}");
    for (id, rows) in [
        ("CartPole-v1", 423),
        ("Acrobot-v1", 1787),
        ("MountainCar-v0", 900),
        ("MountainCarContinuous-v0", 3297),
        ("Pendulum-v1", 900),
    ] {
        let line = t
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} row in {t}"));
        assert!(
            line.contains(&rows.to_string()) && line.ends_with("ok"),
            "{line}"
        );
    }
}

#[test]
fn check_fails_on_a_wrong_transition_and_names_its_line() {
    let original = std::fs::read_to_string(fixture()).unwrap();
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    // Line 101 of the file (index 100): change its reward by 0.5.
    let header: Vec<&str> = lines[0].split(',').collect();
    let reward = header.iter().position(|h| *h == "reward").unwrap();
    let mut fields: Vec<String> = lines[100].split(',').map(String::from).collect();
    let value: f64 = fields[reward].parse().unwrap();
    fields[reward] = (value + 0.5).to_string();
    lines[100] = fields.join(",");
    let path = scratch("corrupted.csv", &lines.join("\n"));

    let o = gradgym(&["envs", "check", path.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL"), "{t}");
    assert!(
        t.contains(&format!("corrupted.csv:101 {}: reward", fields[0])),
        "{t}"
    );
}

#[test]
fn check_reports_malformed_files_with_line_and_column() {
    let original = std::fs::read_to_string(fixture()).unwrap();
    let mut lines: Vec<&str> = original.lines().take(30).collect();
    let broken = lines[12].replacen("0", "O", 1);
    lines[12] = &broken;
    let path = scratch("malformed.csv", &lines.join("\n"));
    let o = gradgym(&["envs", "check", path.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("line 13, column `"), "{t}");

    // A tolerance that is not a finite number ≥ 0: a NaN passed every row.
    for tol in ["NaN", "inf", "-1"] {
        let o = gradgym(&[
            "envs",
            "check",
            fixture().to_str().unwrap(),
            &format!("--state-tol={tol}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{tol}: {}", text(&o));
        assert!(
            text(&o).contains("must be a finite number ≥ 0"),
            "{}",
            text(&o)
        );
    }

    // A value in a column the row's env does not use (Pendulum's state has 2 entries) is
    // named; it used to be passed over.
    let pendulum = original
        .lines()
        .position(|l| l.starts_with("Pendulum-v1,"))
        .unwrap();
    let mut rows: Vec<String> = original.lines().map(String::from).collect();
    let header: Vec<&str> = rows[0].split(',').collect();
    let state_3 = header.iter().position(|h| *h == "state_3").unwrap();
    let mut fields: Vec<String> = rows[pendulum].split(',').map(String::from).collect();
    assert_eq!(fields[state_3], "");
    fields[state_3] = "0.5".into();
    rows[pendulum] = fields.join(",");
    let path = scratch("unused-column.csv", &rows.join("\n"));
    let o = gradgym(&["envs", "check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("line {}, column `state_3`", pendulum + 1))
            && text(&o).contains("Pendulum-v1's state has 2 entries"),
        "{}",
        text(&o)
    );
    // A byte-order mark before the header reads as the file without it.
    let path = scratch("bom.csv", &format!("\u{feff}{original}"));
    let o = gradgym(&["envs", "check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let missing = path.with_file_name("does-not-exist.csv");
    let o = gradgym(&["envs", "check", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("does-not-exist.csv"));
}

#[test]
fn bench_prints_a_rate_and_rejects_unknown_envs() {
    let o = gradgym(&[
        "envs",
        "bench",
        "--env",
        "MountainCar-v0",
        "--num-envs",
        "100",
        "--seconds",
        "0.2",
        "--threads",
        "2",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("M env-steps/s") && t.contains("100 envs, 2 thread(s)"),
        "{t}"
    );

    // Threads are named by their flag, and not more than the envs they step (a thousand
    // threads on 8 envs were started); by default not more than the envs either.
    let bench = |extra: &[&str]| {
        let mut args = vec!["envs", "bench", "--env", "CartPole-v1", "--seconds", "0.2"];
        args.extend_from_slice(extra);
        gradgym(&args)
    };
    for (args, says) in [
        (&["--threads", "0"][..], "--threads 0: give at least 1"),
        (
            &["--threads", "9", "--num-envs", "8"][..],
            "--threads 9: more than --num-envs 8",
        ),
    ] {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{}", text(&o));
    }
    let o = bench(&["--num-envs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 envs, 1 thread(s)"), "{}", text(&o));

    // A batch past the cap is refused, not allocated (it aborted with exit 134).
    let o = gradgym(&[
        "envs",
        "bench",
        "--env",
        "CartPole-v1",
        "--num-envs",
        "100000000000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--num-envs 100000000000: give 1 to 16777216"),
        "{}",
        text(&o)
    );

    // A window count past memory (1e10 s aborted on a 320 GB vector, 1e300 panicked).
    for seconds in ["1e10", "1e300", "0", "nan"] {
        let o = gradgym(&[
            "envs",
            "bench",
            "--env",
            "CartPole-v1",
            "--seconds",
            seconds,
        ]);
        assert_eq!(o.status.code(), Some(2), "{seconds}: {}", text(&o));
        assert!(
            text(&o).contains("--seconds must be a positive number of at most 86400"),
            "{seconds}: {}",
            text(&o)
        );
    }

    let o = gradgym(&["envs", "bench", "--env", "Hopper-v5"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        t.contains("unknown env id `Hopper-v5`") && t.contains("CartPole-v1"),
        "{t}"
    );
}

/// Output into a pipe whose reader has gone (`gradgym info | head -1`) ends the program
/// quietly, not with a panic and a backtrace.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .arg("info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end at once: the program loads libtorch before it prints anything.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(
        status.code(),
        Some(101),
        "a panic's exit status; stderr: {err}"
    );
}
