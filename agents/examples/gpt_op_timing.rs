//! What the operators of one PPO forward and backward pass cost on the bench model of
//! `gradgym rlhf bench` (64 rows of 31 positions, width 128, 4 heads of 32, MLP 512), through
//! libtorch on this machine's threads: the matrix products, LayerNorm, GELU (the tanh form the
//! model uses, through libtorch's operator and gradgym's, and the erf form for comparison),
//! attention (libtorch's fused kernel, and the same product written out), log-softmax over the
//! vocabulary. Each figure is the mean of 200 calls after 5 warm-up calls; a last section times
//! the two tanh-form GELUs' forward and backward passes apart. docs/rlhf.md (Throughput)
//! quotes it.
//!
//! `cargo run --release -p gradgym-agents --example gpt_op_timing`
use std::time::Instant;

use gradgym_agents::nn::gelu::gelu_tanh;
use tch::{Device, Kind, Tensor};

fn time(name: &str, f: &mut dyn FnMut()) {
    for _ in 0..5 {
        f();
    }
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:<46} {:>8.0} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

/// `y`'s gradient for the upstream gradient `up`, through a sum: one backward pass.
fn backward(y: Tensor, up: &Tensor) {
    (y * up).sum(Kind::Float).backward();
}

fn main() {
    let (b, t, w, heads) = (64i64, 31i64, 128i64, 4i64);
    let hd = w / heads;
    let o = (Kind::Float, Device::Cpu);
    println!(
        "gpt_op_timing: [{b}, {t}] positions, width {w}, {heads} heads, {} libtorch threads",
        tch::get_num_threads()
    );
    let x = Tensor::randn([b, t, w], o);
    let h = Tensor::randn([b, t, 4 * w], o);
    let weight = |rows: i64, cols: i64| Tensor::randn([rows, cols], o) * 0.02;
    let (w_qkv, w_fc, w_proj, w_te) = (
        weight(3 * w, w),
        weight(4 * w, w),
        weight(w, 4 * w),
        weight(512, w),
    );
    let bias = |n: i64| Tensor::zeros([n], o);
    let (ln_w, ln_b) = (Tensor::ones([w], o), bias(w));
    println!("forward:");
    time("  linear 128 → 384 (q, k, v)", &mut || {
        let _ = x.linear(&w_qkv, Some(&bias(3 * w)));
    });
    time("  linear 128 → 512 (MLP in)", &mut || {
        let _ = x.linear(&w_fc, Some(&bias(4 * w)));
    });
    time("  linear 512 → 128 (MLP out)", &mut || {
        let _ = h.linear(&w_proj, Some(&bias(w)));
    });
    time("  unembedding 128 → 512", &mut || {
        let _ = x.matmul(&w_te.tr());
    });
    time("  LayerNorm", &mut || {
        let _ = x.layer_norm([w], Some(&ln_w), Some(&ln_b), 1e-5, true);
    });
    time("  GELU, tanh form, libtorch's", &mut || {
        let _ = h.gelu("tanh");
    });
    time("  GELU, tanh form, gradgym's (the model's)", &mut || {
        let _ = gelu_tanh(&h);
    });
    time("  GELU, erf form", &mut || {
        let _ = h.gelu("none");
    });
    time("  tanh alone", &mut || {
        let _ = h.tanh();
    });
    time("  log-softmax over 512", &mut || {
        let _ = h.log_softmax(-1, Kind::Float);
    });
    let heads_of = |z: &Tensor| z.view([b, t, heads, hd]).transpose(1, 2);
    let (q, k, v) = (
        heads_of(&Tensor::randn([b, t, w], o)),
        heads_of(&Tensor::randn([b, t, w], o)),
        heads_of(&Tensor::randn([b, t, w], o)),
    );
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor| {
        Tensor::scaled_dot_product_attention(q, k, v, None::<&Tensor>, 0.0, true, None, false)
    };
    let future = Tensor::ones([t, t], (Kind::Bool, Device::Cpu))
        .tril(0)
        .logical_not();
    let explicit = |q: &Tensor, k: &Tensor, v: &Tensor| {
        (q.matmul(&k.transpose(-2, -1)) / (hd as f64).sqrt())
            .masked_fill(&future, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float)
            .matmul(v)
    };
    time("  attention, libtorch's fused kernel", &mut || {
        let _ = sdpa(&q, &k, &v);
    });
    time("  attention written out (matmul, softmax)", &mut || {
        let _ = explicit(&q, &k, &v);
    });
    println!("forward and backward:");
    let up_h = Tensor::ones([b, t, 4 * w], o);
    let up_x = Tensor::ones([b, t, w], o);
    let hg = h.detach().set_requires_grad(true);
    let xg = x.detach().set_requires_grad(true);
    let fc = w_fc.detach().set_requires_grad(true);
    time("  linear 128 → 512 (input, weight, bias)", &mut || {
        backward(xg.linear(&fc, Some(&bias(4 * w))), &up_h);
    });
    time("  LayerNorm", &mut || {
        backward(
            xg.layer_norm([w], Some(&ln_w), Some(&ln_b), 1e-5, true),
            &up_x,
        );
    });
    time("  GELU, tanh form, libtorch's", &mut || {
        backward(hg.gelu("tanh"), &up_h)
    });
    time("  GELU, tanh form, gradgym's (the model's)", &mut || {
        backward(gelu_tanh(&hg), &up_h)
    });
    time("  GELU, erf form", &mut || backward(hg.gelu("none"), &up_h));
    gelu_apart(&h, &up_h);
    let grad = |z: &Tensor| z.detach().set_requires_grad(true);
    let (qg, kg, vg) = (grad(&q), grad(&k), grad(&v));
    let up_y = Tensor::ones([b, heads, t, hd], o);
    time("  attention, libtorch's fused kernel", &mut || {
        backward(sdpa(&qg, &kg, &vg), &up_y);
    });
    time("  attention written out", &mut || {
        backward(explicit(&qg, &kg, &vg), &up_y);
    });
}

/// GELU's tanh form with a graph, its forward pass and its backward pass (the gradient of
/// Σ up·GELU(x), returned rather than accumulated) timed apart, libtorch's operator and
/// gradgym's alternating over 3 × 100 calls each.
fn gelu_apart(h: &Tensor, up: &Tensor) {
    println!("GELU's tanh form with a graph, forward and backward apart (3 × 100 calls each):");
    let mut sums = [[0f64; 2]; 2];
    for _ in 0..3 {
        for (k, ours) in [false, true].into_iter().enumerate() {
            let x = h.detach().set_requires_grad(true);
            for i in 0..105 {
                let t0 = Instant::now();
                let y = if ours { gelu_tanh(&x) } else { x.gelu("tanh") };
                let t1 = Instant::now();
                let _ = Tensor::run_backward(&[(y * up).sum(Kind::Float)], &[&x], false, false);
                let t2 = Instant::now();
                if i >= 5 {
                    sums[k][0] += (t1 - t0).as_secs_f64();
                    sums[k][1] += (t2 - t1).as_secs_f64();
                }
            }
        }
    }
    for (k, name) in ["libtorch's", "gradgym's"].iter().enumerate() {
        println!(
            "  {name:<12} forward {:>6.0} µs, backward (with the product's and the sum's) {:>6.0} µs",
            sums[k][0] / 300.0 * 1e6,
            sums[k][1] / 300.0 * 1e6
        );
    }
}
