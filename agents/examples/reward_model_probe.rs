//! How well the reward model learns FixedHorizonCartPole-v0's reward from oracle labels, away
//! from the training loop: rollouts of 16 noisy balancing policies (16 envs × 500 steps, env i
//! acting at random with probability 0.05 + 0.9·i/16), `LABELS` pairs of `K`-step segments
//! labelled by a perfect synthetic human, a 3-member ensemble fitted for `STEPS` steps, and the
//! Pearson correlation of its prediction with the true reward on another seed's rollouts.
//! docs/preferences.md quotes it for the choice of segment length and input scaling.
//!
//!   cargo run --release --example reward_model_probe -- [HIDDEN] [LR] [STEPS] [K] [LABELS] [SCALE]
//!   defaults:                                            32x32   1e-3  1000   50  1000     0
//!
//! SCALE = 1 standardises the observation input (`rm_standardize`).

use gradgym_agents::prefs::reward_model::{Features, Label, RewardModel, Scratch};
use gradgym_agents::prefs::stats::pearson;
use gradgym_envs::preference::{OracleConfig, SyntheticHuman};
use gradgym_envs::rng::{self, Stream, uniform01};
use gradgym_envs::{Actions, EnvOptions, Space, make_with};

const ENVS: usize = 16;
const STEPS_PER_ENV: usize = 500;

/// Observations `[T·N, 4]`, actions and true rewards of one batch of rollouts.
struct Rollouts {
    obs: Vec<f32>,
    actions: Vec<i64>,
    rewards: Vec<f64>,
}

fn rollouts(seed: u64) -> Rollouts {
    let mut env = make_with("FixedHorizonCartPole-v0", &EnvOptions::new(ENVS, seed))
        .expect("a registered env");
    env.reset(None);
    let mut rng = rng::stream(seed, "probe/actions", 0);
    let (mut obs, mut actions, mut rewards) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..STEPS_PER_ENV {
        let o = env.observations().to_owned();
        let mut a = vec![0i64; ENVS];
        for (i, ai) in a.iter_mut().enumerate() {
            let noise = 0.05 + 0.9 * i as f64 / ENVS as f64;
            let row = o.row(i);
            let balance = (row[2] + 0.5 * row[3] + 0.05 * row[1]) > 0.0;
            *ai = if uniform01(&mut rng) < noise {
                (uniform01(&mut rng) < 0.5) as i64
            } else {
                balance as i64
            };
            obs.extend(row.iter().copied());
        }
        env.step(Actions::Discrete(&a)).expect("valid actions");
        actions.extend(&a);
        rewards.extend(env.rewards());
    }
    Rollouts {
        obs,
        actions,
        rewards,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let hidden: Vec<usize> = arg(0, "32x32")
        .split('x')
        .map(|s| s.parse().expect("HIDDEN like 32x32"))
        .collect();
    let lr: f64 = arg(1, "1e-3").parse().expect("LR");
    let steps: usize = arg(2, "1000").parse().expect("STEPS");
    let k: usize = arg(3, "50").parse().expect("K");
    let labels: usize = arg(4, "1000").parse().expect("LABELS");
    let scale = arg(5, "0") == "1";

    let train = rollouts(1);
    let test = rollouts(2);
    let mut features = Features::new(4, &Space::Discrete { n: 2 });
    if scale {
        features.fit_scale(&train.obs);
    }
    let dim = features.dim();
    let rows = |r: &Rollouts| {
        let mut x = Vec::new();
        for s in 0..r.actions.len() {
            features.push_discrete(&r.obs[s * 4..s * 4 + 4], r.actions[s], &mut x);
        }
        x
    };
    let (x_train, x_test) = (rows(&train), rows(&test));
    let mut model = RewardModel::new(
        features.clone(),
        &hidden,
        3,
        k,
        2,
        lr,
        0.0,
        [1.1, 1.5],
        &mut rng::stream(1, "probe/init", 0),
    );
    let mut human = SyntheticHuman::new(OracleConfig::default(), rng::stream(1, "probe/oracle", 0))
        .expect("a valid oracle");
    let mut pick = rng::stream(1, "probe/segments", 0);
    let segment = |rng: &mut Stream| {
        let env = (uniform01(rng) * ENVS as f64) as usize;
        let start = (uniform01(rng) * (STEPS_PER_ENV - k) as f64) as usize;
        let mut x = Vec::new();
        let mut r = Vec::new();
        for t in start..start + k {
            let s = t * ENVS + env;
            x.extend_from_slice(&x_train[s * dim..(s + 1) * dim]);
            r.push(train.rewards[s]);
        }
        (x, r)
    };
    let mut ties = 0;
    let mut set = Vec::new();
    for _ in 0..labels {
        let (mut x, r1) = segment(&mut pick);
        let (x2, r2) = segment(&mut pick);
        let answer = human.compare(&r1, &r2).expect("finite returns");
        ties += answer.choice.is_none() as usize;
        x.extend(x2);
        set.push(Label {
            rows: x,
            mu: answer.mu,
            choice: answer.choice,
        });
    }
    model.add_labels(set, &mut rng::stream(1, "probe/bootstrap", 0));
    let mut scratch = Scratch::default();
    println!(
        "hidden {hidden:?}, lr {lr}, {steps} steps, {k}-step segments, {labels} labels ({ties} ties), \
         standardised input: {scale}"
    );
    for round in 0..5 {
        let report = model.fit(
            steps / 5,
            16,
            &mut rng::stream(1, "probe/fit", round),
            &mut scratch,
        );
        let predicted: Vec<f64> = model
            .predict(&x_test, test.rewards.len(), &mut scratch)
            .iter()
            .map(|&p| p as f64)
            .collect();
        println!(
            "after {:5} steps: Pearson with the true reward on fresh rollouts {:.3}, held-out accuracy {:.3}",
            (round as usize + 1) * steps / 5,
            pearson(&predicted, &test.rewards).unwrap_or(f64::NAN),
            report.val_accuracy.unwrap_or(f64::NAN),
        );
    }
}
