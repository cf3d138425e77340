//! The preference loop's pieces: the reward model's gradient against libtorch's autograd (ties
//! and K-way included), recovery of a known reward from oracle labels, the label schedule,
//! and whole in-memory runs (every label used, reproducible from the seed).

use gradgym_agents::config::TrainConfig;
use gradgym_agents::prefs::PrefsConfig;
use gradgym_agents::prefs::reward_model::{Features, Label, RewardModel, Scratch};
use gradgym_agents::prefs::stats::spearman;
use gradgym_agents::train::run;
use gradgym_envs::Space;
use gradgym_envs::preference::{OracleConfig, SyntheticHuman};
use gradgym_envs::rng::{self, standard_normal};
use tch::{Kind, Tensor};

fn model(obs_dim: usize, k: usize, kk: usize, hidden: &[usize], seed: u64) -> RewardModel {
    let features = Features::new(
        obs_dim,
        &Space::Box {
            low: vec![-1.0],
            high: vec![1.0],
        },
    );
    RewardModel::new(
        features,
        hidden,
        3,
        k,
        kk,
        1e-3,
        0.0,
        [1.1, 1.5],
        &mut rng::stream(seed, "test/init", 0),
    )
}

fn random_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = rng::stream(seed, "test/rows", 0);
    (0..n * dim)
        .map(|_| standard_normal(&mut r) as f32)
        .collect()
}

/// The same loss through libtorch: x·M + b per layer, tanh between, segment sums, log-softmax,
/// −Σ μ log p averaged over the batch.
fn autograd(m: &RewardModel, params: &[f32], batch: &[u32]) -> (f64, Vec<f32>) {
    let p = Tensor::from_slice(params).set_requires_grad(true);
    let kk = m.num_segments;
    let k = m.segment_length;
    let dim = m.features.dim();
    let rows: Vec<f32> = batch
        .iter()
        .flat_map(|&i| m.labels[i as usize].rows.clone())
        .collect();
    let mu: Vec<f32> = batch
        .iter()
        .flat_map(|&i| m.labels[i as usize].mu.iter().map(|&x| x as f32))
        .collect();
    let mut h = Tensor::from_slice(&rows).reshape([(batch.len() * kk * k) as i64, dim as i64]);
    let last = m.mlp.layers.len() - 1;
    for (i, l) in m.mlp.layers.iter().enumerate() {
        let w = p
            .narrow(0, l.w as i64, (l.inputs * l.outputs) as i64)
            .reshape([l.inputs as i64, l.outputs as i64]);
        let b = p.narrow(0, l.b as i64, l.outputs as i64);
        h = h.matmul(&w) + b;
        if i != last {
            h = h.tanh();
        }
    }
    let sums = h
        .reshape([batch.len() as i64, kk as i64, k as i64])
        .sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
    let logp = sums.log_softmax(1, Kind::Float);
    let mu = Tensor::from_slice(&mu).reshape([batch.len() as i64, kk as i64]);
    let loss = -(mu * logp)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float);
    loss.backward();
    let g = p.grad();
    (
        loss.double_value(&[]),
        Vec::<f32>::try_from(g.contiguous()).unwrap(),
    )
}

#[test]
fn the_reward_models_gradient_is_autograds_ties_and_k_way_included() {
    for (kk, seed) in [(2usize, 1u64), (3, 2)] {
        let k = 5;
        let mut m = model(3, k, kk, &[7, 6], seed);
        let dim = m.features.dim();
        // A mix of answers: each segment preferred in turn, and ties (uniform μ).
        let labels: Vec<Label> = (0..8)
            .map(|i| {
                let choice = (i % (kk + 1) < kk).then_some(i % (kk + 1));
                Label {
                    rows: random_rows(kk * k, dim, seed * 100 + i as u64),
                    mu: match choice {
                        Some(c) => (0..kk).map(|j| (j == c) as u8 as f64).collect(),
                        None => vec![1.0 / kk as f64; kk],
                    },
                    choice,
                }
            })
            .collect();
        assert!(
            labels.iter().any(|l| l.choice.is_none()),
            "ties are in the batch"
        );
        m.add_labels(labels, &mut rng::stream(seed, "test/bootstrap", 0));
        let batch: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 6, 7, 2];
        let params = m.members[0].params.clone();
        let mut scratch = Scratch::default();
        let (loss, grads) = m.loss_and_gradient(&params, &batch, &mut scratch);
        let grads = grads.to_vec();
        let (t_loss, t_grads) = autograd(&m, &params, &batch);
        assert!(
            (loss - t_loss).abs() < 1e-5,
            "K = {kk}: loss {loss} vs autograd {t_loss}"
        );
        let scale = t_grads.iter().fold(0.0f32, |a, g| a.max(g.abs()));
        assert!(scale > 1e-3, "a gradient worth comparing");
        for (j, (a, b)) in grads.iter().zip(&t_grads).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale + 1e-6,
                "K = {kk}: parameter {j}: native {a} vs autograd {b}"
            );
        }
    }
}

#[test]
fn oracle_labels_of_a_linear_reward_teach_it_back() {
    // r(x) = w·x on 4-dimensional states (the action column is constant, so carries nothing).
    let w = [0.8f64, -0.5, 0.3, 1.1];
    let reward = |row: &[f32]| -> f64 { row[..4].iter().zip(&w).map(|(x, w)| *x as f64 * w).sum() };
    let k = 10;
    let mut m = model(4, k, 2, &[32, 32], 7);
    let dim = m.features.dim();
    let mut human =
        SyntheticHuman::new(OracleConfig::default(), rng::stream(7, "test/oracle", 0)).unwrap();
    let mut labels = Vec::new();
    for i in 0..400u64 {
        let mut rows = random_rows(2 * k, dim, 1000 + i);
        for row in rows.chunks_exact_mut(dim) {
            row[4] = 0.0;
        }
        let r: Vec<Vec<f64>> = rows
            .chunks_exact(k * dim)
            .map(|seg| seg.chunks_exact(dim).map(reward).collect())
            .collect();
        let answer = human.compare(&r[0], &r[1]).unwrap();
        labels.push(Label {
            rows,
            mu: answer.mu,
            choice: answer.choice,
        });
    }
    let mut bootstrap = rng::stream(7, "test/bootstrap", 0);
    m.add_labels(labels, &mut bootstrap);
    let mut scratch = Scratch::default();
    let report = m.fit(1500, 32, &mut rng::stream(7, "test/fit", 0), &mut scratch);
    assert!(report.val_accuracy.unwrap() > 0.85, "{report:?}");
    // Fresh states, never labelled.
    let mut fresh = random_rows(2000, dim, 99);
    for row in fresh.chunks_exact_mut(dim) {
        row[4] = 0.0;
    }
    let predicted: Vec<f64> = m
        .predict(&fresh, 2000, &mut scratch)
        .iter()
        .map(|&p| p as f64)
        .collect();
    let truth: Vec<f64> = fresh.chunks_exact(dim).map(reward).collect();
    let rho = spearman(&predicted, &truth).unwrap();
    assert!(rho >= 0.95, "Spearman {rho}");
    // And an untrained model does not: the test can fail.
    let untrained = model(4, k, 2, &[32, 32], 7);
    let p0: Vec<f64> = untrained
        .predict(&fresh, 2000, &mut scratch)
        .iter()
        .map(|&p| p as f64)
        .collect();
    assert!(spearman(&p0, &truth).unwrap() < 0.9);
}

fn prefs_config(env: &str, labels: u64) -> TrainConfig {
    TrainConfig {
        env_id: env.into(),
        total_timesteps: 512 * 12,
        eval_episodes: 1,
        prefs: Some(PrefsConfig {
            labels,
            segment_length: 10,
            initial_fit_steps: 20,
            fit_steps: 5,
            query_batch: Some(5),
            ..PrefsConfig::default()
        }),
        ..TrainConfig::default()
    }
}

/// A run's `labels_used` column, row by row.
fn labels_used(r: &gradgym_agents::train::RunResult) -> Vec<f64> {
    r.rows
        .iter()
        .map(|row| row.f64("labels_used").unwrap())
        .collect()
}

#[test]
fn a_run_asks_its_whole_budget_on_schedule_and_repeats_itself() {
    let config = prefs_config("FixedHorizonCartPole-v0", 40);
    let a = run(&config, None).unwrap();
    assert_eq!(a.summary.status, "completed", "{:?}", a.summary.error);
    let used = labels_used(&a);
    // 25% before the first update, every label by the end, never more, never fewer later.
    assert_eq!(used[0], 10.0);
    assert_eq!(*used.last().unwrap(), 40.0);
    assert!(used.windows(2).all(|w| w[0] <= w[1]));
    // Rounds of at least query_batch labels: the count moves in steps of ≥ 5 (the last may be less).
    for w in used.windows(2) {
        assert!(
            w[1] == w[0] || w[1] - w[0] >= 5.0 || w[1] == 40.0,
            "{used:?}"
        );
    }
    for c in ["rm_accuracy", "rm_train_loss", "reward_pearson", "rm_l2"] {
        assert!(a.columns.contains(c), "{c}");
    }
    let b = run(&config, None).unwrap();
    let strip = |r: &gradgym_agents::train::RunResult| -> Vec<String> {
        r.rows
            .iter()
            .map(|row| {
                let mut row = row.clone();
                row.set("SPS", 0u64).set("wall_seconds", 0u64);
                r.columns.line(&row).unwrap()
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b), "interleaved runs repeat themselves");
    // Another seed is another run.
    let other = run(&TrainConfig { seed: 2, ..config }, None).unwrap();
    assert_ne!(strip(&a), strip(&other));
}

#[test]
fn the_learner_is_paid_the_learned_reward_not_the_true_one() {
    // On Pendulum the true reward is ≤ 0 everywhere; the learned one is normalised to zero
    // mean over recent queries, so its episode returns differ from the env's.
    let a = run(&prefs_config("Pendulum-v1", 30), None).unwrap();
    assert_eq!(a.summary.status, "completed", "{:?}", a.summary.error);
    let row = a
        .rows
        .iter()
        .find(|r| r.f64("episodic_return").is_some())
        .expect("an episode ends");
    let true_return = row.f64("episodic_return").unwrap();
    let learned = row.f64("learned_episodic_return").unwrap();
    assert!(true_return < -100.0, "{true_return}");
    assert!(
        (learned - true_return).abs() > 50.0,
        "{learned} vs {true_return}"
    );
    // And at its normalised scale: this episode's learned return is −0.18 with the default
    // reward_std = 0.05, and −3.6 were it normalised to 1.
    assert!(learned.abs() < 1.0, "{learned}");
}

#[test]
fn async_mode_waits_for_the_initial_fit_and_finishes() {
    let mut config = prefs_config("FixedHorizonCartPole-v0", 30);
    config.prefs.as_mut().unwrap().mode = "async".into();
    let a = run(&config, None).unwrap();
    assert_eq!(a.summary.status, "completed", "{:?}", a.summary.error);
    assert!(
        a.rows[0].f64("labels_used").unwrap() >= 8.0,
        "the initial fit is waited for"
    );
}

#[test]
fn every_learner_trains_on_the_learned_reward_even_with_rollouts_shorter_than_a_segment() {
    // A2C with 4-step rollouts and 10-step segments: segments span rollouts, the initial batch
    // waits for enough of them and the learner is paid 0 until the first fit.
    let mut a2c = prefs_config("FixedHorizonCartPole-v0", 30);
    a2c.algo = gradgym_agents::config::Algo::A2c;
    a2c.num_steps = 4;
    a2c.total_timesteps = 4 * 4 * 60;
    let r = run(&a2c, None).unwrap();
    assert_eq!(r.summary.status, "completed", "{:?}", r.summary.error);
    let used = labels_used(&r);
    // Two 4-step rollouts hold no 10-step segment; three do, and the initial 25% (8) is asked.
    assert_eq!(&used[..3], &[0.0, 0.0, 8.0], "{used:?}");
    assert_eq!(r.rows[0].f64("learned_episodic_return"), None);
    assert_eq!(*used.last().unwrap(), 30.0);
    // REINFORCE: whole episodes per rollout.
    let mut reinforce = prefs_config("Pendulum-v1", 20);
    reinforce.algo = gradgym_agents::config::Algo::Reinforce;
    reinforce.total_timesteps = 4 * 200 * 3;
    let r = run(&reinforce, None).unwrap();
    assert_eq!(r.summary.status, "completed", "{:?}", r.summary.error);
    assert_eq!(r.rows.last().unwrap().f64("labels_used"), Some(20.0));
}

/// A run whose first labels can only be asked on its last rollout (one rollout long, or
/// segments that first fit there) asks its whole budget then, not just the initial share.
#[test]
fn a_first_batch_on_the_last_rollout_asks_the_whole_budget() {
    let mut one = prefs_config("FixedHorizonCartPole-v0", 40);
    one.total_timesteps = 512;
    let r = run(&one, None).unwrap();
    assert_eq!(r.summary.status, "completed", "{:?}", r.summary.error);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].f64("labels_used"), Some(40.0));
    // A2C whose 5-step rollouts first hold a 10-step segment at the second, its last.
    let mut a2c = prefs_config("FixedHorizonCartPole-v0", 40);
    a2c.algo = gradgym_agents::config::Algo::A2c;
    a2c.num_steps = 5;
    a2c.total_timesteps = 4 * 5 * 2;
    let r = run(&a2c, None).unwrap();
    assert_eq!(r.summary.status, "completed", "{:?}", r.summary.error);
    let used = labels_used(&r);
    assert_eq!(used, [0.0, 40.0]);
}

/// `l2 = 0` is no L2 at all, through every adaptation.
#[test]
fn an_l2_of_0_stays_0() {
    use gradgym_agents::prefs::reward_model::adapted_l2;
    for (train, val) in [(1.0, 10.0), (1.0, 0.1), (1.0, 1.2)] {
        assert_eq!(adapted_l2(0.0, train, val, [1.1, 1.5]), 0.0);
    }
    assert_eq!(adapted_l2(1e-4, 1.0, 10.0, [1.1, 1.5]), 1e-4 * 1.5);
    assert_eq!(adapted_l2(1e-8, 1.0, 0.1, [1.1, 1.5]), 1e-8);
    let mut c = prefs_config("FixedHorizonCartPole-v0", 40);
    c.prefs.as_mut().unwrap().l2 = 0.0;
    let r = run(&c, None).unwrap();
    assert_eq!(r.summary.status, "completed", "{:?}", r.summary.error);
    assert!(
        r.rows
            .iter()
            .all(|row| row.f64("rm_l2").is_none_or(|v| v == 0.0))
    );
    assert!(r.rows.iter().any(|row| row.f64("rm_l2") == Some(0.0)));
}

#[test]
fn episodes_shorter_than_a_segment_fail_the_run_naming_the_field() {
    // CartPole-v1 terminates: a random policy's episodes last about 20 steps, never 200.
    let mut c = prefs_config("CartPole-v1", 20);
    c.prefs.as_mut().unwrap().segment_length = 200;
    c.num_steps = 256;
    c.total_timesteps = 4 * 256 * 30;
    let r = run(&c, None).unwrap();
    assert_eq!(r.summary.status, "failed");
    let e = r.summary.error.unwrap();
    assert!(e.contains("prefs.segment_length"), "{e}");
}
