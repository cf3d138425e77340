//! `gradgym train` and `gradgym info` end to end.

mod common;

use common::{gradgym, text};

fn scratch(name: &str) -> common::Scratch {
    common::scratch("cli-train", name)
}

#[test]
fn info_reports_libtorch_and_cuda() {
    let o = gradgym(&["info"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("libtorch 2.11.0")
            && t.contains("backend = auto")
            && t.contains("CUDA available:")
            && t.contains("cuDNN available:"),
        "{t}"
    );
}

#[test]
fn train_writes_the_run_folder_and_layers_configs() {
    let out = scratch("ok");
    let config = out.with_extension("toml");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&config, "num_steps = 32\nlearning_rate = 1e-3\n").unwrap();
    let o = gradgym(&[
        "train",
        "--env",
        "CartPole-v1",
        "--algo",
        "a2c",
        "--seed",
        "3",
        "--total-timesteps",
        "1024",
        "--config",
        config.to_str().unwrap(),
        "--learning-rate",
        "5e-4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The shipped A2C config, then the user's file, then the flags.
    assert!(
        t.contains("defaults → benchmarks/configs/CartPole-v1-a2c.toml → ")
            && t.contains("→ command-line flags"),
        "{t}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["num_steps"], 32, "from the user's file");
    assert_eq!(
        manifest["config"]["num_envs"], 8,
        "from the shipped A2C config"
    );
    assert_eq!(manifest["config"]["learning_rate"], 5e-4, "the flag wins");
    assert_eq!(manifest["config"]["backend"], "auto");
    assert_eq!(manifest["backend"], "native", "auto on the CPU");
    assert_eq!(manifest["seed"], 3);
    for f in ["metrics.csv", "summary.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
}

#[test]
fn bad_input_is_named() {
    let out = scratch("bad");
    let o = gradgym(&["train", "--algo", "dqn", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains(
            "command-line flags: config field `algo`: unknown algo `dqn`; valid: reinforce, a2c, ppo"
        ),
        "{}",
        text(&o)
    );

    let o = gradgym(&[
        "train",
        "--env",
        "Breakout-v5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("Breakout-v5") && text(&o).contains("Pendulum-v1"),
        "{}",
        text(&o)
    );

    let o = gradgym(&["train", "--num-envs", "0", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("`num_envs`: must be at least 1"),
        "{}",
        text(&o)
    );

    // A width whose weights would overflow an allocation (before: a capacity-overflow panic),
    // and a thread count past what libtorch takes.
    for (flag, value, want) in [
        (
            "--hidden-sizes",
            "[9223372036854775807]",
            "`hidden_sizes`: a width of",
        ),
        ("--torch-threads", "5000", "`torch_threads`: 5000 is more"),
    ] {
        let o = gradgym(&["train", flag, value, "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{}", text(&o));
    }

    let o = gradgym(&["train", "--backend", "jax", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        t.contains("backend") && t.contains("jax") && t.contains("native"),
        "{t}"
    );

    let config = out.with_extension("toml");
    std::fs::write(&config, "num_envs = 4\nlearning_rat = 0.1\n").unwrap();
    let o = gradgym(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        t.contains(config.file_name().unwrap().to_str().unwrap()) && t.contains("learning_rat"),
        "{t}"
    );
    assert!(
        !out.exists(),
        "nothing is written for a config that cannot run"
    );
}

#[test]
fn a_failed_run_exits_1_and_keeps_its_files() {
    let out = scratch("nan");
    // A2C at a learning rate that makes its loss non-finite within a few iterations.
    let failing = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--algo",
            "a2c",
            "--learning-rate",
            "1e30",
            "--anneal-lr",
            "false",
            "--total-timesteps",
            "4000",
        ];
        args.extend_from_slice(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        gradgym(&args)
    };
    let o = failing(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("non-finite loss"), "{t}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "failed");
    assert!(
        std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .count()
            >= 2
    );
    // --overwrite never puts a failed run in place of another: it is sealed beside it.
    let before = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let o = failing(&["--overwrite"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let beside = out.with_file_name(format!(
        "{}.failed",
        out.file_name().unwrap().to_str().unwrap()
    ));
    assert!(t.contains(beside.to_str().unwrap()), "{t}");
    assert!(beside.join("summary.json").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("summary.json")).unwrap(),
        before,
        "the earlier run was replaced"
    );
}

#[test]
fn every_config_field_has_a_flag_with_its_doc_and_default() {
    let o = gradgym(&["train", "--help"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The serialised config's keys are the fields, whatever the flags were made from.
    let config = serde_json::to_value(gradgym_agents::config::TrainConfig::default()).unwrap();
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert!(keys.len() >= 30, "{keys:?}");
    for key in keys {
        let flag = format!("--{} <VALUE>", key.replace('_', "-"));
        let line = t
            .lines()
            .find(|l| l.contains(&flag))
            .unwrap_or_else(|| panic!("no flag {flag} in train --help:\n{t}"));
        assert!(line.contains("[default: "), "{line}");
    }
    assert!(t.contains("Discount factor γ. [default: 0.99]"), "{t}");
    assert!(t.contains("[alias: --env]"), "{t}");
}

#[test]
fn print_config_shows_the_effective_config_after_every_layer() {
    let out = scratch("print");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let file = out.with_extension("toml");
    std::fs::write(&file, "num_steps = 32\ngamma = 0.9\n").unwrap();
    let o = gradgym(&[
        "train",
        "--env",
        "CartPole-v1",
        "--algo",
        "a2c",
        "--config",
        file.to_str().unwrap(),
        "--gamma",
        "0.95",
        "--adam-eps",
        "1e-8",
        "--print-config",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("# layers: defaults → benchmarks/configs/CartPole-v1-a2c.toml → ")
            && t.contains("→ command-line flags"),
        "{t}"
    );
    let config = gradgym_agents::config::TrainConfig::default()
        .overlay_toml(&String::from_utf8_lossy(&o.stdout), "stdout")
        .unwrap();
    assert_eq!(config.algo, gradgym_agents::config::Algo::A2c);
    assert_eq!(config.num_steps, 32, "from the file");
    assert_eq!(config.num_envs, 8, "from the shipped A2C config");
    assert_eq!(config.gamma, 0.95, "the flag wins over the file");
    assert_eq!(
        config.adam_eps, 1e-8,
        "every field has a flag, adam_eps too"
    );
    assert!(!out.exists(), "--print-config trains nothing");
}

#[test]
fn negative_values_reach_the_config_check() {
    for (flag, field) in [("--gamma", "gamma"), ("--seed", "seed")] {
        let o = gradgym(&["train", flag, "-1", "--print-config"]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains(field) && !t.contains("unexpected argument"),
            "{flag}: {t}"
        );
    }
}

#[test]
fn an_existing_out_folder_is_refused_unless_overwrite() {
    let out = scratch("twice");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "train",
            "--total-timesteps",
            "512",
            "--eval-episodes",
            "0",
            "--out",
        ];
        a.push(Box::leak(
            out.to_str().unwrap().to_string().into_boxed_str(),
        ));
        a.extend_from_slice(extra);
        a
    };
    assert!(gradgym(&args(&[])).status.success());
    let o = gradgym(&args(&[]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("already exists") && text(&o).contains("--overwrite"),
        "{}",
        text(&o)
    );
    let o = gradgym(&args(&["--overwrite", "--seed", "2"]));
    assert!(o.status.success(), "{}", text(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 2);
}

#[test]
fn a_budget_rounded_to_whole_rollouts_is_said_on_the_console_and_in_the_manifest() {
    let out = scratch("rounded");
    let o = gradgym(&[
        "train",
        "--total-timesteps",
        "1000",
        "--eval-episodes",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // Off a terminal, plain progress lines (the first one after the first iteration).
    assert!(t.contains("gradgym train: step 512/1000 (51%)"), "{t}");
    let note = "total_timesteps = 1000 is not a multiple of num_envs × num_steps = 512: 1 iterations, 512 steps will run";
    assert!(t.contains(note), "{t}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["budget_note"], note);
}

#[test]
fn sigint_and_sigterm_seal_the_run_as_interrupted() {
    for signal in ["-INT", "-TERM"] {
        let out = scratch(&format!("signal{signal}"));
        // A few iterations on disk, then the signal.
        let o = common::interrupt_after_rows(
            &[
                "train",
                "--total-timesteps",
                "50000000",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            &out,
            4,
            std::time::Duration::from_secs(60),
            signal,
        );
        let t = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(130), "{signal}: {t}");
        assert!(t.contains("status interrupted"), "{t}");
        let summary = common::summary(&out);
        assert_eq!(summary["status"], "interrupted", "{signal}");
        let iterations = summary["iterations"].as_u64().unwrap();
        assert!(iterations >= 3, "{summary}");
        let rows = std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(rows, iterations + 1, "header + every finished iteration");
    }
}

/// A run started with SIGINT ignored (a shell's background job) keeps ignoring it, however
/// late it comes (a handler installed half a second in used to take SIGINT from then on), and
/// SIGTERM still seals it.
#[test]
fn a_sigint_ignored_at_start_stays_ignored_and_sigterm_still_seals_the_run() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let out = scratch("sigint-ignored");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"));
    command
        .args(["train", "--total-timesteps", "50000000", "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: `signal` is async-signal-safe, as a pre-exec hook must be.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let metrics = common::partial(&out).join("metrics.csv");
    let rows = || std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count());
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows() < 3 {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("-INT");
    let before = rows();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGINT stopped the run"
    );
    assert!(rows() > before, "the run stopped training after SIGINT");
    kill("-TERM");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert_eq!(common::summary(&out)["status"], "interrupted");
}

/// `gradgym train --quiet --out <out> <args>` with its address space limited by `ulimit -v
/// 6000000` (5.7 GiB, about 3 GiB past what libtorch maps at the start).
#[cfg(target_os = "linux")]
fn train_under_ulimit(out: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -v 6000000 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_gradgym"),
            "train",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap()
}

/// Sizes within every field's range but past memory (they aborted the process on a Rust
/// allocation, exit 134, leaving `.partial`) are refused before the run, named by the field
/// whose part is largest, against what `ulimit -v` leaves (or the machine, if less).
#[test]
#[cfg(target_os = "linux")]
fn a_run_past_memory_is_refused_by_the_field_that_grows_it() {
    for (name, args, field) in [
        (
            "wide",
            &[
                "--total-timesteps",
                "512",
                "--hidden-sizes",
                "[30000, 30000]",
            ][..],
            "config field `hidden_sizes`: hidden_sizes = [30000, 30000] is 1800450003 parameters",
        ),
        (
            "long",
            &[
                "--env",
                "Acrobot-v1",
                "--num-envs",
                "65536",
                "--num-steps",
                "1024",
                "--num-minibatches",
                "1",
                "--total-timesteps",
                "67108864",
            ][..],
            "config field `num_envs`: num_envs = 65536 × 1024 steps per rollout",
        ),
    ] {
        let out = scratch(&format!("memory-{name}"));
        let o = train_under_ulimit(&out, args);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(text(&o).contains(field), "{name}: {}", text(&o));
        assert!(
            text(&o).contains("this process may still map")
                || text(&o).contains("this machine has"),
            "{name}: {}",
            text(&o)
        );
        assert!(!out.exists() && !common::partial(&out).exists(), "{name}");
    }
    // What the limit leaves is what the check plans for: a network that this machine's free
    // memory holds (5.2 GiB by the estimate) but the address space under the limit does not.
    let free_gib = gradgym_agents::host_memory::proc_bytes("/proc/meminfo", "MemAvailable")
        .map_or(0.0, |b| b as f64 / (1u64 << 30) as f64);
    if free_gib < 6.0 {
        eprintln!("skipped the address-space case: {free_gib:.1} GiB available here");
        return;
    }
    let out = scratch("memory-limit");
    let o = train_under_ulimit(
        &out,
        &[
            "--total-timesteps",
            "512",
            "--hidden-sizes",
            "[10000, 10000]",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("config field `hidden_sizes`")
            && text(&o).contains("this process may still map")
            && text(&o).contains("RLIMIT_AS, that is ulimit -v"),
        "{}",
        text(&o)
    );
    assert!(!out.exists() && !common::partial(&out).exists());
}

#[test]
fn a_saved_policy_evaluates_to_the_returns_of_training_and_checkpoints_are_kept() {
    let mut trained_runs = Vec::new();
    for env in ["CartPole-v1", "Pendulum-v1"] {
        let out = scratch(&format!("eval-{env}"));
        let o = gradgym(&[
            "train",
            "--env",
            env,
            "--algo",
            "ppo",
            "--total-timesteps",
            "4096",
            "--eval-episodes",
            "3",
            "--checkpoint-every",
            "4",
            "--num-envs",
            "4",
            "--num-steps",
            "128",
            "--num-minibatches",
            "4",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        for f in ["policy.safetensors", "policy.json"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        // The same seed and episodes: the evaluation of training, to the bit.
        let o = gradgym(&["eval", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            eval["eval_return_mean"], summary["eval_return_mean"],
            "{env}"
        );
        assert_eq!(eval["eval_return_std"], summary["eval_return_std"], "{env}");
        assert_eq!(eval["iteration"], summary["iterations"]);
        // Another seed, more episodes, and every step written out.
        let csv = out.with_extension("steps.csv");
        let o = gradgym(&[
            "eval",
            out.to_str().unwrap(),
            "--episodes",
            "2",
            "--seed",
            "77",
            "--render-csv",
            csv.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(eval["episodes"], 2);
        let steps = std::fs::read_to_string(&csv).unwrap();
        assert!(steps.starts_with("episode,t,obs_0,"), "{steps:.200}");
        let ends = steps
            .lines()
            .filter(|l| l.ends_with(",true") || l.contains(",true,"))
            .count();
        assert_eq!(ends, 2, "each episode's last step ends it");
        // Periodic checkpoints (PPO: 8 iterations of 512 steps), loadable on their own.
        let ckpt = out.join("checkpoints/iter-000004");
        assert!(ckpt.join("policy.safetensors").is_file());
        assert!(out.join("checkpoints/iter-000008/policy.json").is_file());
        let o = gradgym(&["eval", ckpt.to_str().unwrap(), "--episodes", "1"]);
        assert!(o.status.success(), "{}", text(&o));
        let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(eval["iteration"], 4);
        trained_runs.push(out);
    }
    let o = gradgym(&["eval", "/nonexistent-run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("/nonexistent-run: no such folder"),
        "{}",
        text(&o)
    );
    // A run folder without a saved policy is told so (it was "cannot read …/policy.json").
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bare = repo.join("results/quick/runs/CartPole-v1__ppo__seed1");
    let o = gradgym(&["eval", bare.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("holds no saved policy"), "{}", text(&o));
    // An unwritable --render-csv is named by the path given, not our temporary file's.
    // The CartPole run trained above.
    let trained = &trained_runs[0];
    let o = gradgym(&[
        "eval",
        trained.to_str().unwrap(),
        "--episodes",
        "1",
        "--render-csv",
        "/nonexistent-dir/x.csv",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot write /nonexistent-dir/x.csv"),
        "{}",
        text(&o)
    );
    // --render-csv never replaces the run's own files (it replaced metrics.csv), nor another
    // file unless --overwrite, nor a folder (which left `<name>.tmp` behind).
    let render = |to: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            trained.to_str().unwrap(),
            "--episodes",
            "1",
            "--render-csv",
            to.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradgym(&args)
    };
    let metrics = std::fs::read_to_string(trained.join("metrics.csv")).unwrap();
    let o = render(&trained.join("metrics.csv"), &["--overwrite"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("lies inside the run's folder"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(trained.join("metrics.csv")).unwrap(),
        metrics
    );
    let mine = trained.with_extension("mine.csv");
    std::fs::write(&mine, "mine").unwrap();
    let o = render(&mine, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("exists;"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
    // Nor, even with --overwrite, a file that is not an earlier trace (it replaced a sweep's
    // summary.csv); an earlier trace it replaces.
    let o = render(&mine, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is not a trace `gradgym eval` wrote"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
    std::fs::remove_file(&mine).unwrap();
    let o = render(&mine, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = render(&mine, &["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_to_string(&mine)
            .unwrap()
            .starts_with("episode,t,")
    );
    // Nor a link or a pipe (a device or a FIFO read as empty, and was renamed over; a FIFO
    // hung the check's read).
    let link = trained.with_extension("link.csv");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    let fifo = trained.with_extension("fifo.csv");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for special in [&link, &fifo] {
        let o = render(special, &["--overwrite"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("is not a regular file"), "{}", text(&o));
        let kind = std::fs::symlink_metadata(special).unwrap().file_type();
        assert!(!kind.is_file(), "{} replaced", special.display());
        std::fs::remove_file(special).unwrap();
    }
    // A config.toml that is empty (or cut before its fields) is refused, not read as defaults:
    // the run's seed would silently become seed 1.
    let emptied = trained.with_extension("emptied");
    let _ = std::fs::remove_dir_all(&emptied);
    std::fs::create_dir_all(&emptied).unwrap();
    for f in ["policy.safetensors", "policy.json"] {
        std::fs::copy(trained.join(f), emptied.join(f)).unwrap();
    }
    std::fs::write(emptied.join("config.toml"), "").unwrap();
    let o = gradgym(&["eval", emptied.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("config.toml: sets no `env_id`"),
        "{}",
        text(&o)
    );
    std::fs::write(
        emptied.join("config.toml"),
        "env_id = \"CartPole-v1\"\nalgo = \"ppo\"\n",
    )
    .unwrap();
    let o = gradgym(&["eval", emptied.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sets no `seed`"), "{}", text(&o));
    // ... unless --seed gives it.
    let o = gradgym(&["eval", emptied.to_str().unwrap(), "--seed", "7"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(&emptied).unwrap();
    let folder = trained.with_extension("render-dir");
    std::fs::create_dir_all(&folder).unwrap();
    let o = render(&folder, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a folder"), "{}", text(&o));
    assert!(!trained.with_extension("render-dir.tmp").exists());
    // A config.toml whose hidden layers are not the saved policy's is not one run's files.
    let mixed = trained.with_extension("mixed");
    let _ = std::fs::remove_dir_all(&mixed);
    std::fs::create_dir_all(&mixed).unwrap();
    for f in ["config.toml", "policy.safetensors", "policy.json"] {
        std::fs::copy(trained.join(f), mixed.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(mixed.join("config.toml")).unwrap();
    let hidden = config
        .lines()
        .find(|l| l.starts_with("hidden_sizes"))
        .unwrap()
        .to_string();
    std::fs::write(
        mixed.join("config.toml"),
        config.replace(&hidden, "hidden_sizes = [32, 32]"),
    )
    .unwrap();
    assert_ne!(hidden, "hidden_sizes = [32, 32]");
    let o = gradgym(&["eval", mixed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("but config.toml says hidden_sizes = [32, 32]"),
        "{}",
        text(&o)
    );
    // A policy whose files agree with each other but not with the env (the Pendulum policy
    // relabelled CartPole-v1) is refused naming policy.json and the field, before any
    // forward pass (it panicked on the observation's size).
    let pendulum = &trained_runs[1];
    let relabelled = trained.with_extension("relabelled");
    let _ = std::fs::remove_dir_all(&relabelled);
    std::fs::create_dir_all(&relabelled).unwrap();
    for f in ["config.toml", "policy.safetensors", "policy.json"] {
        let t = std::fs::read(pendulum.join(f)).unwrap();
        let t = String::from_utf8_lossy(&t).into_owned();
        if f == "policy.safetensors" {
            std::fs::copy(pendulum.join(f), relabelled.join(f)).unwrap();
        } else {
            std::fs::write(relabelled.join(f), t.replace("Pendulum-v1", "CartPole-v1")).unwrap();
        }
    }
    let o = gradgym(&["eval", relabelled.to_str().unwrap(), "--episodes", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("policy.json: the policy reads observations of 3 components (obs_dim), but CartPole-v1's have 4"),
        "{}",
        text(&o)
    );
    // Sizes in policy.json past the limit are refused by field before anything is allocated
    // (an 80 GB allocation aborted the process); a byte-order mark is no error.
    let json = std::fs::read_to_string(mixed.join("policy.json")).unwrap();
    std::fs::copy(trained.join("config.toml"), mixed.join("config.toml")).unwrap();
    let at = json.find("\"obs_dim\": 4").expect("obs_dim in policy.json");
    let huge = format!(
        "{}\"obs_dim\": 4611686018427387904{}",
        &json[..at],
        &json[at + 12..]
    );
    std::fs::write(mixed.join("policy.json"), huge).unwrap();
    let o = gradgym(&["eval", mixed.to_str().unwrap(), "--episodes", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("policy.json: field `obs_dim`: 4611686018427387904 is outside 1 to"),
        "{}",
        text(&o)
    );
    // So are they where the weights file lacks the tensors they would size (a file of no
    // tensors: the network was allocated from policy.json before the missing one was found).
    let wide = json.replacen("64", "16777216", 2);
    assert_ne!(wide, json);
    std::fs::write(mixed.join("policy.json"), &wide).unwrap();
    let weights = std::fs::read(mixed.join("policy.safetensors")).unwrap();
    let mut none = 8u64.to_le_bytes().to_vec();
    none.extend_from_slice(b"{}      ");
    std::fs::write(mixed.join("policy.safetensors"), none).unwrap();
    let o = gradgym(&["eval", mixed.to_str().unwrap(), "--episodes", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("policy.safetensors: tensor `actor.0.weight` is missing"),
        "{}",
        text(&o)
    );
    std::fs::write(mixed.join("policy.safetensors"), weights).unwrap();
    std::fs::write(mixed.join("policy.json"), format!("\u{feff}{json}")).unwrap();
    let o = gradgym(&["eval", mixed.to_str().unwrap(), "--episodes", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    // A folder of `gradgym rlhf` is named as such, with the command that samples it.
    let lm = trained.with_extension("lm");
    std::fs::create_dir_all(lm.join("policy")).unwrap();
    std::fs::write(lm.join("policy/model.json"), "{}").unwrap();
    let o = gradgym(&["eval", lm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds a language model of `gradgym rlhf`")
            && text(&o).contains("gradgym rlhf sample --model"),
        "{}",
        text(&o)
    );
    // A reward model (an rm run's folder) is told how it is used: to score samples.
    let rm = trained.with_extension("rm");
    std::fs::create_dir_all(rm.join("reward_model")).unwrap();
    std::fs::write(
        rm.join("reward_model/model.json"),
        r#"{"scalar_head": true}"#,
    )
    .unwrap();
    let o = gradgym(&["eval", rm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds a reward model of `gradgym rlhf`") && text(&o).contains("--rm "),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&rm).unwrap();
    for d in [&relabelled, &mixed, &lm] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_default_out_folder_is_named_as_a_sweep_names_its_runs() {
    let cwd = scratch("default-out");
    std::fs::create_dir_all(&cwd).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .args([
            "train",
            "--total-timesteps",
            "512",
            "--eval-episodes",
            "0",
            "--seed",
            "7",
        ])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        cwd.join("out/runs/CartPole-v1__ppo__seed7/summary.json")
            .is_file(),
        "{}",
        text(&o)
    );
}

/// A number past TOML's signed 64-bit integers: named as such for an integer field (it was
/// read as a string and refused as "invalid type: string"), taken as the float it is for a
/// float field (as `1e20` is).
#[test]
fn integers_past_toml_are_named_or_taken_as_floats() {
    let out = scratch("big-int");
    let o = gradgym(&[
        "train",
        "--num-envs",
        "99999999999999999999",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("--num-envs 99999999999999999999: an integer past what a TOML config holds"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    let o = gradgym(&[
        "train",
        "--total-timesteps",
        "512",
        "--max-grad-norm",
        "100000000000000000000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("max_grad_norm = 100000000000000000000.0"),
        "{config}"
    );
}

/// A value a config file sets and validation refuses is named with the file and line that set
/// it (it named the field alone, with the file and flag layers merged before the check).
#[test]
fn a_bad_value_names_the_file_and_line_that_set_it() {
    let dir = scratch("bad-value-line");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mine.toml");
    std::fs::write(&cfg, "learning_rate = 0.001\ngamma = 0\n").unwrap();
    let out = dir.join("out");
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = gradgym(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("mine.toml:2: config field `gamma`"),
        "{}",
        text(&o)
    );
    // A flag given after the file is the one named.
    let mut with_flag = args.to_vec();
    with_flag.extend(["--gamma", "1.5"]);
    let o = gradgym(&with_flag);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("command-line flags: config field `gamma`"),
        "{}",
        text(&o)
    );
    // A value of the wrong type and an unknown key are named by line too (they were named by
    // file alone: the layers are merged before their types are read).
    for (body, says) in [
        (
            "learning_rate = 0.001\n\ngamma = \"x\"\n",
            "mine.toml:3: config field `gamma`: invalid type: string \"x\", expected f64",
        ),
        (
            "learning_rate = 0.001\ngama = 0.9\n",
            "mine.toml:2: unknown field `gama`, expected one of",
        ),
        (
            "[prefs]\nlabels = 10\nlabls = 3\n",
            "mine.toml:3: unknown field `prefs.labls`, expected one of `labels`",
        ),
        (
            "hidden_sizes = [64, \"a\"]\n",
            "mine.toml:1: config field `hidden_sizes`: invalid type: string \"a\"",
        ),
        // An unknown table by the line of its header (it was named by file alone).
        (
            "seed = 3\n[foo]\nx = 1\n",
            "mine.toml:2: unknown field `foo`, expected one of",
        ),
        (
            "seed = 3\n\n[[foo]]\nx = 1\n",
            "mine.toml:3: unknown field `foo`, expected one of",
        ),
        (
            "seed = 3\n[foo.bar]\nx = 1\n",
            "mine.toml:2: unknown field `foo`, expected one of",
        ),
        // The key under its own table, not the top-level key of the same name.
        (
            "hidden_sizes = [64, 64]\n[prefs]\nlabels = 100\nhidden_sizes = \"big\"\n",
            "mine.toml:4: config field `prefs.hidden_sizes`: invalid type",
        ),
    ] {
        std::fs::write(&cfg, body).unwrap();
        let o = gradgym(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{says}\n{}", text(&o));
    }
    assert!(!out.exists());
}
