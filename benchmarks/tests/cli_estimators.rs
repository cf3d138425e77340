//! `gradgym estimators` end to end.

mod common;

use common::{gradgym, scratch, text};

#[test]
fn the_study_writes_its_table_and_catches_the_biased_estimator() {
    let out = scratch("cli-estimators", "study");
    let config = out.with_extension("toml");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&config, "samples = [64]\nbatches = 32\nrandom_mdps = 1\n").unwrap();
    let o = gradgym(&[
        "estimators",
        "--config",
        config.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let csv = std::fs::read_to_string(out.join("estimators.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "mdp,estimator,samples,bias_norm,bias_z,variance_trace,snr,cosine_to_exact,passes,unchecked_coordinates"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // 4 benchmark MDPs + 1 random, every estimator, one sample size.
    assert_eq!(
        rows.len(),
        5 * gradgym_algorithms::study::Estimator::all().len()
    );
    for row in rows.iter().filter(|r| r[1] == "biased_action_baseline") {
        assert_eq!(row[8], "false", "{row:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["seed"], 3);
    assert!(
        t.contains("reinforce_total_return") && t.contains("gae_lambda_0.95"),
        "{t}"
    );

    // Another study into the same folder is refused and changes nothing (it used to replace
    // the table silently); --overwrite replaces it whole, with its manifest.
    let before = std::fs::read_to_string(out.join("estimators.csv")).unwrap();
    let again = |extra: &[&str]| {
        let mut args = vec![
            "estimators",
            "--config",
            config.to_str().unwrap(),
            "--seed",
            "4",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradgym(&args)
    };
    let o = again(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("estimators.csv")).unwrap(),
        before
    );
    let o = again(&["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 4);
    assert_ne!(
        std::fs::read_to_string(out.join("estimators.csv")).unwrap(),
        before
    );
    // A study folder written before studies had a manifest is replaced as a study's.
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    let o = again(&["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("manifest.json").is_file());

    std::fs::write(&config, "sample = [64]\n").unwrap();
    let o = gradgym(&[
        "estimators",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("sample"), "{}", text(&o));
}

/// `gradgym estimators` on a config of `body` (written beside `out`, as `out.toml`) into `out`.
fn study(body: &str, out: &std::path::Path) -> std::process::Output {
    let config = out.with_extension("toml");
    std::fs::write(&config, body).unwrap();
    gradgym(&[
        "estimators",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A study too large to run (hours, or batches that cannot be allocated: `samples =
/// [1000000000000]` aborted the process) is refused naming its fields, before its folder.
#[test]
fn a_study_past_the_caps_is_refused_before_anything_is_written() {
    let out = scratch("cli-estimators", "too-large");
    for (body, says) in [
        ("samples = [1000000000000]\n", "`batches` × `samples`"),
        (
            "samples = [100000000]\nbatches = 2\n",
            "`batches` × `samples`",
        ),
        ("random_mdps = 100000000\n", "`random_mdps`"),
    ] {
        let o = study(body, &out);
        assert_eq!(o.status.code(), Some(2), "{body}: {}", text(&o));
        assert!(
            text(&o).contains(says) && text(&o).contains("more than gradgym allows"),
            "{}",
            text(&o)
        );
        assert!(!out.exists());
    }
}

/// A sample size given twice wrote each of its estimators.csv rows twice and counted their
/// passes twice: refused, naming the field.
#[test]
fn a_sample_size_given_twice_is_refused() {
    let out = scratch("cli-estimators", "twice");
    let o = study("samples = [16, 16]\nbatches = 2\nrandom_mdps = 1\n", &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("config field `samples`: a size is given twice"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}

/// A sample too small for any coordinate to be checked (2 trajectories: no action is expected
/// 20 times) judges nothing: no verdict and no z in estimators.csv, nothing counted as passed
/// (the biased controls read "16 / 16 passed" before), and the bias figure still drawn.
#[test]
fn measurements_that_check_no_coordinate_are_not_counted_as_passed() {
    let out = scratch("cli-estimators", "unjudged");
    let o = study("samples = [1]\nbatches = 2\nrandom_mdps = 0\n", &out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("left every coordinate unchecked and are not counted above"),
        "{}",
        text(&o)
    );
    let csv = std::fs::read_to_string(out.join("estimators.csv")).unwrap();
    for row in csv.lines().skip(1) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!((cells[4], cells[8]), ("", ""), "{row}");
    }
    let summary = common::summary(&out);
    for e in summary["estimators"].as_array().unwrap() {
        assert_eq!(
            (e["measurements"].as_u64(), e["passed"].as_u64()),
            (Some(0), Some(0)),
            "{e}"
        );
        assert_eq!(e["not_judged"].as_u64(), Some(4), "{e}");
    }
    let plots = out.with_extension("plots");
    let o = gradgym(&[
        "plot",
        out.to_str().unwrap(),
        "--out",
        plots.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
