//! One gradient pass (forward with activations, backward to every parameter) of the bench
//! model's policy and value network on the PPO bench batch, through libtorch's autograd and
//! through the native passes, alternated: `cargo run --release -p gradgym-agents --example
//! native_step_timing [threads]`.

use std::time::Instant;

use gradgym_agents::nn::gpt::{Gpt, GptConfig};
use gradgym_agents::nn::gpt_native::{Batch, Head, NativeGpt};
use gradgym_envs::rng;
use tch::{Device, Kind, Tensor};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("threads"))
        .unwrap_or(2);
    tch::set_num_threads(threads as i32);
    let (b, l, from) = (64usize, 31usize, 7usize);
    let r = l - from;
    let mut rng = rng::stream(1, "native-step-timing", 0);
    let policy = Gpt::new(GptConfig::bench(), Device::Cpu, &mut rng).unwrap();
    let value = Gpt::new(
        GptConfig {
            scalar_head: true,
            ..GptConfig::bench()
        },
        Device::Cpu,
        &mut rng,
    )
    .unwrap();
    let np = NativeGpt::of(&policy);
    let nv = NativeGpt::of(&value);
    let toks: Vec<i64> = (0..b * l).map(|i| ((i * 7919) % 512) as i64).collect();
    let targets: Vec<i64> = (0..b * r).map(|i| ((i * 104_729) % 512) as i64).collect();
    let coef: Vec<f32> = (0..b * r).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let t_in = Tensor::from_slice(&toks).view([b as i64, l as i64]);
    let t_tg = Tensor::from_slice(&targets).view([b as i64, r as i64]);
    let w = Tensor::from_slice(&coef).view([b as i64, r as i64]);
    let batch = Batch {
        tokens: &toks,
        b,
        l,
        from,
    };
    let torch_policy = || {
        let lp = policy
            .logits(&policy.hidden_from(&t_in, from as i64))
            .log_softmax(-1, Kind::Float)
            .gather(2, &t_tg.unsqueeze(-1), false)
            .squeeze_dim(-1);
        (lp * &w).sum(Kind::Float).backward();
    };
    let torch_value = || {
        let v = value.scalar(&value.hidden_from(&t_in, from as i64));
        (v * &w).sum(Kind::Float).backward();
    };
    let native_policy = || {
        let (_, tape) = np.forward(batch, Head::Lm { targets: &targets }, true, threads);
        std::hint::black_box(np.backward(&tape.unwrap(), &coef, None, threads));
    };
    let native_value = || {
        let (_, tape) = nv.forward(batch, Head::Scalar, true, threads);
        std::hint::black_box(nv.backward(&tape.unwrap(), &coef, None, threads));
    };
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    if std::env::var_os("NATIVE_ONLY").is_some() {
        let (mut p, mut v) = (vec![], vec![]);
        for _ in 0..15 {
            p.push(time(&native_policy));
            v.push(time(&native_value));
        }
        p.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("native only: policy {:.1} ms, value {:.1} ms", p[7], v[7]);
        return;
    }
    for _ in 0..3 {
        torch_policy();
        native_policy();
        torch_value();
        native_value();
    }
    let (mut tp, mut np_, mut tv, mut nv_) = (vec![], vec![], vec![], vec![]);
    for _ in 0..15 {
        tp.push(time(&torch_policy));
        np_.push(time(&native_policy));
        tv.push(time(&torch_value));
        nv_.push(time(&native_value));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "{threads} threads, batch {b} × {l} positions ({r} read), medians of 15 alternated passes"
    );
    println!(
        "policy forward+backward: libtorch {:.1} ms, native {:.1} ms",
        med(&mut tp),
        med(&mut np_)
    );
    println!(
        "value  forward+backward: libtorch {:.1} ms, native {:.1} ms",
        med(&mut tv),
        med(&mut nv_)
    );
}
