//! Where one PPO gradient step spends its time, with CartPole's shapes (minibatch 128, separate
//! 64-64 actor and critic MLPs, clipped value loss), one libtorch thread. Prints the mean time
//! of each phase over 3,000 steps after 200 warm-up steps; then one whole step through each
//! backend (`Backend::step`, same minibatches), and one rollout policy call on 4 observations.
//!
//! `cargo run --release -p gradgym-agents --example update_timing`
use std::time::Instant;

use gradgym_agents::nn::Head;
use gradgym_agents::nn::torch::TorchActorCritic;
use gradgym_algorithms::losses::{normalize_advantages, ppo_clip_loss, value_loss};
use gradgym_envs::rng;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

fn main() {
    tch::set_num_threads(1);
    let mut r = rng::stream(0, "init", 0);
    let net = TorchActorCritic::new(
        4,
        Head::Categorical { n: 2 },
        &[64, 64],
        0.0,
        Device::Cpu,
        &mut r,
    );
    let mut opt = tch::nn::Adam::default().build(&net.vs, 2.5e-4).unwrap();
    let n = 512i64;
    let obs = Tensor::from_slice(
        &(0..n * 4)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect::<Vec<_>>(),
    )
    .view([n, 4]);
    let actions = Tensor::from_slice(&(0..n).map(|i| i % 2).collect::<Vec<i64>>());
    let old_lp = Tensor::from_slice(&vec![-0.69f32; n as usize]);
    let adv = Tensor::from_slice(&(0..n).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>());
    let ret = Tensor::from_slice(&(0..n).map(|i| (i % 11) as f32).collect::<Vec<_>>());
    let oldv = Tensor::from_slice(&vec![0.5f32; n as usize]);
    let steps = 3000;
    let mut t = [0f64; 6];
    for s in 0..steps + 200 {
        let i0 = Instant::now();
        let idx = Tensor::from_slice(
            &((s as i64 % 4) * 128..(s as i64 % 4 + 1) * 128).collect::<Vec<_>>(),
        );
        let o = obs.index_select(0, &idx);
        let a = actions.index_select(0, &idx);
        let i1 = Instant::now();
        let ev = net.evaluate(&o, &a);
        let i2 = Instant::now();
        let mb = normalize_advantages(&adv.index_select(0, &idx));
        let (pg, _) = ppo_clip_loss(&ev.logprobs, &old_lp.index_select(0, &idx), &mb, 0.2);
        let vl = value_loss(
            &ev.values,
            &ret.index_select(0, &idx),
            &oldv.index_select(0, &idx),
            Some(0.2),
        );
        let ent = ev.entropy.mean(Kind::Float);
        let loss = pg - &ent * 0.01 + vl * 0.5;
        let _ = loss.double_value(&[]);
        let i3 = Instant::now();
        opt.zero_grad();
        loss.backward();
        let i4 = Instant::now();
        opt.clip_grad_norm(0.5);
        let i5 = Instant::now();
        opt.step();
        let i6 = Instant::now();
        if s >= 200 {
            for (k, (x, y)) in [(i0, i1), (i1, i2), (i2, i3), (i3, i4), (i4, i5), (i5, i6)]
                .iter()
                .enumerate()
            {
                t[k] += (*y - *x).as_secs_f64();
            }
        }
    }
    let names = [
        "gather",
        "evaluate (forward)",
        "losses (+ratio stats)",
        "zero_grad+backward",
        "clip_grad_norm",
        "adam step",
    ];
    let total: f64 = t.iter().sum();
    for (n, v) in names.iter().zip(t) {
        println!("{n:<24} {:>7.1} µs", v / steps as f64 * 1e6);
    }
    println!("{:<24} {:>7.1} µs", "total", total / steps as f64 * 1e6);
    backends();
}

/// One PPO gradient step through each backend on the same minibatches, and the rollout policy.
fn backends() {
    use gradgym_agents::backend::{
        Backend, Minibatch, Objective, PolicyLoss, ValueLoss, libtorch::Libtorch, native::Native,
    };
    use gradgym_agents::config::TrainConfig;
    use gradgym_agents::nn::Scratch;

    let config = TrainConfig::default();
    let head = Head::Categorical { n: 2 };
    let objective = Objective {
        policy: PolicyLoss::Clip { clip_coef: 0.2 },
        value: ValueLoss::Clipped { clip_coef: 0.2 },
        baseline: false,
        normalize: true,
        ent_coef: 0.01,
        vf_coef: 0.5,
        max_grad_norm: 0.5,
    };
    let batches: Vec<Minibatch> = (0..4)
        .map(|b| {
            let rows = b * 128..(b + 1) * 128;
            Minibatch {
                len: 128,
                obs: rows
                    .clone()
                    .flat_map(|i| {
                        (0..4).map(move |j| (((i * 4 + j) * 37 % 101) as f32 / 50.0) - 1.0)
                    })
                    .collect(),
                actions_discrete: rows.clone().map(|i| (i % 2) as i64).collect(),
                actions_continuous: Vec::new(),
                old_logprobs: vec![-0.69; 128],
                old_values: vec![0.5; 128],
                weights: rows.clone().map(|i| (i % 7) as f32 - 3.0).collect(),
                returns: rows.map(|i| (i % 11) as f32).collect(),
            }
        })
        .collect();
    let mut models: Vec<Box<dyn Backend>> = vec![
        Box::new(
            Libtorch::new(
                &config,
                4,
                head,
                Device::Cpu,
                &mut rng::stream(0, "init", 0),
            )
            .unwrap(),
        ),
        Box::new(Native::new(
            &config,
            4,
            head,
            &mut rng::stream(0, "init", 0),
        )),
    ];
    println!();
    for model in models.iter_mut() {
        let steps = 3000;
        let mut t0 = Instant::now();
        for s in 0..steps + 200 {
            if s == 200 {
                t0 = Instant::now();
            }
            model.step(&batches[s % 4], &objective, s).unwrap();
        }
        let per = t0.elapsed().as_secs_f64() / steps as f64;
        println!(
            "{:<24} {:>7.1} µs per step (× 15,616 steps of a 500k CartPole run = {:.2} s)",
            format!("backend {}", model.name()),
            per * 1e6,
            per * 15_616.0
        );
    }
    let policy = models[1].snapshot();
    let mut scratch = Scratch::default();
    let obs = &batches[0].obs[..16];
    let calls = 100_000;
    let t0 = Instant::now();
    let mut sink = 0.0;
    for _ in 0..calls {
        sink += policy.forward(obs, 4, &mut scratch).1[0];
    }
    let per = t0.elapsed().as_secs_f64() / calls as f64;
    println!(
        "{:<24} {:>7.1} µs per call (× 125,000 calls = {:.2} s) [{sink:.1}]",
        "rollout policy, 4 obs",
        per * 1e6,
        per * 125_000.0
    );
}
