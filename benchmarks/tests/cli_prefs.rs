//! `gradgym prefs` end to end: the run folder (metrics columns, labels.csv, manifest), byte-
//! identical interleaved runs alone and inside a `--jobs 2` sweep, async mode recorded as such,
//! and bad input refused with exit 2 naming the field.

mod common;

use std::fs;
use std::path::Path;

use common::{gradgym, text, without};

fn scratch(name: &str) -> common::Scratch {
    common::scratch("cli-prefs", name)
}

/// A tiny preference run: 12 PPO rollouts of 512 steps, 40 labels on 10-step segments.
const SMALL: &[&str] = &[
    "--env",
    "FixedHorizonCartPole-v0",
    "--algo",
    "ppo",
    "--labels",
    "40",
    "--segment-length",
    "10",
    "--total-timesteps",
    "6144",
    "--eval-episodes",
    "1",
    "--quiet",
];

fn prefs(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["prefs"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    gradgym(&args)
}

const TIMING: &[&str] = &["SPS", "wall_seconds"];

/// `gradgym prefs` on `env` for 4,096 steps with one evaluation episode, quiet, into `out`,
/// with `extra` flags.
fn short_run(env: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["prefs", "--env", env, "--total-timesteps", "4096"];
    args.extend_from_slice(&["--eval-episodes", "1", "--quiet"]);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    gradgym(&args)
}

#[test]
fn a_prefs_run_writes_labels_and_the_extra_columns_and_repeats_itself_alone_and_in_a_sweep() {
    let a = scratch("a");
    let o = prefs(&a, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let header = fs::read_to_string(a.join("metrics.csv")).unwrap();
    let header = header.lines().next().unwrap();
    for c in [
        "episodic_return",
        "labels_used",
        "learned_episodic_return",
        "rm_accuracy",
        "reward_pearson",
        "reward_spearman",
    ] {
        assert!(header.split(',').any(|h| h == c), "{c} in {header}");
    }
    let labels = fs::read_to_string(a.join("labels.csv")).unwrap();
    let mut lines = labels.lines();
    assert_eq!(
        lines.next().unwrap(),
        "label,iteration,global_step,return_0,return_1,mu_0,mu_1,choice,probability,random,query_score"
    );
    assert_eq!(lines.count(), 40, "one row per label of the budget");
    let manifest = fs::read_to_string(a.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"prefs_mode\": \"interleaved\""),
        "{manifest}"
    );
    assert!(manifest.contains("\"reproducible\": true"), "{manifest}");

    // The same command again: byte-identical metrics (timing aside) and labels.
    let b = scratch("b");
    assert!(prefs(&b, &[]).status.success());
    assert_eq!(
        without(&a.join("metrics.csv"), TIMING),
        without(&b.join("metrics.csv"), TIMING)
    );
    assert_eq!(labels, fs::read_to_string(b.join("labels.csv")).unwrap());

    // Inside a sweep with --jobs 2, beside another seed and another budget.
    let dir = scratch("sweep");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prefs.toml");
    fs::write(
        &file,
        r#"
seeds = [1, 2]
config = { total_timesteps = 6144, eval_episodes = 1, prefs = { segment_length = 10 } }
[[runs]]
envs = ["FixedHorizonCartPole-v0"]
algos = ["ppo"]
grid = { "prefs.labels" = [40, 20] }
"#,
    )
    .unwrap();
    let out = dir.join("out");
    let o = gradgym(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let run = out.join("runs/FixedHorizonCartPole-v0__ppo__prefs.labels=40__seed1");
    assert_eq!(
        without(&a.join("metrics.csv"), TIMING),
        without(&run.join("metrics.csv"), TIMING)
    );
    assert_eq!(labels, fs::read_to_string(run.join("labels.csv")).unwrap());
    // report and plot read it as any sweep.
    let o = gradgym(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("prefs.labels=20"), "{}", text(&o));
    let o = gradgym(&["plot", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn async_mode_runs_and_the_manifest_says_it_is_not_reproducible() {
    let a = scratch("async");
    let o = prefs(&a, &["--mode", "async"]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest = fs::read_to_string(a.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"prefs_mode\": \"async\""), "{manifest}");
    assert!(manifest.contains("\"reproducible\": false"), "{manifest}");
    let labels = fs::read_to_string(a.join("labels.csv")).unwrap();
    assert_eq!(
        labels.lines().count(),
        41,
        "every label answered and written"
    );
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let dir = scratch("bad");
    fs::create_dir_all(&dir).unwrap();
    let cases: [(&[&str], &str, &str); 17] = [
        (&["--labels", "0"], "prefs.labels", "at least 1"),
        (
            &["--segment-length", "600"],
            "prefs.segment_length",
            "horizon is 500",
        ),
        (
            &["--query", "entropy"],
            "prefs.query",
            "unknown query strategy `entropy`",
        ),
        (&["--mode", "threads"], "prefs.mode", "unknown mode"),
        (
            &["--prefs", "{ temperature = -1.0 }"],
            "prefs.temperature",
            "≥ 0",
        ),
        (
            &["--prefs", "{ num_segments = 1 }"],
            "prefs.num_segments",
            "K = 1",
        ),
        // More segments per query than the rollouts hold starts for (4 envs × 119 starts of a
        // 10-step segment in 128 steps), and a segment longer than the whole run's steps per
        // env (before: trained to the end, then exit 1 blaming short episodes).
        (
            &["--prefs", "{ num_segments = 1000 }"],
            "prefs.num_segments",
            "hold at most 476 (4 envs × 119 starts",
        ),
        (
            &["--segment-length", "500", "--total-timesteps", "1024"],
            "prefs.segment_length",
            "longer than the 256 steps per env the whole run collects",
        ),
        // Sizes that would overflow an allocation (before: a capacity-overflow panic).
        (
            &["--prefs", "{ ensemble = 9223372036854775807 }"],
            "prefs.ensemble",
            "more than gradgym allows",
        ),
        (
            &["--prefs", "{ oversample = 9223372036854775807 }"],
            "prefs.oversample",
            "more than gradgym allows",
        ),
        // Each width within its cap, their product not (before: an abort, exit 134).
        (
            &["--prefs", "{ hidden_sizes = [16777216, 16777216] }"],
            "prefs.hidden_sizes",
            "more than gradgym allows",
        ),
        // Each member within the cap, the ensemble not.
        (
            &[
                "--prefs",
                "{ hidden_sizes = [32768, 32767], ensemble = 300000 }",
            ],
            "prefs.ensemble",
            "in each of 300000 networks",
        ),
        // One member has no disagreement to rank queries by (before: random queries, called
        // `disagreement` in the manifest).
        (
            &["--prefs", "{ ensemble = 1 }"],
            "prefs.ensemble",
            "which one member does not have",
        ),
        // L2 outside what its adaptation keeps (before: reset to 1 after the first fit, and
        // 0 raised to 10⁻⁸); a reward scale whose float32 returns overflow (before: a NaN
        // loss, exit 1, naming no field).
        (
            &["--prefs", "{ l2 = 5.0 }"],
            "prefs.l2",
            "must be 0 (no L2) or in",
        ),
        (
            &["--prefs", "{ l2 = 1e-12 }"],
            "prefs.l2",
            "must be 0 (no L2) or in",
        ),
        (
            &["--prefs", "{ reward_std = 1e300 }"],
            "prefs.reward_std",
            "must be in (0, 1e6]",
        ),
        // A label store past the machine's memory (before: accepted, then killed or an
        // abort mid-run with no summary): about 16.7M labels × 2 × 500 rows × 6 floats.
        (
            &["--labels", "16777216", "--segment-length", "500"],
            "prefs.labels",
            "of memory",
        ),
    ];
    for (i, (extra, field, message)) in cases.iter().enumerate() {
        let out = dir.join(format!("run{i}"));
        let mut args = vec!["prefs", "--env", "FixedHorizonCartPole-v0", "--quiet"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let o = gradgym(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {t}");
        assert!(t.contains(field) && t.contains(message), "{extra:?}: {t}");
        assert!(!out.exists(), "{extra:?}: nothing is written");
    }
    // The same fields from a config file.
    let file = dir.join("bad.toml");
    fs::write(&file, "[prefs]\nlabels = 10\ntemperature = -0.5\n").unwrap();
    let o = gradgym(&[
        "prefs",
        "--env",
        "FixedHorizonCartPole-v0",
        "--config",
        file.to_str().unwrap(),
        "--out",
        dir.join("f").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("prefs.temperature"), "{}", text(&o));
    // An unknown key in the table is named too.
    fs::write(&file, "[prefs]\nlabel = 10\n").unwrap();
    let o = gradgym(&[
        "prefs",
        "--env",
        "FixedHorizonCartPole-v0",
        "--config",
        file.to_str().unwrap(),
        "--out",
        dir.join("g").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("label"), "{}", text(&o));
}

/// CartPole-v1 pays 1 on every step, so every pair of equal-length segments ties: the run
/// completes (it may be meant to show what episode ends alone teach) and says so, where it
/// used to say nothing while the reward model learned that all segments are alike.
#[test]
fn a_run_whose_every_label_is_a_tie_completes_with_a_warning() {
    let dir = scratch("all-ties");
    let out = dir.join("run");
    let o = short_run("CartPole-v1", &out, &["--labels", "40"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warning: all 40 labels were ties"),
        "{}",
        text(&o)
    );
    let labels = fs::read_to_string(out.join("labels.csv")).unwrap();
    assert_eq!(
        labels
            .lines()
            .skip(1)
            .filter(|l| l.contains(",tie,"))
            .count(),
        40
    );
    // Under ε some answers are coin flips, not ties; the returns still never differed.
    let noisy = dir.join("noisy");
    let o = short_run(
        "CartPole-v1",
        &noisy,
        &["--labels", "40", "--prefs", "{ epsilon = 0.5 }"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let labels = fs::read_to_string(noisy.join("labels.csv")).unwrap();
    assert!(
        labels.lines().skip(1).any(|l| !l.contains(",tie,")),
        "{labels}"
    );
    assert!(
        text(&o).contains("warning: all 40 labels were ties"),
        "{}",
        text(&o)
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A segment longer than a rollout waits for the rollouts that hold it before the initial
/// batch can be asked (A2C's 8-step rollouts, 180-step segments: 23 of them); those are not
/// counted against the initial batch's patience (20 rollouts), which used to fail the run at
/// iteration 21 blaming episodes (Pendulum's are 200 steps) shorter than a segment.
#[test]
fn a_segment_longer_than_a_rollout_waits_for_the_rollouts_it_spans() {
    let dir = scratch("long-segments");
    let out = dir.join("run");
    let o = short_run(
        "Pendulum-v1",
        &out,
        &["--algo", "a2c", "--segment-length", "180", "--labels", "20"],
    );
    assert!(!text(&o).contains("in 20 rollouts"), "{}", text(&o));
    let labels = fs::read_to_string(out.join("labels.csv")).unwrap();
    assert!(
        labels
            .lines()
            .nth(1)
            .is_some_and(|l| l.split(',').nth(1) == Some("23")),
        "{labels}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A run whose later rollouts hold no segment within one episode leaves labels due there
/// unasked. It used to end `completed` with a quarter of its budget, which a sweep then placed
/// at the whole budget: it fails (exit 1), saying how many were asked, its iterations, its
/// labels and its policy kept.
#[test]
fn a_run_that_asked_part_of_its_label_budget_fails_saying_how_much() {
    let dir = scratch("short-labels");
    let out = dir.join("run");
    let o = short_run(
        "CartPole-v1",
        &out,
        &[
            "--labels",
            "200",
            "--segment-length",
            "60",
            "--prefs",
            "{ initial_fit_steps = 5, fit_steps = 2 }",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("only 50 of the 200 labels of `prefs.labels` were asked")
            && text(&o).contains("lower prefs.segment_length"),
        "{}",
        text(&o)
    );
    let labels = fs::read_to_string(out.join("labels.csv")).unwrap();
    assert_eq!(labels.lines().count(), 51, "{labels}");
    let summary = common::summary(&out);
    assert_eq!(summary["status"], "failed");
    assert!(out.join("policy.safetensors").exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// A run whose segments never fit within one episode asks no label; one that ends before the
/// preference loop gives up used to be sealed `completed`, its policy trained on a reward
/// model that never saw a label. It fails (exit 1), saying why, its iterations kept.
#[test]
fn a_run_that_asked_no_label_fails_saying_why() {
    let dir = scratch("no-labels");
    let out = dir.join("run");
    let o = short_run("CartPole-v1", &out, &["--segment-length", "200"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no preference label was asked in the whole run")
            && text(&o).contains("prefs.segment_length"),
        "{}",
        text(&o)
    );
    let summary = common::summary(&out);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["iterations"], 8);
    fs::remove_dir_all(&dir).unwrap();
}
