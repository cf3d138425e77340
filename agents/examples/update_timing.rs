//! Where one PPO gradient step spends its time, with CartPole's shapes (minibatch 128, separate
//! 64-64 actor and critic MLPs, clipped value loss), one libtorch thread. Prints the mean time
//! of each phase over 3,000 steps after 200 warm-up steps, then the time per step of a
//! hand-written-backward prototype (see `manual_prototype`).
//!
//! `cargo run --release -p gradgym-agents --example update_timing`
use std::time::Instant;

use gradgym_agents::network::{ActorCritic, Head};
use gradgym_algorithms::losses::{normalize_advantages, ppo_clip_loss, value_loss};
use gradgym_envs::rng;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

fn main() {
    tch::set_num_threads(1);
    let mut r = rng::stream(0, "init", 0);
    let net = ActorCritic::new(
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
    manual_prototype();
}

/// A prototype that training does not use: the same step (categorical head, clipped PPO and
/// value losses, entropy bonus, grad clip, Adam) with actor and critic stacked into batched
/// matmuls over one flat parameter vector, and the backward pass written out by hand in
/// libtorch ops under `no_grad` (closed-form gradients of the losses, no autograd). It bounds
/// what fewer libtorch calls can buy; its gradients are not checked against autograd.
fn manual_prototype() {
    let _g = tch::no_grad_guard();
    let n = 512i64;
    let h = 64i64;
    let sizes = [2 * 4 * h, 2 * h, 2 * h * h, 2 * h, 2 * h * 2, 2 * 2];
    let p: i64 = sizes.iter().sum();
    let theta = Tensor::randn([p], (Kind::Float, Device::Cpu)) * 0.1;
    let grad = Tensor::zeros([p], (Kind::Float, Device::Cpu));
    let m = Tensor::zeros([p], (Kind::Float, Device::Cpu));
    let v = Tensor::zeros([p], (Kind::Float, Device::Cpu));
    let views = |t: &Tensor| {
        let mut off = 0;
        let mut out = Vec::new();
        let shapes: [&[i64]; 6] = [
            &[2, 4, h],
            &[2, 1, h],
            &[2, h, h],
            &[2, 1, h],
            &[2, h, 2],
            &[2, 1, 2],
        ];
        for (len, shape) in sizes.iter().zip(shapes) {
            out.push(t.narrow(0, off, *len).view(shape));
            off += len;
        }
        out
    };
    let w = views(&theta);
    let g = views(&grad);
    // packed data: obs 4 | onehot 2 | oldlp | adv | ret | oldv
    let data = Tensor::rand([n, 10], (Kind::Float, Device::Cpu));
    let steps = 3000;
    let mut t0 = Instant::now();
    let (eps, ent_coef, vf, nf) = (0.2, 0.01, 0.5, 128.0);
    for s in 0..steps + 200 {
        if s == 200 {
            t0 = Instant::now();
        }
        let idx = Tensor::from_slice(
            &((s as i64 % 4) * 128..(s as i64 % 4 + 1) * 128).collect::<Vec<_>>(),
        );
        let mb = data.index_select(0, &idx);
        let o = mb.narrow(1, 0, 4);
        let onehot = mb.narrow(1, 4, 2);
        let oldlp = mb.select(1, 6);
        let adv = mb.select(1, 7);
        let ret = mb.select(1, 8);
        let oldv = mb.select(1, 9);
        let adv = (&adv - adv.mean(Kind::Float)) / (adv.std(true) + 1e-8);
        let x = o.unsqueeze(0).expand([2, 128, 4], false);
        let act = |z: Tensor| -> Tensor {
            let mut z = z;
            let _ = z
                .g_mul_scalar_(2.0)
                .sigmoid_()
                .g_mul_scalar_(2.0)
                .g_sub_scalar_(1.0);
            z
        };
        let h1 = act(w[1].baddbmm(&x, &w[0], 1.0, 1.0));
        let h2 = act(w[3].baddbmm(&h1, &w[2], 1.0, 1.0));
        let out = w[5].baddbmm(&h2, &w[4], 1.0, 1.0);
        let logits = out.select(0, 0);
        let val = out.select(0, 1).select(1, 0);
        let logp = logits.log_softmax(1, Kind::Float);
        let pr = logp.exp();
        let lp = (&logp * &onehot).sum_dim_intlist(1, false, Kind::Float);
        let ent = -(&pr * &logp).sum_dim_intlist(1, false, Kind::Float);
        let r = (&lp - &oldlp).exp();
        let u = -&adv * &r;
        let c = -&adv * r.clamp(1.0 - eps, 1.0 + eps);
        let pg = u.maximum(&c).mean(Kind::Float);
        let g_lp = &u * u.ge_tensor(&c).to_kind(Kind::Float) / nf;
        let d = &val - &ret;
        let dv = &val - &oldv;
        let dc = &oldv + dv.clamp(-eps, eps) - &ret;
        let (d2, dc2) = (d.square(), dc.square());
        let vl = d2.maximum(&dc2).mean(Kind::Float) * 0.5;
        let mask = d2
            .ge_tensor(&dc2)
            .logical_or(&dv.abs().le(eps))
            .to_kind(Kind::Float);
        let g_v = &d * mask * (vf / nf);
        let hmean = ent.mean(Kind::Float);
        let dlogits = (&onehot - &pr) * g_lp.unsqueeze(1)
            + &pr * (&logp + ent.unsqueeze(1)) * (ent_coef / nf);
        let dout = Tensor::zeros([2, 128, 2], (Kind::Float, Device::Cpu));
        dout.select(0, 0).copy_(&dlogits);
        dout.select(0, 1).select(1, 0).copy_(&g_v);
        let _ = h2.transpose(1, 2).bmm_out(&g[4], &dout);
        let _ = dout.sum_intlist_out(&g[5], 1, true, Kind::Float);
        let dh2 = dout.bmm(&w[4].transpose(1, 2));
        let dz2 = &dh2 - &dh2 * &h2 * &h2;
        let _ = h1.transpose(1, 2).bmm_out(&g[2], &dz2);
        let _ = dz2.sum_intlist_out(&g[3], 1, true, Kind::Float);
        let dh1 = dz2.bmm(&w[2].transpose(1, 2));
        let dz1 = &dh1 - &dh1 * &h1 * &h1;
        let _ = x.transpose(1, 2).bmm_out(&g[0], &dz1);
        let _ = dz1.sum_intlist_out(&g[1], 1, true, Kind::Float);
        let loss = pg - hmean * ent_coef + vl * vf;
        let _ = loss.double_value(&[]);
        let mut gr = grad.shallow_clone();
        let norm = gr.norm();
        let coef = ((norm + 1e-6).reciprocal() * 0.5).clamp_max(1.0);
        let _ = gr.g_mul_(&coef);
        let mut mm = m.shallow_clone();
        let mut vv = v.shallow_clone();
        let _ = mm.g_mul_scalar_(0.9).g_add_(&(&gr * 0.1));
        let _ = vv.g_mul_scalar_(0.999).addcmul_(&gr, &gr);
        let denom = vv.sqrt() * 1.0 + 1e-5;
        let mut th = theta.shallow_clone();
        let _ = th.addcdiv_(&mm, &denom);
    }
    println!(
        "{:<24} {:>7.1} µs   (prototype: hand-written backward, fused nets)",
        "manual step",
        t0.elapsed().as_secs_f64() / steps as f64 * 1e6
    );
}
