//! Training end to end: every algorithm on every env family for a tiny budget, the files a run
//! writes, determinism, pinned first-update losses, and failures that keep what was written.

use std::path::{Path, PathBuf};

use gradgym::agents::config::{Algo, BackendKind, TrainConfig};
use gradgym::agents::train::{METRIC_COLUMNS, train};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradgym-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny(env: &str, algo: Algo) -> TrainConfig {
    TrainConfig {
        env_id: env.into(),
        algo,
        total_timesteps: 2048,
        num_envs: 4,
        num_steps: 64,
        num_minibatches: 4,
        update_epochs: 2,
        eval_episodes: 2,
        ..TrainConfig::default()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// metrics.csv without its timing columns (SPS, wall_seconds: the last two).
fn metrics_without_timing(dir: &Path) -> Vec<String> {
    read(&dir.join("metrics.csv"))
        .lines()
        .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string())
        .collect()
}

#[test]
fn every_algorithm_trains_on_every_env_family() {
    // Discrete (CartPole, Acrobot) and continuous (Pendulum, MountainCarContinuous) actions.
    for env in [
        "CartPole-v1",
        "Acrobot-v1",
        "Pendulum-v1",
        "MountainCarContinuous-v0",
    ] {
        for (algo, backend) in [Algo::Reinforce, Algo::A2c, Algo::Ppo]
            .into_iter()
            .flat_map(|a| [(a, BackendKind::Native), (a, BackendKind::Libtorch)])
        {
            let dir = scratch(&format!("{env}-{}-{}", algo.name(), backend.name()));
            let mut config = TrainConfig {
                backend,
                ..tiny(env, algo)
            };
            if algo == Algo::Reinforce {
                // One batch of complete episodes can be long (999 steps for MountainCarContinuous).
                config.total_timesteps = 1;
            }
            let summary = train(&config, &dir, &mut |_| {}).unwrap();
            assert_eq!(
                summary.status,
                "completed",
                "{env} {}: {:?}",
                algo.name(),
                summary.error
            );
            assert!(summary.iterations >= 1);
            assert!(summary.eval_return_mean.is_some_and(f64::is_finite));
            let metrics = read(&dir.join("metrics.csv"));
            let mut lines = metrics.lines();
            assert_eq!(lines.next().unwrap(), METRIC_COLUMNS.join(","));
            let rows: Vec<&str> = lines.collect();
            assert_eq!(rows.len() as u64, summary.iterations);
            for row in rows {
                assert_eq!(row.split(',').count(), METRIC_COLUMNS.len(), "{row}");
            }
            let manifest: serde_json::Value =
                serde_json::from_str(&read(&dir.join("manifest.json"))).unwrap();
            assert_eq!(manifest["config"]["env_id"], env);
            assert_eq!(manifest["seed"], 1);
            assert!(
                manifest["libtorch_version"]
                    .as_str()
                    .unwrap()
                    .starts_with("2.11.0")
            );
            let written: serde_json::Value =
                serde_json::from_str(&read(&dir.join("summary.json"))).unwrap();
            assert_eq!(written["status"], "completed");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_metrics_and_another_seed_does_not() {
    for (algo, backend) in [Algo::Ppo, Algo::A2c, Algo::Reinforce]
        .into_iter()
        .flat_map(|a| [(a, BackendKind::Native), (a, BackendKind::Libtorch)])
    {
        let config = TrainConfig {
            total_timesteps: if algo == Algo::Reinforce { 600 } else { 2048 },
            backend,
            ..tiny("CartPole-v1", algo)
        };
        let (a, b, c) = (scratch("det-a"), scratch("det-b"), scratch("det-c"));
        let sa = train(&config, &a, &mut |_| {}).unwrap();
        let sb = train(&config, &b, &mut |_| {}).unwrap();
        assert_eq!(
            metrics_without_timing(&a),
            metrics_without_timing(&b),
            "{}",
            algo.name()
        );
        assert_eq!(
            (sa.final_return_mean_last100, sa.eval_return_mean),
            (sb.final_return_mean_last100, sb.eval_return_mean)
        );
        let other = TrainConfig { seed: 2, ..config };
        train(&other, &c, &mut |_| {}).unwrap();
        assert_ne!(
            metrics_without_timing(&a),
            metrics_without_timing(&c),
            "{}",
            algo.name()
        );
    }
}

#[test]
fn first_update_losses_are_pinned() {
    // Value stability: a change to initialisation, sampling, the env, GAE or the PPO loss
    // changes these numbers completely; the tolerance (1e-4 relative, 1e-6 absolute for the
    // near-zero policy loss and KL) only allows for kernels rounding differently.
    // Both backends: the native one's hand-written gradients give the first update's numbers
    // that libtorch's autograd gives.
    for backend in [BackendKind::Libtorch, BackendKind::Native] {
        let config = TrainConfig {
            total_timesteps: 512,
            backend,
            ..TrainConfig::default()
        };
        let dir = scratch(&format!("pinned-{}", backend.name()));
        train(&config, &dir, &mut |_| {}).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(&read(&dir.join("manifest.json"))).unwrap();
        assert_eq!(manifest["backend"], backend.name());
        let metrics = read(&dir.join("metrics.csv"));
        let row: Vec<&str> = metrics.lines().nth(1).unwrap().split(',').collect();
        let col = |name: &str| {
            row[METRIC_COLUMNS.iter().position(|c| *c == name).unwrap()]
                .parse::<f64>()
                .unwrap()
        };
        let got = [
            col("policy_loss"),
            col("value_loss"),
            col("entropy"),
            col("approx_kl"),
        ];
        let pinned = PINNED_FIRST_UPDATE;
        for (g, p) in got.iter().zip(pinned) {
            assert!(
                (g - p).abs() <= 1e-4 * p.abs().max(1e-2),
                "{backend:?}: first update {got:?}, pinned {pinned:?}"
            );
        }
    }
}

const PINNED_FIRST_UPDATE: [f64; 4] = [
    -0.003776952624320984,
    39.81080627441406,
    0.6926978826522827,
    0.0004775654524564743,
];

#[test]
fn bad_configs_are_refused_before_anything_is_written() {
    let dir = scratch("bad");
    let config = TrainConfig {
        num_envs: 0,
        ..TrainConfig::default()
    };
    let e = train(&config, &dir, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("num_envs"), "{e}");
    assert!(!dir.exists());
    let config = TrainConfig {
        device: "cuda".into(),
        backend: BackendKind::Native,
        ..TrainConfig::default()
    };
    let e = train(&config, &dir, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("backend") && e.contains("CPU only"), "{e}");
    assert!(!dir.exists());
    let config = TrainConfig {
        env_id: "Pong-v5".into(),
        ..TrainConfig::default()
    };
    let e = train(&config, &dir, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("Pong-v5") && e.to_string().contains("CartPole-v1"),
        "{e}"
    );
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_what_was_written() {
    // A huge learning rate makes the weights overflow after the first step, so a later
    // update's loss is not finite.
    let dir = scratch("nan");
    let config = TrainConfig {
        learning_rate: 1e30,
        anneal_lr: false,
        ..tiny("CartPole-v1", Algo::A2c)
    };
    let summary = train(&config, &dir, &mut |_| {}).unwrap();
    assert_eq!(summary.status, "failed");
    let error = summary.error.unwrap();
    assert!(
        error.contains("non-finite loss") && error.contains("iteration"),
        "{error}"
    );
    let metrics = read(&dir.join("metrics.csv"));
    assert!(
        metrics.lines().count() >= 2,
        "the finished iterations stay readable"
    );
    let written: serde_json::Value =
        serde_json::from_str(&read(&dir.join("summary.json"))).unwrap();
    assert_eq!(written["status"], "failed");
}

#[test]
fn a_panic_inside_libtorch_is_recorded_as_a_failed_run() {
    // tch panics when a learning rate does not fit a float32.
    let dir = scratch("panic");
    let config = TrainConfig {
        learning_rate: 1e300,
        backend: BackendKind::Libtorch,
        ..tiny("CartPole-v1", Algo::Ppo)
    };
    let summary = train(&config, &dir, &mut |_| {}).unwrap();
    assert_eq!(summary.status, "failed");
    assert!(
        summary.error.as_deref().unwrap().contains("panic"),
        "{:?}",
        summary.error
    );
    let written: serde_json::Value =
        serde_json::from_str(&read(&dir.join("summary.json"))).unwrap();
    assert_eq!(written["status"], "failed");
}

#[test]
fn ppo_kl_penalty_adapts_beta_and_target_kl_stops_epochs_early() {
    use gradgym::agents::config::PpoLoss;
    let col = |dir: &Path, name: &str| -> Vec<f64> {
        let metrics = read(&dir.join("metrics.csv"));
        let i = METRIC_COLUMNS.iter().position(|c| *c == name).unwrap();
        metrics
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(i).unwrap().parse().unwrap())
            .collect()
    };
    // KL penalty with an adaptive β: β is logged and moves away from its start.
    let dir = scratch("kl");
    let config = TrainConfig {
        ppo_loss: PpoLoss::Kl,
        kl_coef: 1.0,
        kl_target: Some(0.001),
        total_timesteps: 4096,
        ..tiny("CartPole-v1", Algo::Ppo)
    };
    assert_eq!(
        train(&config, &dir, &mut |_| {}).unwrap().status,
        "completed"
    );
    let betas = col(&dir, "kl_beta");
    assert!(betas.iter().all(|b| *b > 0.0), "{betas:?}");
    assert!(
        betas.iter().any(|b| *b != 1.0),
        "adaptive β never moved: {betas:?}"
    );

    // A tiny target_kl stops each update after its first epoch (4 minibatches).
    let dir = scratch("target-kl");
    let config = TrainConfig {
        target_kl: Some(1e-12),
        update_epochs: 4,
        ..tiny("CartPole-v1", Algo::Ppo)
    };
    train(&config, &dir, &mut |_| {}).unwrap();
    let steps = col(&dir, "gradient_steps");
    assert!(steps.iter().all(|s| *s == 4.0), "{steps:?}");
}

#[test]
fn cuda_is_refused_clearly_where_libtorch_sees_no_gpu() {
    let dir = scratch("cuda");
    let config = TrainConfig {
        device: "cuda".into(),
        ..tiny("CartPole-v1", Algo::Ppo)
    };
    if tch::Cuda::is_available() {
        // On a GPU machine the same run trains on the GPU.
        assert_eq!(
            train(&config, &dir, &mut |_| {}).unwrap().status,
            "completed"
        );
    } else {
        let e = train(&config, &dir, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("no CUDA device"), "{e}");
    }
    let bad = TrainConfig {
        device: "tpu".into(),
        ..TrainConfig::default()
    };
    assert!(
        train(&bad, &dir, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("unknown device `tpu`")
    );
}
