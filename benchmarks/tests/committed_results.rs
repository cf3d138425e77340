//! The committed reference results regenerate: `gradgym report` and `gradgym plot` on the
//! folders in `results/` give, byte for byte, the reports and plots committed beside them
//! (no training involved). After a change to the statistics or the plots, `make plots`
//! refreshes them. And today's code still trains what was committed: each stage of the RLHF
//! study (`results/rlhf`), rerun on its committed inputs and config, writes its committed
//! files bit for bit (the RL stage for its first updates).

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
            // report.md names the folder it read, which `make plots` gives as
            // results/<folder>; compare the rest of it.
            if name == "report.md" {
                let named = format!("`results/{folder}`");
                let head: String = String::from_utf8_lossy(a).lines().take(3).collect();
                assert!(
                    head.contains(&named),
                    "{folder}/report/report.md does not name {named} at its top: it was \
                     written from another folder; run `make plots`"
                );
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
fn rlhf_learners_report_and_plots_regenerate() {
    check("rlhf-learners", true);
}

#[test]
fn rlhf_pipeline_seed_reports_and_plots_regenerate() {
    check("rlhf-seed2", true);
    check("rlhf-seed3", true);
}

/// Each committed sweep's summary.csv holds its runs' summary.json scores to the bit (they
/// were one ulp off where JSON was read without correct rounding).
#[test]
fn committed_summaries_hold_their_runs_scores_exactly() {
    for folder in ["quick", "classic-control", "prefs"] {
        let dir = repo().join("results").join(folder);
        let csv = fs::read_to_string(dir.join("summary.csv")).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        let (id, fin, eval) = (
            col("run_id"),
            col("final_return_mean_last100"),
            col("eval_return_mean"),
        );
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            let run = dir.join("runs").join(cells[id]).join("summary.json");
            let json: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&run).unwrap()).unwrap();
            for (c, key) in [
                (fin, "final_return_mean_last100"),
                (eval, "eval_return_mean"),
            ] {
                let in_csv = cells[c].parse::<f64>().ok().map(f64::to_bits);
                let in_json = json[key].as_f64().map(f64::to_bits);
                assert_eq!(in_csv, in_json, "{folder}: {} {key}", cells[id]);
            }
        }
    }
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

/// Runs `gradgym rlhf ARGS --set threads=2 --out OUT --quiet` and checks that each file in
/// `same` is, byte for byte, the file at that path under `committed` (`lines`: its first lines
/// only).
fn rerun_matches(stage: &str, args: &[&str], committed: &Path, same: &[(&str, Option<usize>)]) {
    let out = common::scratch("committed-rerun", stage);
    let mut all = vec!["rlhf"];
    all.extend_from_slice(args);
    all.extend([
        "--set",
        "threads=2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let o = gradgym(&all);
    assert!(o.status.success(), "{stage}: {}", text(&o));
    for (file, lines) in same {
        let read = |dir: &Path| {
            let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            match lines {
                None => bytes,
                Some(n) => String::from_utf8(bytes)
                    .unwrap()
                    .lines()
                    .take(*n)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes(),
            }
        };
        assert!(
            read(&out) == read(committed),
            "{stage}: {file} is not the committed {}: the code no longer trains what \
             results/rlhf holds (made with 2 threads on an AMD EPYC, family 25, model 17). If the change \
             is meant to move the numbers, retrain the RLHF results (make rlhf-results, make \
             rlhf-pipeline-seeds) and redo the figures quoted from them",
            committed.join(file).display()
        );
    }
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn rlhf_study_stages_retrain_bit_for_bit() {
    // libtorch's kernels (MKL's among them, whose paths follow the CPU's vendor and caches) and
    // gradgym's own generation may round differently on other CPUs, so the bits are held only
    // on the kind of CPU the results were trained on (stop 30): AMD, family 25, model 17 (an
    // EPYC of the Zen 4 generation). Until then they were held on Intel, family 6, model 207.
    #[cfg(target_arch = "x86_64")]
    let cpu = {
        use std::arch::x86_64::__cpuid;
        let id = __cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        let eax = __cpuid(1).eax;
        // The displayed family and model: the extended fields count where the base family
        // is 15 (AMD's since Zen) or 6 (the model only).
        let base = (eax >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((eax >> 20) & 0xff)
        } else {
            base
        };
        let model = if base == 0xf || base == 6 {
            ((eax >> 12) & 0xf0) | ((eax >> 4) & 0xf)
        } else {
            (eax >> 4) & 0xf
        };
        (String::from_utf8_lossy(&vendor).into_owned(), family, model)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = (String::from("not x86-64"), 0, 0);
    if cpu != ("AuthenticAMD".to_string(), 25, 17) {
        eprintln!(
            "skipped: results/rlhf is known to reproduce bit for bit on an AMD CPU of family 25, \
             model 17; this is {} family {}, model {}",
            cpu.0, cpu.1, cpu.2
        );
        return;
    }
    let rlhf = repo().join("results/rlhf");
    let dir = |d: &str| rlhf.join(d);
    let path = |d: &str| dir(d).to_str().unwrap().to_owned();
    let config = |d: &str| path(&format!("{d}/config.toml"));
    // Pretraining and SFT, whole.
    rerun_matches(
        "sft",
        &["sft", "--config", &config("sft")],
        &dir("sft"),
        &[
            ("lm.csv", None),
            ("pretrain/model.safetensors", None),
            ("sft/model.safetensors", None),
        ],
    );
    // The 2,000-comparison reward model, on the committed SFT model.
    rerun_matches(
        "rm",
        &[
            "rm",
            "--config",
            &config("rm-labels2000"),
            "--sft",
            &path("sft"),
        ],
        &dir("rm-labels2000"),
        &[
            ("labels.jsonl", None),
            ("held_out.jsonl", None),
            ("rm.csv", None),
            ("reward_model/model.safetensors", None),
        ],
    );
    // Best-of-n against it.
    let (sft, rm) = (path("sft"), path("rm-labels2000"));
    rerun_matches(
        "bon",
        &[
            "bon",
            "--config",
            &config("bon-labels2000"),
            "--sft",
            &sft,
            "--rm",
            &rm,
        ],
        &dir("bon-labels2000"),
        &[("best_of_n.csv", None), ("samples.jsonl", None)],
    );
    // PPO's first two updates (header and two rows; the third, the run's last, also evaluates).
    let rm = path("rm-labels10000");
    rerun_matches(
        "rl",
        &[
            "rl",
            "--config",
            &config("ppo-beta0.1-labels10000"),
            "--sft",
            &sft,
            "--rm",
            &rm,
            "--set",
            "rl.updates=3",
        ],
        &dir("ppo-beta0.1-labels10000"),
        &[("metrics.csv", Some(3))],
    );
}

#[test]
fn the_native_backend_gives_the_same_bytes_on_one_thread_and_two() {
    // The RL stage on the committed SFT and reward models, on the native backend: every file
    // of the run but its record of the thread count is the same on 1 and 2 threads.
    let rlhf = repo().join("results/rlhf");
    let path = |d: &str| rlhf.join(d).to_str().unwrap().to_owned();
    let run = |threads: &str| {
        let out = common::scratch("native-threads", threads);
        let o = gradgym(&[
            "rlhf",
            "rl",
            "--config",
            &path("ppo-beta0.1-labels10000/config.toml"),
            "--sft",
            &path("sft"),
            "--rm",
            &path("rm-labels10000"),
            "--set",
            "rl.updates=2",
            "--set",
            "rl.backend=native",
            "--set",
            &format!("threads={threads}"),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(o.status.success(), "{threads} threads: {}", text(&o));
        out
    };
    let (one, two) = (run("1"), run("2"));
    let manifest = fs::read_to_string(one.join("manifest.json")).unwrap();
    assert!(manifest.contains(r#""rl_backend": "native""#), "{manifest}");
    for file in [
        "metrics.csv",
        "eval.csv",
        "samples.jsonl",
        "summary.json",
        "policy/model.safetensors",
    ] {
        let read = |dir: &Path| fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            read(&one) == read(&two),
            "{file} differs between 1 and 2 threads on the native backend"
        );
    }
    for dir in [one, two] {
        let _ = fs::remove_dir_all(dir);
    }
}

/// `report` and `plot` on an RLHF study refuse a CSV that lost rows, naming it: a header with
/// no rows, an `eval.csv` cut at a row boundary (its last update short of the run's
/// `rl.updates`) and a `best_of_n.csv` missing an n its config asked for; and one that lost a
/// cell, has its rows out of order, or is gone from a completed run (these used to be drawn
/// or passed over). They name a `.partial` folder (a run still going, or killed outright), and
/// a run folder that lost its `summary.json`, instead of passing over them; and RLHF runs given
/// beside another folder are refused, naming the folder to give alone.
#[test]
fn a_study_whose_csv_lost_rows_is_refused_and_an_unfinished_run_is_named() {
    let committed = repo().join("results/rlhf");
    let fresh = |name: &str| {
        let dir = common::scratch("committed", name);
        for run in ["ppo-beta0.1-labels10000", "bon-labels10000"] {
            copy_tree(&committed.join(run), &dir.join(run));
        }
        dir
    };
    let drop_last_line = |path: &Path| {
        let text = fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        fs::write(path, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    };
    let header_only = |path: &Path| {
        let text = fs::read_to_string(path).unwrap();
        fs::write(path, format!("{}\n", text.lines().next().unwrap())).unwrap();
    };
    let empty_gold = |path: &Path| {
        let text = fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let gold = lines[0].split(',').position(|c| c == "gold").unwrap();
        let mut cells: Vec<&str> = lines[1].split(',').collect();
        cells[gold] = "";
        lines[1] = cells.join(",");
        fs::write(path, lines.join("\n") + "\n").unwrap();
    };
    let swap_rows = |path: &Path| {
        let text = fs::read_to_string(path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(1, 2);
        fs::write(path, lines.join("\n") + "\n").unwrap();
    };
    let delete = |path: &Path| fs::remove_file(path).unwrap();
    type Damage<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, &str, Damage, &str); 8] = [
        (
            "eval-header",
            "ppo-beta0.1-labels10000/eval.csv",
            &header_only,
            "no rows",
        ),
        (
            "eval-cut",
            "ppo-beta0.1-labels10000/eval.csv",
            &drop_last_line,
            "update 95",
        ),
        (
            "bon-header",
            "bon-labels10000/best_of_n.csv",
            &header_only,
            "no rows",
        ),
        (
            "bon-cut",
            "bon-labels10000/best_of_n.csv",
            &drop_last_line,
            "eval.best_of_n",
        ),
        (
            "eval-cell",
            "ppo-beta0.1-labels10000/eval.csv",
            &empty_gold,
            ":2: column `gold` is empty",
        ),
        (
            "eval-order",
            "ppo-beta0.1-labels10000/eval.csv",
            &swap_rows,
            "rows out of order",
        ),
        (
            "eval-gone",
            "ppo-beta0.1-labels10000/eval.csv",
            &delete,
            "cannot read",
        ),
        (
            "bon-gone",
            "bon-labels10000/best_of_n.csv",
            &delete,
            "cannot read",
        ),
    ];
    for (name, file, damage, says) in cases {
        let dir = fresh(name);
        damage(&dir.join(file));
        for cmd in ["report", "plot"] {
            let out = dir.join("out").join(cmd);
            let o = gradgym(&[cmd, dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {cmd}: {t}");
            assert!(
                t.contains(file.split('/').next_back().unwrap()) && t.contains(says),
                "{name} {cmd}: {t}"
            );
        }
    }
    let dir = fresh("partial");
    fs::create_dir_all(dir.join("ppo-beta0-labels10000.partial")).unwrap();
    // A run folder without its summary.json, and a replaced run whose deletion was cut short.
    let lost = dir.join("ppo-beta0.1-labels10000-lost");
    copy_tree(&dir.join("ppo-beta0.1-labels10000"), &lost);
    fs::remove_file(lost.join("summary.json")).unwrap();
    copy_tree(
        &dir.join("ppo-beta0.1-labels10000"),
        &dir.join("ppo-beta0.1-labels10000.replaced-1"),
    );
    let out = dir.join("out");
    let o = gradgym(&[
        "report",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("`ppo-beta0-labels10000.partial` (status unfinished"),
        "{report}"
    );
    assert!(
        report.contains("`ppo-beta0.1-labels10000-lost` (status unfinished: no summary.json, which every sealed run has"),
        "{report}"
    );
    assert!(
        report.contains(
            "`ppo-beta0.1-labels10000.replaced-1` (status unfinished: replaced by a newer run"
        ),
        "{report}"
    );
    // Beside another folder: refused, naming the folder to give alone.
    let other = fresh("other");
    for cmd in ["report", "plot"] {
        let o = gradgym(&[
            cmd,
            dir.to_str().unwrap(),
            other.to_str().unwrap(),
            "--out",
            out.join(cmd).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(
            text(&o).contains("reads one folder at a time"),
            "{cmd}: {}",
            text(&o)
        );
    }
    // A folder with no sweep in it whose subfolder is a study: named (the message used to
    // blame a missing summary.csv alone).
    let nest = common::scratch("committed", "nest");
    copy_tree(
        &dir.join("bon-labels10000"),
        &nest.join("study").join("bon-labels10000"),
    );
    for cmd in ["report", "plot"] {
        let o = gradgym(&[
            cmd,
            nest.to_str().unwrap(),
            "--out",
            out.join(cmd).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        let want = format!(
            "folders inside it hold gradgym rlhf runs, each read alone: `gradgym {cmd} {}`",
            nest.join("study").display()
        );
        assert!(text(&o).contains(&want), "{cmd}: {}", text(&o));
    }
}

/// A sweep whose run lost rows of its metrics.csv (a header alone, or cut at a row boundary
/// short of the iterations its summary.json counts) has that run left out of the learning
/// curves, named on stderr and at the top of report.md; they used to be drawn as they were
/// (a short curve) or to empty the run's whole panel, silently. And a set the statistics
/// refuse leaves no plot behind.
#[test]
fn a_sweep_run_whose_metrics_lost_rows_is_named_and_left_out() {
    let committed = repo().join("results/quick");
    let run = "runs/CartPole-v1__ppo__seed1/metrics.csv";
    for (name, keep, says) in [
        ("metrics-header", 1usize, "a header and no rows"),
        ("metrics-cut", 489, "the last row is iteration 488"),
    ] {
        let dir = common::scratch("committed", name);
        copy_tree(&committed, &dir);
        let path = dir.join(run);
        let whole = fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = whole.lines().take(keep).collect();
        fs::write(&path, kept.join("\n") + "\n").unwrap();
        let out = dir.join("fresh");
        let o = gradgym(&[
            "report",
            dir.to_str().unwrap(),
            "--out",
            out.join("report").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(says), "{name}: {}", text(&o));
        let report = fs::read_to_string(out.join("report/report.md")).unwrap();
        assert!(
            report.contains(says) && report.contains("metrics.csv"),
            "{name}: {report}"
        );
        let o = gradgym(&[
            "plot",
            dir.to_str().unwrap(),
            "--out",
            out.join("plot").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(says) && text(&o).contains("left out of learning_curves"),
            "{name}: {}",
            text(&o)
        );
    }
    let dir = common::scratch("committed", "summary-header");
    copy_tree(&committed, &dir);
    let summary = dir.join("summary.csv");
    let header = fs::read_to_string(&summary)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    fs::write(&summary, header + "\n").unwrap();
    let out = dir.join("plots-fresh");
    let o = gradgym(&[
        "plot",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.join("learning_curves.png").exists());
}
