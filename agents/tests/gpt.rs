//! The causal transformer of RLHF on text: its size, causality, the KV cache against a full
//! forward pass, checkpoints that round-trip (and name what does not fit), seeded
//! initialisation, and sampling with temperature, top-k and top-p.

use gradgym_agents::nn::gpt::{Gpt, GptConfig, KvCache};
use gradgym_agents::nn::gpt_cpu::CpuGpt;
use gradgym_agents::nn::sampling::{
    SamplingConfig, generate, generate_libtorch, generate_with_threads, sample_token,
    sampling_probabilities,
};
use gradgym_envs::rng;
use tch::{Device, Kind, Tensor};

fn small() -> GptConfig {
    GptConfig {
        vocab: 50,
        context: 24,
        width: 32,
        layers: 2,
        heads: 4,
        scalar_head: false,
    }
}

fn model(seed: u64) -> Gpt {
    Gpt::new(small(), Device::Cpu, &mut rng::stream(seed, "test/gpt", 0)).unwrap()
}

fn tokens(rows: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn the_bench_model_has_gpt2s_shape_and_470k_parameters() {
    let c = GptConfig::bench();
    assert_eq!(c.num_parameters(), 470_528);
    let m = Gpt::new(c, Device::Cpu, &mut rng::stream(1, "test/gpt", 0)).unwrap();
    let n: i64 =
        m.vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
    assert_eq!(n, 470_528);
    let bad = GptConfig {
        heads: 5,
        ..GptConfig::bench()
    };
    assert_eq!(bad.validate().unwrap_err().0, "heads");
}

#[test]
fn changing_a_later_token_leaves_earlier_logits_unchanged() {
    tch::set_num_threads(1);
    let m = model(1);
    let a: Vec<i64> = (0..16).map(|i| (i * 7 % 50) as i64).collect();
    let mut b = a.clone();
    b[9] = (a[9] + 13) % 50;
    b[15] = 1;
    let la = tch::no_grad(|| m.forward(&tokens(std::slice::from_ref(&a))));
    let lb = tch::no_grad(|| m.forward(&tokens(&[b])));
    assert_eq!(la.size(), vec![1, 16, 50]);
    let before = max_diff(&la.narrow(1, 0, 9), &lb.narrow(1, 0, 9));
    assert!(
        before < 1e-6,
        "positions before the change moved by {before}"
    );
    let after = max_diff(&la.narrow(1, 9, 7), &lb.narrow(1, 9, 7));
    assert!(
        after > 1e-3,
        "the change must reach later positions ({after})"
    );
}

#[test]
fn kv_cache_generation_gives_the_logits_of_a_full_forward_pass() {
    tch::set_num_threads(1);
    let m = model(2);
    let rows = vec![
        (0..20).map(|i| (i * 3 % 50) as i64).collect::<Vec<_>>(),
        (0..20).map(|i| (i * 11 % 50) as i64).collect::<Vec<_>>(),
    ];
    let full = tch::no_grad(|| m.forward(&tokens(&rows)));
    let mut cache = KvCache::default();
    let prompt: Vec<Vec<i64>> = rows.iter().map(|r| r[..8].to_vec()).collect();
    let first = tch::no_grad(|| m.forward_cached(&tokens(&prompt), &mut cache));
    assert!(max_diff(&first, &full.narrow(1, 0, 8)) < 1e-5);
    for t in 8..20 {
        let step: Vec<Vec<i64>> = rows.iter().map(|r| vec![r[t]]).collect();
        let l = tch::no_grad(|| m.forward_cached(&tokens(&step), &mut cache));
        let d = max_diff(&l, &full.narrow(1, t as i64, 1));
        assert!(d < 1e-5, "position {t}: {d}");
    }
    assert_eq!(cache.len(), 20);
}

#[test]
fn checkpoints_round_trip_and_name_what_does_not_fit() {
    let m = model(3);
    let dir = gradgym_agents::scratch::Scratch::new("gpt", "checkpoint");
    m.save(&dir).unwrap();
    let back = Gpt::load(&dir, Device::Cpu).unwrap();
    assert_eq!(back.config, m.config);
    let x = tokens(&[(0..10).collect()]);
    let d = tch::no_grad(|| max_diff(&m.forward(&x), &back.forward(&x)));
    assert_eq!(d, 0.0);
    // Names and shapes are GPT-2's, as nanoGPT writes them.
    let data = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    assert_eq!(
        st.tensor("transformer.h.1.attn.c_attn.weight")
            .unwrap()
            .shape(),
        &[96, 32]
    );
    assert_eq!(
        st.tensor("transformer.wte.weight").unwrap().shape(),
        &[50, 32]
    );
    assert!(
        st.tensor("lm_head.weight").is_err(),
        "the unembedding is tied"
    );
    // The checkpoint's tensors rewritten: (name, shape, values), loaded with its model.json.
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, v.shape().to_vec(), values)
        })
        .collect();
    let load_rewritten = |tensors: Vec<(String, Vec<usize>, Vec<f32>)>| {
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                        .unwrap();
                (name.clone(), view)
            })
            .collect();
        let out = safetensors::serialize(views, &None).unwrap();
        let d2 = dir.with_extension("rewritten");
        std::fs::create_dir_all(&d2).unwrap();
        std::fs::copy(dir.join("model.json"), d2.join("model.json")).unwrap();
        std::fs::write(d2.join("model.safetensors"), out).unwrap();
        let loaded = Gpt::load(&d2, Device::Cpu);
        let _ = std::fs::remove_dir_all(&d2);
        loaded
    };
    let same_model = |g: Gpt| {
        let d = tch::no_grad(|| max_diff(&m.forward(&x), &g.forward(&x)));
        assert_eq!(d, 0.0);
    };
    let wte = tensors
        .iter()
        .find(|t| t.0 == "transformer.wte.weight")
        .unwrap()
        .clone();
    // A state dict that also writes the tied head out as `lm_head.weight` (nanoGPT's model
    // holds both names) loads as the same model; an untied head is refused by name.
    let with_head = |change: f32| {
        let mut head = wte.clone();
        head.0 = "lm_head.weight".into();
        head.2[7] += change;
        let mut all = tensors.clone();
        all.push(head);
        load_rewritten(all)
    };
    same_model(with_head(0.0).unwrap());
    let e = with_head(1.0).unwrap_err().to_string();
    assert!(e.contains("`lm_head.weight` differs"), "{e}");
    // What `safetensors.torch.save_model` writes for nanoGPT's model: the tied tensor under
    // `lm_head.weight` alone. The same model.
    let renamed: Vec<_> = tensors
        .iter()
        .cloned()
        .map(|mut t| {
            if t.0 == "transformer.wte.weight" {
                t.0 = "lm_head.weight".into();
            }
            t
        })
        .collect();
    same_model(load_rewritten(renamed).unwrap());
    // nanoGPT's causal-mask buffer (no flash attention): accepted where it is that mask over
    // at least the context (24 here), refused by name otherwise.
    let with_mask = |n: usize, layer: usize, flip: Option<usize>| {
        let mut mask: Vec<f32> = (0..n * n)
            .map(|k| if k % n <= k / n { 1.0 } else { 0.0 })
            .collect();
        if let Some(k) = flip {
            mask[k] = 1.0 - mask[k];
        }
        let mut all = tensors.clone();
        all.push((
            format!("transformer.h.{layer}.attn.bias"),
            vec![1, 1, n, n],
            mask,
        ));
        load_rewritten(all)
    };
    same_model(with_mask(64, 0, None).unwrap());
    same_model(with_mask(24, 1, None).unwrap());
    for (n, layer, flip, want) in [
        (64, 0, Some(1), "is not nanoGPT's causal mask"),
        (64, 0, Some(64 * 3 + 2), "is not nanoGPT's causal mask"),
        (16, 0, None, "is not nanoGPT's causal mask"),
        (24, 2, None, "has no place in the architecture"),
    ] {
        let e = with_mask(n, layer, flip).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains(&format!("transformer.h.{layer}.attn.bias")),
            "{n} {layer} {flip:?}: {e}"
        );
    }
    // A config that does not match the weights is named.
    let other = GptConfig {
        width: 16,
        heads: 4,
        ..small()
    };
    std::fs::write(
        dir.join("model.json"),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let e = Gpt::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("transformer.wte.weight") && e.contains("[50, 16]"),
        "{e}"
    );
    // Weights with a tensor the config has no place for (a reward model's head under a
    // language model's model.json) are refused, not silently dropped.
    let rm = m
        .with_scalar_head(&mut gradgym_envs::rng::stream(3, "test/gpt-head", 0))
        .unwrap();
    rm.save(&dir).unwrap();
    std::fs::write(
        dir.join("model.json"),
        serde_json::to_string(&m.config).unwrap(),
    )
    .unwrap();
    let e = Gpt::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("has no place in the architecture"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn initialisation_comes_from_the_callers_stream() {
    let p = |m: &Gpt| m.named_parameters()[4].1.copy(); // h.0.attn.c_attn.weight
    let (a, b, c) = (model(4), model(4), model(5));
    assert_eq!(max_diff(&p(&a), &p(&b)), 0.0);
    assert!(max_diff(&p(&a), &p(&c)) > 0.0);
    // N(0, 0.02) weights.
    let w = a.named_parameters()[0].1.copy();
    let std = w.std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.002, "{std}");
    let _ = Kind::Float;
}

#[test]
fn sampling_follows_temperature_top_k_and_top_p() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0];
    let softmax = |t: f64| {
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect::<Vec<_>>()
    };
    let p = sampling_probabilities(&logits, &SamplingConfig::default());
    for (a, b) in p.iter().zip(softmax(1.0)) {
        assert!((a - b).abs() < 1e-12);
    }
    let hot = SamplingConfig {
        temperature: 2.0,
        ..SamplingConfig::default()
    };
    for (a, b) in sampling_probabilities(&logits, &hot)
        .iter()
        .zip(softmax(2.0))
    {
        assert!((a - b).abs() < 1e-12);
    }
    // Top-k = 2 keeps the two most likely, renormalised.
    let k2 = SamplingConfig {
        top_k: 2,
        ..SamplingConfig::default()
    };
    let p = sampling_probabilities(&logits, &k2);
    let s = softmax(1.0);
    assert!((p[0] - s[0] / (s[0] + s[1])).abs() < 1e-12);
    assert_eq!(&p[2..], &[0.0, 0.0, 0.0]);
    // Top-p keeps the smallest head of mass ≥ p: here the first two (0.55 + 0.20 ≥ 0.7).
    let nucleus = SamplingConfig {
        top_p: 0.7,
        ..SamplingConfig::default()
    };
    let p = sampling_probabilities(&logits, &nucleus);
    assert!(p[0] > 0.0 && p[1] > 0.0 && p[2] == 0.0, "{p:?}");
    // Both: top-p applies to the distribution top-k left, renormalised. Top-2 leaves
    // (0.73, 0.27); a nucleus of 0.7 keeps the first alone, where the unnormalised mass
    // (0.56 < 0.7) would have kept both.
    let both = SamplingConfig {
        top_k: 2,
        top_p: 0.7,
        ..SamplingConfig::default()
    };
    let p = sampling_probabilities(&logits, &both);
    assert_eq!(p, vec![1.0, 0.0, 0.0, 0.0, 0.0], "{p:?}");
    let tiny = SamplingConfig {
        top_p: 1e-6,
        ..SamplingConfig::default()
    };
    let mut r = rng::stream(1, "test/sample", 0);
    assert!(
        (0..50).all(|_| sample_token(&logits, &tiny, &mut r) == 0),
        "greedy"
    );
    // Draws follow the distribution (chi-square, 4 degrees of freedom, p ≈ 0.001 cut 18.5).
    let n = 20_000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        counts[sample_token(&logits, &SamplingConfig::default(), &mut r) as usize] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(softmax(1.0))
        .map(|(&c, q)| (c as f64 - n as f64 * q).powi(2) / (n as f64 * q))
        .sum();
    assert!(chi2 < 18.5, "{chi2} {counts:?}");
    assert!(
        SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn generation_stops_at_eos_and_repeats_for_a_seed() {
    tch::set_num_threads(1);
    let m = model(6);
    let prompts = vec![vec![1u32, 5, 6, 7], vec![1, 8, 9, 10]];
    let config = SamplingConfig::default();
    let a = generate(
        &m,
        &prompts,
        12,
        2,
        &config,
        &mut rng::stream(1, "test/gen", 0),
    );
    let b = generate(
        &m,
        &prompts,
        12,
        2,
        &config,
        &mut rng::stream(1, "test/gen", 0),
    );
    assert_eq!(a, b);
    for g in &a {
        assert!(g.tokens.len() <= 12 && g.tokens.len() == g.logprobs.len());
        if let Some(i) = g.tokens.iter().position(|&t| t == 2) {
            assert_eq!(i, g.tokens.len() - 1, "nothing after <eos>");
        }
        assert!(g.logprobs.iter().all(|l| *l <= 0.0 && l.is_finite()));
    }
    // The log-probabilities are the full forward pass's.
    let row: Vec<i64> = prompts[0]
        .iter()
        .chain(&a[0].tokens)
        .map(|&t| t as i64)
        .collect();
    let logits = tch::no_grad(|| m.forward(&tokens(std::slice::from_ref(&row))));
    let logp = logits.log_softmax(-1, Kind::Float);
    for (j, &t) in a[0].tokens.iter().enumerate() {
        let pos = prompts[0].len() + j - 1;
        let want = logp.double_value(&[0, pos as i64, t as i64]);
        assert!(
            (want - a[0].logprobs[j]).abs() < 1e-4,
            "{j}: {want} vs {}",
            a[0].logprobs[j]
        );
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let m = model(7);
    let x = tokens(&[(0..12).collect(), (12..24).collect()]);
    let logits = m.forward(&x);
    let target = Tensor::from_slice(&(1..25).map(|t| t % 50).collect::<Vec<i64>>());
    let loss = logits.view([-1, 50]).cross_entropy_for_logits(&target);
    loss.backward();
    for v in m.vs.trainable_variables() {
        let g = v.grad();
        assert!(g.defined(), "a parameter without a gradient");
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}

#[test]
fn prompt_and_padding_contribute_nothing_to_the_lm_loss_or_its_gradient() {
    tch::set_num_threads(1);
    let m = model(8);
    // Two rows: 8 prompt tokens, a response, then padding (0).
    let rows = vec![
        vec![1i64, 4, 5, 6, 7, 8, 9, 3, 20, 21, 22, 2, 0, 0, 0, 0],
        vec![1i64, 4, 5, 6, 11, 12, 9, 3, 30, 31, 2, 0, 0, 0, 0, 0],
    ];
    let mask_of = |rows: &[Vec<i64>]| {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let end = r.iter().position(|&t| t == 2).unwrap();
                (0..r.len()).map(move |j| (j >= 8 && j <= end) as u8 as f32)
            })
            .collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    };
    let grads = |rows: &[Vec<i64>]| {
        for mut v in m.vs.trainable_variables() {
            v.zero_grad();
        }
        let loss = m.masked_lm_loss(&tokens(rows), &mask_of(rows));
        loss.backward();
        let g: Vec<Tensor> =
            m.vs.trainable_variables()
                .iter()
                .map(|v| v.grad().copy())
                .collect();
        (loss.double_value(&[]), g)
    };
    let (loss, g) = grads(&rows);
    assert!(loss > 0.0 && loss.is_finite());
    // Change the padding after <eos>: loss and gradient unchanged. (The prompt conditions the
    // response, so changing it would change the loss; what it must not do is be predicted.)
    let mut padded = rows.clone();
    padded[0][13] = 40;
    padded[1][14] = 41;
    let (loss2, g2) = grads(&padded);
    assert_eq!(loss, loss2);
    for (a, b) in g.iter().zip(&g2) {
        assert_eq!(max_diff(a, b), 0.0);
    }
    // By hand: the mean −log p of the 7 response tokens (4 + 3) under the full forward pass.
    let logp = tch::no_grad(|| m.forward(&tokens(&rows))).log_softmax(-1, Kind::Float);
    let mut total = 0.0;
    let mut n = 0;
    for (i, r) in rows.iter().enumerate() {
        let end = r.iter().position(|&t| t == 2).unwrap();
        for (j, &token) in r.iter().enumerate().take(end + 1).skip(8) {
            total -= logp.double_value(&[i as i64, j as i64 - 1, token]);
            n += 1;
        }
    }
    assert_eq!(n, 7);
    assert!(
        (loss - total / n as f64).abs() < 1e-5,
        "{loss} vs {}",
        total / n as f64
    );
}

/// The transformer written out naively from its named variables: explicit masked softmax
/// attention, no fused kernels, no cache, every position computed. The fast paths of `Gpt`
/// (fused attention, the last block only at the positions read) must agree with it in value
/// and in gradient.
fn reference_hidden(m: &Gpt, cfg: &GptConfig, tokens: &Tensor) -> Tensor {
    let vars = m.vs.variables();
    let p = |name: &str| vars[&name.replace('.', "__")].shallow_clone();
    let (b, t) = tokens.size2().unwrap();
    let (w, h) = (cfg.width as i64, cfg.heads as i64);
    let hd = w / h;
    let ln = |x: &Tensor, n: &str| {
        x.layer_norm(
            [w],
            Some(&p(&format!("{n}.weight"))),
            Some(&p(&format!("{n}.bias"))),
            1e-5,
            true,
        )
    };
    let lin =
        |x: &Tensor, n: &str| x.matmul(&p(&format!("{n}.weight")).tr()) + p(&format!("{n}.bias"));
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu));
    let mut x = p("transformer.wte.weight")
        .index_select(0, &tokens.reshape([-1]))
        .view([b, t, w])
        + p("transformer.wpe.weight")
            .index_select(0, &pos)
            .unsqueeze(0);
    let causal = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).tril(0);
    for l in 0..cfg.layers {
        let pre = format!("transformer.h.{l}");
        let qkv = lin(
            &ln(&x, &format!("{pre}.ln_1")),
            &format!("{pre}.attn.c_attn"),
        );
        let parts = qkv.split(w, 2);
        let heads = |x: &Tensor| x.view([b, t, h, hd]).transpose(1, 2);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let att = (q.matmul(&k.transpose(-2, -1)) / (hd as f64).sqrt())
            .masked_fill(&causal.logical_not(), f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let y = att.matmul(&v).transpose(1, 2).contiguous().view([b, t, w]);
        // Not `+=`: tch's AddAssign works in place and breaks the graph that backward needs.
        x = &x + lin(&y, &format!("{pre}.attn.c_proj"));
        let m = lin(&ln(&x, &format!("{pre}.ln_2")), &format!("{pre}.mlp.c_fc")).gelu("tanh");
        x = &x + lin(&m, &format!("{pre}.mlp.c_proj"));
    }
    ln(&x, "transformer.ln_f")
}

/// Every trainable variable's gradient after `loss.backward()`, by name, then zeroed.
fn take_grads(m: &Gpt, loss: &Tensor) -> Vec<(String, Tensor)> {
    loss.backward();
    let mut out: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, v)| {
                let g = v.grad();
                let g = if g.defined() {
                    g.copy()
                } else {
                    v.zeros_like()
                };
                (n, g)
            })
            .collect();
    for (_, v) in m.vs.variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_fast_forward_paths_match_a_naive_transformer_in_value_and_gradient() {
    let cfg = GptConfig {
        scalar_head: true,
        ..small()
    };
    let m = Gpt::new(
        cfg.clone(),
        Device::Cpu,
        &mut rng::stream(11, "test/gpt", 0),
    )
    .unwrap();
    let x = tokens(&[(0..16).collect(), (16..32).collect(), (5..21).collect()]);
    let reference = reference_hidden(&m, &cfg, &x);
    assert!(max_diff(&m.hidden(&x), &reference) < 1e-5, "hidden states");
    assert!(
        max_diff(&m.hidden_from(&x, 9), &reference.narrow(1, 9, 7)) < 1e-5,
        "hidden_from"
    );
    // The reward model's read-out: one position per row, the earliest one after 0.
    let positions = Tensor::from_slice(&[11i64, 15, 7]);
    let fast = m.score_at(&x, &positions);
    let slow = m
        .scalar(&reference)
        .gather(1, &positions.unsqueeze(1), false)
        .squeeze_dim(1);
    assert!(max_diff(&fast, &slow) < 1e-5, "score_at values");
    let weights = Tensor::from_slice(&[1.0f32, -2.0, 0.5]);
    let g_fast = take_grads(&m, &(&fast * &weights).sum(Kind::Float));
    let slow = m
        .scalar(&reference_hidden(&m, &cfg, &x))
        .gather(1, &positions.unsqueeze(1), false)
        .squeeze_dim(1);
    let g_slow = take_grads(&m, &(&slow * &weights).sum(Kind::Float));
    for ((n, a), (_, b)) in g_fast.iter().zip(&g_slow) {
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        assert!(
            max_diff(a, b) / scale < 1e-4,
            "gradient of {n}: {} vs {}",
            a.abs().sum(Kind::Float).double_value(&[]),
            b.abs().sum(Kind::Float).double_value(&[])
        );
    }
    // And the language model's loss through the fused attention.
    let target = Tensor::from_slice(&(1..49).map(|t| t % 50).collect::<Vec<i64>>());
    let g_fast = take_grads(
        &m,
        &m.forward(&x)
            .view([-1, 50])
            .cross_entropy_for_logits(&target),
    );
    let g_slow = take_grads(
        &m,
        &m.logits(&reference_hidden(&m, &cfg, &x))
            .view([-1, 50])
            .cross_entropy_for_logits(&target),
    );
    for ((n, a), (_, b)) in g_fast.iter().zip(&g_slow) {
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        assert!(max_diff(a, b) / scale < 1e-4, "LM gradient of {n}");
    }
}

/// A model whose weights are far from their initialisation (N(0, 0.3) added to each), so
/// that logits spread over several nats and attention is far from uniform.
fn spread_model(cfg: GptConfig, seed: u64) -> Gpt {
    let m = Gpt::new(cfg, Device::Cpu, &mut rng::stream(seed, "test/gpt", 0)).unwrap();
    let mut noise = rng::stream(seed, "test/noise", 0);
    tch::no_grad(|| {
        for mut p in m.vs.trainable_variables() {
            let n = p.numel();
            let v: Vec<f32> = (0..n)
                .map(|_| (rng::standard_normal(&mut noise) * 0.3) as f32)
                .collect();
            let _ = p.g_add_(&Tensor::from_slice(&v).view(p.size().as_slice()));
        }
    });
    m
}

#[test]
fn the_cpu_forward_pass_gives_libtorchs_logits() {
    tch::set_num_threads(1);
    let cfg = GptConfig {
        vocab: 50,
        context: 24,
        width: 48,
        layers: 3,
        heads: 3,
        scalar_head: false,
    };
    let m = spread_model(cfg, 12);
    let rows: Vec<Vec<i64>> = (0..5)
        .map(|r| {
            (0..20)
                .map(|i| ((i * (2 * r + 3) + r) % 50) as i64)
                .collect()
        })
        .collect();
    let full = tch::no_grad(|| m.forward(&tokens(&rows)));
    let spread = full.std(false).double_value(&[]);
    assert!(spread > 1.0, "logits spread over {spread} only");
    let cpu = CpuGpt::of(&m);
    let mut state = cpu.state(rows.len(), 20);
    let mut logits = vec![0f32; rows.len() * 50];
    let check = |t: usize, logits: &[f32]| {
        let got = Tensor::from_slice(logits).view([rows.len() as i64, 50]);
        let d = max_diff(&got, &full.select(1, t as i64));
        assert!(d < 1e-4, "position {t}: {d}");
    };
    // The prompt in one step (its last position's logits), then a position at a time.
    let prompt: Vec<u32> = rows
        .iter()
        .flat_map(|r| r[..8].iter().map(|&t| t as u32))
        .collect();
    cpu.step(&prompt, 8, &mut state, &mut logits);
    check(7, &logits);
    for t in 8..20 {
        let step: Vec<u32> = rows.iter().map(|r| r[t] as u32).collect();
        cpu.step(&step, 1, &mut state, &mut logits);
        check(t, &logits);
    }
    assert_eq!(state.len(), 20);
}

#[test]
fn a_generated_row_depends_on_its_prompt_and_index_not_on_threads_or_other_rows() {
    // The small test model and the bench model's shape (whose products are large enough for
    // a BLAS to block them differently).
    for (cfg, vocab) in [(small(), 50), (GptConfig::bench(), 512)] {
        let m = spread_model(cfg, 13);
        let prompts: Vec<Vec<u32>> = (0..150)
            .map(|r| (0..6).map(|i| ((i * 7 + r * 3) % vocab) as u32).collect())
            .collect();
        let config = SamplingConfig::default();
        let run = |prompts: &[Vec<u32>], threads: usize| {
            generate_with_threads(
                &m,
                prompts,
                10,
                2,
                &config,
                &mut rng::stream(3, "test/gen", 0),
                threads,
            )
        };
        // 150 rows: one chunk of 150 is over the chunk limit, so 1 thread runs three chunks;
        // 3 threads run chunks of 50.
        let one = run(&prompts, 1);
        assert_eq!(one, run(&prompts, 3));
        assert_eq!(one, run(&prompts, 2));
        assert_eq!(one[..7], run(&prompts[..7], 2)[..]);
        assert_eq!(one[..1], run(&prompts[..1], 1)[..]);
        // Rows differ from each other (each has its own stream), and the logits are spread
        // enough for tokens other than the most likely to be drawn.
        let distinct: std::collections::HashSet<_> = one.iter().map(|g| g.tokens.clone()).collect();
        assert!(
            distinct.len() > 140,
            "{} distinct responses",
            distinct.len()
        );
    }
}

#[test]
fn generation_sees_weights_written_in_place_since_its_last_call() {
    tch::set_num_threads(1);
    let mut m = spread_model(small(), 14);
    let prompts: Vec<Vec<u32>> = (0..6).map(|r| vec![r as u32 + 3; 5]).collect();
    let config = SamplingConfig::default();
    let run = |m: &Gpt| {
        generate(
            m,
            &prompts,
            8,
            2,
            &config,
            &mut rng::stream(4, "test/gen", 0),
        )
    };
    let before = run(&m);
    assert_eq!(before, run(&m));
    // An optimiser step writes the parameters in place.
    use tch::nn::OptimizerConfig;
    let mut opt = tch::nn::Sgd::default().build(&m.vs, 0.5).unwrap();
    let loss = m
        .forward(&tokens(&[(0..10).collect()]))
        .pow_tensor_scalar(2)
        .sum(Kind::Float);
    opt.backward_step(&loss);
    let stepped = run(&m);
    assert_ne!(stepped, before);
    assert_eq!(stepped, run(&m.duplicate().unwrap()));
    // So does copying another model's weights in.
    let other = spread_model(small(), 15);
    m.vs.copy(&other.vs).unwrap();
    assert_eq!(run(&m), run(&other));
}

#[test]
fn libtorchs_forward_pass_samples_the_same_tokens_from_the_same_streams() {
    tch::set_num_threads(1);
    let m = spread_model(small(), 16);
    let prompts: Vec<Vec<u32>> = (0..6).map(|r| vec![r as u32 + 7, 3, 9, 4]).collect();
    let config = SamplingConfig::default();
    let ours = generate(
        &m,
        &prompts,
        10,
        2,
        &config,
        &mut rng::stream(5, "test/gen", 0),
    );
    let torch = generate_libtorch(
        &m,
        &prompts,
        10,
        2,
        &config,
        &mut rng::stream(5, "test/gen", 0),
    );
    for (a, b) in ours.iter().zip(&torch) {
        assert_eq!(a.tokens, b.tokens);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}
