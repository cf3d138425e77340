//! `gradgym train` and `gradgym info` end to end.

mod common;

use common::{gradgym, text};

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
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
        text(&o).contains("unknown algo `dqn`; valid: reinforce, a2c, ppo"),
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
    let o = gradgym(&[
        "train",
        "--algo",
        "a2c",
        "--learning-rate",
        "1e30",
        "--anneal-lr",
        "false",
        "--total-timesteps",
        "4000",
        "--out",
        out.to_str().unwrap(),
    ]);
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
}
