//! The committed reference results regenerate: `gradgym report` and `gradgym plot` on the
//! folders in `results/` give, byte for byte, the reports and plots committed beside them
//! (no training involved). After a change to the statistics or the plots, `make plots`
//! refreshes them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{gradgym, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The file names of a listing, in its (sorted) order.
fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(name, _)| name.as_str()).collect()
}

/// The committed reports and plots of `results/<folder>` against fresh ones: the same set of
/// file names, and each file equal to the fresh file of the same name.
fn check(folder: &str, sweep: bool) {
    let dir = repo().join("results").join(folder);
    let tmp = common::scratch("committed", folder);
    if sweep {
        let o = gradgym(&[
            "report",
            dir.to_str().unwrap(),
            "--out",
            tmp.join("report").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let (committed, fresh) = (files(&dir.join("report")), files(&tmp.join("report")));
        assert_eq!(
            names(&committed),
            names(&fresh),
            "{folder}/report: the committed files are not the files a fresh `gradgym report` \
             writes: run `make plots`"
        );
        for ((name, a), (fresh_name, b)) in committed.iter().zip(&fresh) {
            assert_eq!(name, fresh_name);
            // report.md names the folder it read; compare the rest of it.
            if name == "report.md" {
                let strip = |t: &[u8]| {
                    String::from_utf8_lossy(t)
                        .lines()
                        .skip(3)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(
                    strip(a),
                    strip(b),
                    "{folder}/report/{name} is stale: run `make plots`"
                );
            } else {
                assert!(a == b, "{folder}/report/{name} is stale: run `make plots`");
            }
        }
    }
    let o = gradgym(&[
        "plot",
        dir.to_str().unwrap(),
        "--out",
        tmp.join("plots").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (committed, fresh) = (files(&dir.join("plots")), files(&tmp.join("plots")));
    assert_eq!(
        names(&committed),
        names(&fresh),
        "{folder}/plots: the committed files are not the files a fresh `gradgym plot` writes: \
         run `make plots`"
    );
    for ((name, a), (fresh_name, b)) in committed.iter().zip(&fresh) {
        assert_eq!(name, fresh_name);
        assert!(
            a == b,
            "{folder}/plots/{name} differs from a fresh `gradgym plot`: run `make plots`"
        );
    }
}

#[test]
fn classic_control_report_and_plots_regenerate() {
    check("classic-control", true);
}

#[test]
fn quick_sweep_report_and_plots_regenerate() {
    check("quick", true);
}

#[test]
fn preference_sweep_report_and_plots_regenerate() {
    check("prefs", true);
}

#[test]
fn rlhf_study_report_and_plots_regenerate() {
    check("rlhf", true);
}

#[test]
fn rlhf_pipeline_seed_reports_and_plots_regenerate() {
    check("rlhf-seed2", true);
    check("rlhf-seed3", true);
}

#[test]
fn estimator_study_plots_regenerate() {
    check("estimators", false);
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let q = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &q);
        } else {
            fs::copy(&p, &q).unwrap();
        }
    }
}

/// Appends a column to a CSV file: `name` in the header, `value` in every row.
fn add_column(path: &Path, name: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{},{name}\n", lines.next().unwrap());
    for l in lines {
        out.push_str(&format!("{l},{value}\n"));
    }
    fs::write(path, out).unwrap();
}

#[test]
fn extra_metric_columns_leave_reports_and_plots_unchanged() {
    // The ROADMAP's learners will append columns (learned vs true reward, KL, labels used) to
    // metrics.csv and summary.csv; report and plot find their columns by name.
    let dir = common::scratch("committed", "extra-columns");
    copy_tree(&repo().join("results/quick"), &dir);
    add_column(&dir.join("summary.csv"), "gold_score", "0.5");
    for run in fs::read_dir(dir.join("runs")).unwrap() {
        add_column(
            &run.unwrap().path().join("metrics.csv"),
            "kl_to_reference",
            "0.01",
        );
    }
    let out = dir.join("fresh");
    for cmd in ["report", "plot"] {
        let o = gradgym(&[
            cmd,
            dir.to_str().unwrap(),
            "--out",
            out.join(cmd).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let committed = repo().join("results/quick");
    for f in [
        "per_env.csv",
        "aggregate.csv",
        "improvement.csv",
        "profiles.csv",
    ] {
        assert_eq!(
            fs::read(out.join("report").join(f)).unwrap(),
            fs::read(committed.join("report").join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(files(&out.join("plot")), files(&committed.join("plots")));
}

#[test]
fn every_committed_png_is_at_least_1600_pixels_wide() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
    let mut seen = 0;
    for folder in [
        "classic-control",
        "quick",
        "prefs",
        "estimators",
        "rlhf",
        "rlhf-seed2",
        "rlhf-seed3",
    ] {
        let plots = root.join(folder).join("plots");
        for entry in std::fs::read_dir(&plots).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "png") {
                let bytes = std::fs::read(&path).unwrap();
                // The IHDR chunk: width as a big-endian u32 at byte 16.
                let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
                assert!(width >= 1600, "{}: {width} px wide", path.display());
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen, 21,
        "four plots per sweep, a fifth (scaling_prefs_labels) for the preference sweep, two for \
         the estimator study, one per reward model for the RLHF study and its two pipeline seeds"
    );
}
