//! The native training passes of the transformer against libtorch's autograd on the same
//! weights: outputs, every parameter's gradient, the thread count, and Adam.

use gradgym_agents::backend::native::{Adam, clip_grad_norm};
use gradgym_agents::nn::gpt::{Gpt, GptConfig};
use gradgym_agents::nn::gpt_native::{Batch, CHUNK, Head, NativeGpt};
use gradgym_envs::rng::{self, standard_normal};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

fn config(scalar_head: bool) -> GptConfig {
    GptConfig {
        vocab: 37,
        context: 16,
        width: 32,
        layers: 2,
        heads: 4,
        scalar_head,
    }
}

/// A model whose every parameter (LayerNorms and biases included) is random, so that no
/// term of a gradient hides behind a 1 or a 0.
fn model(scalar_head: bool, seed: u64) -> (Gpt, NativeGpt) {
    let mut rng = rng::stream(seed, "test/gpt-native", 0);
    let m = Gpt::new(config(scalar_head), Device::Cpu, &mut rng).unwrap();
    let mut n = NativeGpt::of(&m);
    for v in n.params_mut().iter_mut() {
        *v += (standard_normal(&mut rng) * 0.1) as f32;
    }
    n.write_to(&m);
    (m, n)
}

/// `b` rows of `l` random tokens.
fn tokens(b: usize, l: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut rng = rng::stream(seed, "test/gpt-native/tokens", 0);
    (0..b * l)
        .map(|_| ((standard_normal(&mut rng).abs() * 1e6) as u64 % vocab as u64) as i64)
        .collect()
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rng::stream(seed, "test/gpt-native/coef", 0);
    (0..n).map(|_| standard_normal(&mut rng) as f32).collect()
}

fn host(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The largest difference between `a` and `b` relative to `b`'s largest element.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / max_abs(b).max(1e-12)
}

/// libtorch's gradient of every parameter, flat, in the native layout's order.
fn torch_grads(m: &Gpt) -> Vec<f32> {
    let vars = m.vs.variables();
    let mut out = Vec::new();
    for (name, shape) in m.config.parameters() {
        let g = vars[&name.replace('.', "__")].grad();
        let n = shape.iter().product::<i64>() as usize;
        if g.defined() {
            out.extend(host(&g));
        } else {
            out.extend(vec![0f32; n]);
        }
    }
    out
}

const B: usize = CHUNK + 5; // four chunks of 6 sequences, the last of 3
const L: usize = 12;
const FROM: usize = 5;

#[test]
fn the_lm_passes_give_libtorchs_outputs_and_gradients() {
    tch::set_num_threads(1);
    // Four chunks, the last partial; then a head size that is not a multiple of 8, a length
    // that is not a multiple of 4 and reading from the first position; then one block.
    check_lm(config(false), B, L, FROM, 1);
    check_lm(
        GptConfig {
            width: 40,
            ..config(false)
        },
        5,
        13,
        0,
        2,
    );
    check_lm(
        GptConfig {
            width: 24,
            heads: 2,
            layers: 1,
            ..config(false)
        },
        3,
        13,
        6,
        3,
    );
}

/// The LM head's outputs and every gradient of a random weighting of them, native against
/// libtorch, on a random model of `config`: `b` rows of `l` positions read from `from`.
fn check_lm(config: GptConfig, b: usize, l: usize, from: usize, seed: u64) {
    let mut rng = rng::stream(seed, "test/gpt-native/lm", 0);
    let m = Gpt::new(config, Device::Cpu, &mut rng).unwrap();
    let mut n = NativeGpt::of(&m);
    for v in n.params_mut().iter_mut() {
        *v += (standard_normal(&mut rng) * 0.1) as f32;
    }
    n.write_to(&m);
    let v = m.config.vocab;
    let toks = tokens(b, l + 1, v, seed + 10);
    let inputs: Vec<i64> = toks
        .chunks_exact(l + 1)
        .flat_map(|r| r[..l].to_vec())
        .collect();
    let r = l - from;
    let targets: Vec<i64> = toks
        .chunks_exact(l + 1)
        .flat_map(|row| row[from + 1..].to_vec())
        .collect();
    let batch = Batch {
        tokens: &inputs,
        b,
        l,
        from,
    };
    let (out, tape) = n.forward(batch, Head::Lm { targets: &targets }, true, 2);
    let tape = tape.unwrap();
    // libtorch.
    let t_in = Tensor::from_slice(&inputs).view([b as i64, l as i64]);
    let t_tg = Tensor::from_slice(&targets).view([b as i64, r as i64]);
    let logp = m
        .logits(&m.hidden_from(&t_in, from as i64))
        .log_softmax(-1, Kind::Float);
    let picked = logp.gather(2, &t_tg.unsqueeze(-1), false).squeeze_dim(-1);
    let entropy = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
    let what = format!("{:?}, {b} rows, {l} positions from {from}", m.config);
    let d_lp = rel_diff(&out.main, &host(&picked));
    let d_ent = rel_diff(&out.entropy, &host(&entropy));
    assert!(
        d_lp < 1e-5,
        "{what}: log-probabilities differ by {d_lp} (relative)"
    );
    assert!(
        d_ent < 1e-5,
        "{what}: entropies differ by {d_ent} (relative)"
    );
    // A random weighting of both outputs as the loss.
    let c1 = randn(b * r, seed + 20);
    let c2 = randn(b * r, seed + 30);
    let w1 = Tensor::from_slice(&c1).view([b as i64, r as i64]);
    let w2 = Tensor::from_slice(&c2).view([b as i64, r as i64]);
    let loss = (&picked * &w1).sum(Kind::Float) + (&entropy * &w2).sum(Kind::Float);
    loss.backward();
    let want = torch_grads(&m);
    let got = n.backward(&tape, &c1, Some(&c2), 2);
    check_grads(&m.config, &got, &want);
}

/// Every parameter tensor's gradient within 1e-4 of libtorch's (relative to its largest
/// element), and none all zero.
fn check_grads(config: &GptConfig, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let mut at = 0;
    for (name, shape) in config.parameters() {
        let k = shape.iter().product::<i64>() as usize;
        let (g, w) = (&got[at..at + k], &want[at..at + k]);
        assert!(max_abs(w) > 0.0, "{name}: libtorch's gradient is all zero");
        let d = rel_diff(g, w);
        assert!(d < 1e-4, "{name}: gradient differs by {d} (relative)");
        at += k;
    }
}

#[test]
fn the_scalar_passes_give_libtorchs_values_and_gradients() {
    tch::set_num_threads(1);
    let (m, n) = model(true, 5);
    let toks = tokens(B, L, m.config.vocab, 6);
    let batch = Batch {
        tokens: &toks,
        b: B,
        l: L,
        from: FROM,
    };
    let (out, tape) = n.forward(batch, Head::Scalar, true, 3);
    assert!(out.entropy.is_empty());
    let t_in = Tensor::from_slice(&toks).view([B as i64, L as i64]);
    let values = m.scalar(&m.hidden_from(&t_in, FROM as i64));
    let d = rel_diff(&out.main, &host(&values));
    assert!(d < 1e-5, "values differ by {d} (relative)");
    let c = randn(B * (L - FROM), 7);
    let loss =
        (&values * Tensor::from_slice(&c).view([B as i64, (L - FROM) as i64])).sum(Kind::Float);
    loss.backward();
    let want = torch_grads(&m);
    let got = n.backward(&tape.unwrap(), &c, None, 3);
    // The unembedding is not on the scalar head's path: only the embedding's rows reach wte.
    check_grads(&m.config, &got, &want);
}

#[test]
fn reading_every_position_gives_libtorchs_gradients_too() {
    tch::set_num_threads(1);
    let (m, n) = model(true, 8);
    let toks = tokens(3, L, m.config.vocab, 9);
    let batch = Batch {
        tokens: &toks,
        b: 3,
        l: L,
        from: 0,
    };
    let (out, tape) = n.forward(batch, Head::Scalar, true, 1);
    let values = m.scalar(&m.hidden(&Tensor::from_slice(&toks).view([3, L as i64])));
    assert!(rel_diff(&out.main, &host(&values)) < 1e-5);
    let c = randn(3 * L, 10);
    (&values * Tensor::from_slice(&c).view([3, L as i64]))
        .sum(Kind::Float)
        .backward();
    check_grads(
        &m.config,
        &n.backward(&tape.unwrap(), &c, None, 1),
        &torch_grads(&m),
    );
}

#[test]
fn outputs_and_gradients_are_the_same_bits_on_any_thread_count() {
    let (_, n) = model(false, 11);
    let b = 3 * CHUNK + 2;
    let toks = tokens(b, L, n.config.vocab, 12);
    let targets = tokens(b, L - FROM, n.config.vocab, 13);
    let batch = Batch {
        tokens: &toks,
        b,
        l: L,
        from: FROM,
    };
    let c1 = randn(b * (L - FROM), 14);
    let c2 = randn(b * (L - FROM), 15);
    let run = |threads| {
        let (out, tape) = n.forward(batch, Head::Lm { targets: &targets }, true, threads);
        (
            out.clone(),
            n.backward(&tape.unwrap(), &c1, Some(&c2), threads),
        )
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        let other = run(threads);
        assert!(one.0 == other.0, "outputs moved on {threads} threads");
        assert!(
            one.1
                .iter()
                .map(|x| x.to_bits())
                .eq(other.1.iter().map(|x| x.to_bits())),
            "gradients moved on {threads} threads"
        );
    }
}

#[test]
fn a_tape_refuses_other_weights() {
    let (_, mut n) = model(false, 16);
    let toks = tokens(2, L, n.config.vocab, 17);
    let targets = tokens(2, L - FROM, n.config.vocab, 18);
    let (_, tape) = n.forward(
        Batch {
            tokens: &toks,
            b: 2,
            l: L,
            from: FROM,
        },
        Head::Lm { targets: &targets },
        true,
        1,
    );
    n.params_mut()[0] += 1.0;
    let d = vec![0f32; 2 * (L - FROM)];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        n.backward(tape.as_ref().unwrap(), &d, None, 1)
    }));
    assert!(
        r.is_err(),
        "a backward pass through changed weights must be refused"
    );
}

#[test]
fn adam_with_clipping_follows_libtorchs() {
    tch::set_num_threads(1);
    let k = 300;
    let vs = nn::VarStore::new(Device::Cpu);
    let init = randn(k, 19);
    let p = vs.root().zeros("p", &[k as i64]);
    tch::no_grad(|| {
        let mut p = p.shallow_clone();
        p.copy_(&Tensor::from_slice(&init));
    });
    let mut opt = nn::adam(0.9, 0.999, 0.0).build(&vs, 3e-3).unwrap();
    let mut mine = init.clone();
    // tch's default ε, which the native RL learner uses too.
    let mut adam = Adam::new(k, 3e-3, 1e-8);
    for step in 0..25 {
        // A gradient that changes with the step, clipped on some steps and not others.
        let scale = if step % 3 == 0 { 5.0 } else { 0.01 };
        let g: Vec<f32> = randn(k, 100 + step).iter().map(|x| x * scale).collect();
        let gt = Tensor::from_slice(&g);
        let loss = (&p * &gt).sum(Kind::Float);
        opt.backward_step_clip_norm(&loss, 0.5);
        let mut g2 = g.clone();
        clip_grad_norm(&mut g2, 0.5);
        adam.update(&mut mine, &g2);
    }
    let d = rel_diff(&mine, &host(&p));
    assert!(d < 1e-5, "Adam's parameters differ by {d} (relative)");
    assert_eq!(adam.steps(), 25);
    // And it moved them.
    assert!(rel_diff(&mine, &init) > 1e-3);
}
