//! `report`, `plot` and `compare` on results folders written by hand: the cases a folder from
//! elsewhere (a CI artifact, a colleague's copy, a damaged download) can hold, each said or
//! refused rather than passed over.

mod common;

use std::fs;
use std::path::Path;

use common::{gradgym, text};

const HEADER: &str = "run_id,env_id,algo,seed,{grid}status,final_return_mean_last100,eval_return_mean,episodes,total_timesteps,iterations,error,wall_seconds";

/// One summary.csv row: (env, algo, seed, grid values, status, final score, eval score).
type Row<'a> = (
    &'a str,
    &'a str,
    u64,
    &'a [&'a str],
    &'a str,
    &'a str,
    &'a str,
);

/// A sweep folder holding only a summary.csv of `rows`; `grid` names the grid's keys.
fn folder(name: &str, grid: &[&str], rows: &[Row<'_>]) -> common::Scratch {
    let dir = common::scratch("results", name);
    fs::create_dir_all(&dir).unwrap();
    let keys: String = grid.iter().map(|k| format!("{k},")).collect();
    let mut csv = HEADER.replace("{grid}", &keys) + "\n";
    for (env, algo, seed, values, status, fin, eval) in rows {
        let mut id = format!("{env}__{algo}");
        for (k, v) in grid.iter().zip(values.iter()) {
            id += &format!("__{k}={v}");
        }
        id += &format!("__seed{seed}");
        let cells: String = values.iter().map(|v| format!("{v},")).collect();
        let error = if *status == "failed" {
            "loss is NaN"
        } else {
            ""
        };
        csv += &format!(
            "{id},{env},{algo},{seed},{cells}{status},{fin},{eval},10,1000,2,{error},1.0\n"
        );
    }
    fs::write(dir.join("summary.csv"), csv).unwrap();
    dir
}

fn seeds<'a>(
    env: &'a str,
    algo: &'a str,
    grid: &'a [&'a str],
    status: &'a str,
    scores: &'a [&'a str],
) -> Vec<Row<'a>> {
    scores
        .iter()
        .enumerate()
        .map(|(i, s)| (env, algo, i as u64 + 1, grid, status, *s, *s))
        .collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn compare_refuses_a_baseline_with_nothing_scored_and_says_where_tolerance_does_not_apply() {
    let scores = ["100", "110", "120", "130", "140"];
    let candidate = folder(
        "cand",
        &[],
        &seeds("FixedHorizonCartPole-v0", "ppo", &[], "completed", &scores),
    );
    // Header only, or no completed run: a gate against it would pass anything.
    let empty = folder("empty", &[], &[]);
    let failed = folder(
        "failed",
        &[],
        &seeds("FixedHorizonCartPole-v0", "ppo", &[], "failed", &["", ""]),
    );
    for baseline in [&empty, &failed] {
        let o = gradgym(&["compare", s(baseline), s(&candidate)]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            stderr(&o).contains(
                "the baseline holds no completed run with a final_return_mean_last100 score"
            ),
            "{}",
            text(&o)
        );
    }
    // FixedHorizonCartPole-v0 has no score range: a tolerance cannot be scaled there, and
    // the gate says so.
    let baseline = folder(
        "base",
        &[],
        &seeds("FixedHorizonCartPole-v0", "ppo", &[], "completed", &scores),
    );
    let o = gradgym(&["compare", s(&baseline), s(&candidate), "--tolerance", "0.5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains(
            "--tolerance 0.5 does not apply on FixedHorizonCartPole-v0: no score range scales it"
        ),
        "{}",
        text(&o)
    );
    let o = gradgym(&["compare", s(&baseline), s(&candidate)]);
    assert!(!stderr(&o).contains("does not apply"), "{}", text(&o));
}

#[test]
fn pooled_folders_must_agree_on_both_scores_of_a_run() {
    let scores = ["100", "110", "120", "130", "140"];
    let a = folder(
        "pool-a",
        &[],
        &seeds("CartPole-v1", "ppo", &[], "completed", &scores),
    );
    let b = folder(
        "pool-b",
        &[],
        &seeds("CartPole-v1", "ppo", &[], "completed", &scores),
    );
    let o = gradgym(&["report", s(&a), s(&b), "--reps", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    // The same run with another evaluation score: refused whichever score is read.
    let csv = fs::read_to_string(b.join("summary.csv")).unwrap();
    fs::write(
        b.join("summary.csv"),
        csv.replacen("completed,100,100,", "completed,100,-999.5,", 1),
    )
    .unwrap();
    for metric in ["final", "eval"] {
        let o = gradgym(&["report", s(&a), s(&b), "--metric", metric, "--reps", "100"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            stderr(&o).contains("CartPole-v1__ppo__seed1 is in both")
                && stderr(&o).contains("with different results"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn what_a_report_cannot_check_or_rests_on_is_said_on_stderr() {
    let few = folder(
        "few",
        &[],
        &seeds(
            "CartPole-v1",
            "ppo",
            &[],
            "completed",
            &["100", "200", "300"],
        ),
    );
    let out = few.join("report-out");
    let o = gradgym(&["report", s(&few), "--reps", "100", "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("note: 1 of 1 cells rest on fewer than 5 completed runs"),
        "{}",
        text(&o)
    );
    // So is a missing one.
    assert!(
        stderr(&o).contains("manifest.json: missing; whether the sweep is complete is not checked"),
        "{}",
        text(&o)
    );
    // A manifest that cannot be parsed is named: what it planned is not checked.
    fs::write(
        few.join("manifest.json"),
        r#"{"name":"quick","runs_in_shard":12"#,
    )
    .unwrap();
    let o = gradgym(&["report", s(&few), "--reps", "100", "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("manifest.json: not valid JSON")
            && stderr(&o).contains("whether the sweep is complete is not checked"),
        "{}",
        text(&o)
    );
    // A train run's folder that lost its metrics.csv is called that, not "not a sweep".
    let run = common::scratch("results", "run-no-metrics");
    fs::create_dir_all(&run).unwrap();
    fs::write(run.join("summary.json"), "{}").unwrap();
    let o = gradgym(&["report", s(&run)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("a run folder (summary.json) without its metrics.csv"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_scaling_plot_leaves_out_a_cell_with_no_scored_run_and_says_so() {
    let mut rows = Vec::new();
    for (lr, status, scores) in [
        ("0.1", "completed", ["100", "110", "120"]),
        ("0.2", "failed", ["", "", ""]),
        ("0.3", "completed", ["300", "310", "320"]),
    ] {
        for (i, sc) in scores.iter().enumerate() {
            let values: &'static [&'static str] = match lr {
                "0.1" => &["0.1"],
                "0.2" => &["0.2"],
                _ => &["0.3"],
            };
            rows.push(("CartPole-v1", "ppo", i as u64 + 1, values, status, *sc, *sc));
        }
    }
    // An env whose every cell failed has no panel; its cells are named all the same.
    for (i, lr) in ["0.1", "0.3"].iter().enumerate() {
        let values: &'static [&'static str] = if *lr == "0.1" { &["0.1"] } else { &["0.3"] };
        rows.push(("Pendulum-v1", "ppo", i as u64 + 1, values, "failed", "", ""));
    }
    let dir = folder("scaling", &["learning_rate"], &rows);
    let out = dir.join("plots");
    let o = gradgym(&["plot", s(&dir), "--reps", "100", "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let svg = fs::read_to_string(out.join("scaling_learning_rate.svg")).unwrap();
    assert!(
        svg.contains(
            "Not drawn, no run scored (failed or unreadable): CartPole-v1 ppo[learning_rate=0.2]; \
             Pendulum-v1 ppo[learning_rate=0.1]; Pendulum-v1 ppo[learning_rate=0.3]."
        ),
        "the note is missing"
    );
    // Results without that grid plotted into the same folder: the scaling figure of the plot
    // before is removed and said, not left beside the new figures as if it were theirs. A
    // file gradgym does not draw in pairs stays.
    fs::write(out.join("scaling_mine.png"), "mine").unwrap();
    fs::write(out.join("notes.svg"), "mine").unwrap();
    // Nor a user's pair under a figure's name, nor one whose name only begins like one.
    for stem in ["scaling_lr_before", "overoptimisation_labels_v1"] {
        for ext in ["png", "svg"] {
            fs::write(out.join(format!("{stem}.{ext}")), "mine").unwrap();
        }
    }
    let plain: Vec<_> = (1..=3)
        .map(|seed| {
            (
                "CartPole-v1",
                "ppo",
                seed,
                &[][..],
                "completed",
                "100",
                "100",
            )
        })
        .collect();
    let other = folder("scaling-none", &[], &plain);
    let o = gradgym(&["plot", s(&other), "--reps", "100", "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    for ext in ["png", "svg"] {
        let stale = out.join(format!("scaling_learning_rate.{ext}"));
        assert!(!stale.exists(), "{} kept", stale.display());
        assert!(
            stderr(&o).contains(&format!("removed {}", stale.display())),
            "{}",
            text(&o)
        );
    }
    assert!(out.join("final_scores.svg").is_file());
    assert_eq!(
        fs::read_to_string(out.join("scaling_mine.png")).unwrap(),
        "mine"
    );
    assert_eq!(fs::read_to_string(out.join("notes.svg")).unwrap(), "mine");
    for stem in ["scaling_lr_before", "overoptimisation_labels_v1"] {
        for ext in ["png", "svg"] {
            let kept = out.join(format!("{stem}.{ext}"));
            assert_eq!(
                fs::read_to_string(&kept).unwrap(),
                "mine",
                "{}",
                kept.display()
            );
        }
    }
}

#[test]
fn estimator_studies_plotted_together_keep_their_own_figures() {
    // The committed study's CSV, and a second study that differs.
    let one = common::scratch("results", "study-1");
    fs::create_dir_all(&one).unwrap();
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/estimators/estimators.csv");
    fs::copy(committed, one.join("estimators.csv")).unwrap();
    let two = common::scratch("results", "study-2");
    fs::create_dir_all(&two).unwrap();
    let csv = fs::read_to_string(one.join("estimators.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let col = header.split(',').position(|h| h == "bias_z").unwrap();
    let shifted: Vec<String> = lines
        .map(|l| {
            let mut c: Vec<String> = l.split(',').map(String::from).collect();
            c[col] = format!("{}", c[col].parse::<f64>().unwrap() + 1.0);
            c.join(",")
        })
        .collect();
    fs::write(
        two.join("estimators.csv"),
        format!("{header}\n{}\n", shifted.join("\n")),
    )
    .unwrap();
    let o = gradgym(&["plot", s(&one), s(&two)]);
    assert!(o.status.success(), "{}", text(&o));
    let bias = |d: &Path| fs::read(d.join("plots/estimator_bias.svg")).unwrap();
    assert_ne!(
        bias(&one),
        bias(&two),
        "one study's figure drawn over the other's"
    );
    let alone = one.join("alone");
    let o = gradgym(&["plot", s(&one), "--out", s(&alone)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        bias(&one),
        fs::read(alone.join("estimator_bias.svg")).unwrap()
    );
    // One --out for two studies would hold only the last: refused.
    let o = gradgym(&["plot", s(&one), s(&two), "--out", s(&one.join("both"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("--out: 2 estimator studies"),
        "{}",
        text(&o)
    );
    assert!(!one.join("both").exists());
    // A study beside a results folder: named as a study, not as a broken run folder.
    let rows: Vec<Row<'_>> = vec![("CartPole-v1", "ppo", 1, &[][..], "completed", "100", "")];
    let sweep = folder("beside-a-study", &[], &rows);
    let o = gradgym(&["plot", s(&one), s(&sweep), "--out", s(&one.join("mixed"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("is an estimator study (estimators.csv) and the others are not"),
        "{}",
        text(&o)
    );
    assert!(!one.join("mixed").exists());
}

/// Completed runs with no score under the metric (eval_episodes = 0 under `--metric eval`)
/// leave every cell empty: said, by report and plot, rather than reported as if nothing ran.
#[test]
fn a_metric_no_completed_run_has_is_said() {
    let rows: Vec<Row<'_>> = (1..=3)
        .map(|seed| ("CartPole-v1", "ppo", seed, &[][..], "completed", "100", ""))
        .collect();
    let dir = folder("no-eval", &[], &rows);
    let says = "none of the 3 completed run(s) has a score in `eval_return_mean`";
    for command in ["report", "plot"] {
        let o = gradgym(&[command, s(&dir), "--reps", "100", "--metric", "eval"]);
        assert!(o.status.success(), "{command}: {}", text(&o));
        assert!(stderr(&o).contains(says), "{command}: {}", text(&o));
        let o = gradgym(&[command, s(&dir), "--reps", "100"]);
        assert!(o.status.success(), "{command}: {}", text(&o));
        assert!(
            !stderr(&o).contains("has a score in"),
            "{command}: {}",
            text(&o)
        );
    }
}

/// A folder whose every run failed is refused (exit 2: it was an empty report and exit 0, so a
/// CI step passed on a sweep that diverged everywhere); aggregates that stand on different envs
/// are said, on stderr and in report.md; a summary.csv kept without its runs/ is warned about
/// once, not once per run.
#[test]
fn report_refuses_all_failed_runs_and_says_when_aggregates_stand_on_different_envs() {
    let failed = folder(
        "all-failed",
        &[],
        &seeds("CartPole-v1", "ppo", &[], "failed", &["", ""]),
    );
    let o = gradgym(&["report", s(&failed), "--reps", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("completed (2 failed), so there is no score to report"),
        "{}",
        text(&o)
    );
    let mut rows = seeds(
        "CartPole-v1",
        "ppo",
        &[],
        "completed",
        &["100", "200", "300"],
    );
    rows.extend(seeds(
        "Acrobot-v1",
        "ppo",
        &[],
        "completed",
        &["-300", "-200", "-100"],
    ));
    rows.extend(seeds(
        "CartPole-v1",
        "a2c",
        &[],
        "completed",
        &["150", "250", "350"],
    ));
    let mixed = folder("mixed-envs", &[], &rows);
    let o = gradgym(&["report", s(&mixed), "--reps", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    let note = "the aggregates stand on different envs (a2c over CartPole-v1 of the 2 envs scored)";
    assert!(stderr(&o).contains(note), "{}", text(&o));
    let md = fs::read_to_string(mixed.join("report/report.md")).unwrap();
    assert!(md.contains(note), "{md}");
    assert_eq!(
        stderr(&o).matches("runs does not exist").count(),
        1,
        "{}",
        text(&o)
    );
    assert!(!stderr(&o).contains("cannot read"), "{}", text(&o));
    // plot says it once too.
    let plots = mixed.join("plots");
    let o = gradgym(&["plot", s(&mixed), "--reps", "10", "--out", s(&plots)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        stderr(&o).matches("runs does not exist").count(),
        1,
        "{}",
        text(&o)
    );
    assert!(!stderr(&o).contains("cannot read"), "{}", text(&o));
    // The same envs for every algo: no note.
    let same = folder(
        "same-envs",
        &[],
        &seeds(
            "CartPole-v1",
            "ppo",
            &[],
            "completed",
            &["100", "200", "300"],
        ),
    );
    let o = gradgym(&["report", s(&same), "--reps", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stderr(&o).contains("different envs"), "{}", text(&o));
}

/// Train run folders given to `report` pool under their bare algo label: folders whose configs
/// differ beyond the seed are said to, naming the field (two learning rates read as one algo's
/// spread before).
#[test]
fn train_folders_pooled_with_different_configs_are_said_to_be() {
    let train = |name: &str, seed: &str, lr: &str| {
        let out = common::scratch("results", name);
        let o = gradgym(&[
            "train",
            "--env",
            "CartPole-v1",
            "--algo",
            "ppo",
            "--seed",
            seed,
            "--total-timesteps",
            "1024",
            "--learning-rate",
            lr,
            "--eval-episodes",
            "1",
            "--quiet",
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let (a, b, c) = (
        train("lr-a", "1", "0.001"),
        train("lr-b", "2", "0.1"),
        train("lr-c", "3", "0.001"),
    );
    let report = common::scratch("results", "lr-report");
    let o = gradgym(&["report", s(&a), s(&b), "--reps", "10", "--out", s(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("CartPole-v1 ppo: the run folders pooled in this cell were configured differently (learning_rate 0.001 in"),
        "{}",
        text(&o)
    );
    // Seeds alone differ: nothing said.
    let o = gradgym(&["report", s(&a), s(&c), "--reps", "10", "--out", s(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !stderr(&o).contains("configured differently"),
        "{}",
        text(&o)
    );
    // A run folder named relative to the working folder, bare (`lr-c`): its metrics.csv is
    // still checked (a cut file is named), with no word of a missing runs/ folder.
    let metrics = fs::read_to_string(c.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    fs::write(c.join("metrics.csv"), lines[..2].join("\n") + "\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .current_dir(c.parent().unwrap())
        .args(["report", "lr-c", "--reps", "10", "--out"])
        .arg(report.as_path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stderr(&o).contains("does not exist"), "{}", text(&o));
    assert!(
        stderr(&o).contains("metrics.csv: the last row is iteration"),
        "{}",
        text(&o)
    );
}
