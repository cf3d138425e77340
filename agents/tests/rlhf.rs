//! RLHF on text, library side: the reward model's losses (pairwise = K-way at K = 2, ties, no
//! contribution from prompt or padding), its initialisation from the SFT weights and the value
//! function's from it, checkpoints with a scalar head, best-of-n's exact KL on a vocabulary
//! small enough to enumerate every response, held-out accuracy counting a tie in the scores as
//! a coin flip, the token-level learner's masking, the whole
//! pipeline's byte-identical reruns, and each learner and option of the pipeline at work.

use std::path::Path;

use gradgym_agents::config::rlhf::{RlConfig, RlhfConfig, TextAlgo as Algo};
use gradgym_agents::config::{BackendKind, PpoLoss};
use gradgym_agents::nn::gpt::{Gpt, GptConfig};
use gradgym_agents::nn::sampling::{SamplingConfig, generate};
use gradgym_agents::rlhf::data::Comparison;
use gradgym_agents::rlhf::learner::{TokenLearner, TokenRollout, TokenUpdateStats};
use gradgym_agents::rlhf::pipeline::{self, Inputs, Stage};
use gradgym_agents::rlhf::reward::{chosen_lm_loss, preference_loss};
use gradgym_agents::rlhf::sequences::{Sequences, scores, token_logprobs, token_stats};
use gradgym_agents::run_folder::Existing;
use gradgym_agents::scratch::Scratch;
use gradgym_algorithms::best_of_n::{empirical_weights, exact_kl, kl_bound};
use gradgym_algorithms::reward_losses::{kway_loss, pairwise_loss};
use gradgym_envs::rng;
use gradgym_envs::text::{PAD, PROMPT_LEN};
use tch::{Device, Kind, Tensor};

fn small(vocab: usize) -> GptConfig {
    GptConfig {
        vocab,
        context: 24,
        width: 32,
        layers: 2,
        heads: 4,
        scalar_head: false,
    }
}

/// A model of `small(vocab)`, initialised from `seed`'s test stream.
fn model(vocab: usize, seed: u64) -> Gpt {
    Gpt::new(
        small(vocab),
        Device::Cpu,
        &mut rng::stream(seed, "test/rlhf", 0),
    )
    .unwrap()
}

/// A model over the review language's vocabulary.
fn language_model(seed: u64) -> Gpt {
    model(gradgym_envs::text::Vocabulary::new().len(), seed)
}

fn rm(seed: u64) -> Gpt {
    let body = model(40, seed);
    body.with_scalar_head(&mut rng::stream(seed, "test/rlhf-head", 0))
        .unwrap()
}

fn prompt(k: u32) -> Vec<u32> {
    (0..PROMPT_LEN as u32)
        .map(|i| 4 + (i * 3 + k) % 30)
        .collect()
}

/// What the learner tests roll out on: a reference and a reward model, and prompts 1, 2 and 3
/// with responses of 3, 11 and 5 tokens (the second without `<eos>`).
struct Setting {
    reference: Gpt,
    reward_model: Gpt,
    prompts: Vec<Vec<u32>>,
    responses: Vec<Vec<u32>>,
}

fn setting() -> Setting {
    Setting {
        reference: model(40, 5),
        reward_model: rm(7),
        prompts: (1..=3).map(prompt).collect(),
        responses: vec![vec![5, 6, 2], vec![7; 11], vec![8, 9, 10, 11, 2]],
    }
}

impl Setting {
    /// `l`'s rollout of the batch, at β = 0.05.
    fn rollout(&self, l: &TokenLearner) -> TokenRollout {
        l.rollout(
            &self.reference,
            &self.reward_model,
            &slices(&self.prompts),
            &slices(&self.responses),
            0.05,
        )
    }
}

fn slices(v: &[Vec<u32>]) -> Vec<&[u32]> {
    v.iter().map(Vec::as_slice).collect()
}

fn comparison(k: u32, responses: Vec<Vec<u32>>, mu: Vec<f64>) -> Comparison {
    Comparison {
        prompt: prompt(k),
        responses,
        mu,
    }
}

#[test]
fn the_pairwise_loss_is_the_kway_loss_at_k_2_ties_included() {
    let s = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 2.5, -0.4, 0.1]).view([3, 2]);
    for mu_w in [1.0f32, 0.5, 0.0] {
        let mu = Tensor::from_slice(&[mu_w, 1.0 - mu_w]).repeat([3, 1]);
        let kway = kway_loss(&s, &mu).double_value(&[]);
        let pair =
            pairwise_loss(&s.select(1, 0), &s.select(1, 1), &mu.select(1, 0)).double_value(&[]);
        assert!((kway - pair).abs() < 1e-6, "μ_w {mu_w}: {kway} vs {pair}");
    }
    // Hand value: −log σ(0.3 + 1.2) for the first row alone.
    let one = pairwise_loss(
        &Tensor::from_slice(&[0.3f32]),
        &Tensor::from_slice(&[-1.2f32]),
        &Tensor::from_slice(&[1.0f32]),
    )
    .double_value(&[]);
    let want = -(1.0 / (1.0 + (-1.5f64).exp())).ln();
    assert!((one - want).abs() < 1e-6, "{one} vs {want}");
    // A tie's gradient pulls the two scores together: zero when they are equal.
    let a = Tensor::from_slice(&[0.7f32]).set_requires_grad(true);
    let b = Tensor::from_slice(&[0.7f32]).set_requires_grad(true);
    pairwise_loss(&a, &b, &Tensor::from_slice(&[0.5f32])).backward();
    assert!(a.grad().abs().double_value(&[0]) < 1e-7);
}

/// Askell's LM term on a label that prefers no single response (a tie, a soft μ) trains on
/// each response it prefers, weighted by μⱼ: the expected loss of the one a labeller drawing
/// from μ would choose. (It used to take the last of the tied responses.)
#[test]
fn the_lm_term_of_a_tie_or_a_soft_label_weights_each_response_by_mu() {
    tch::set_num_threads(1);
    let m = rm(1);
    let (a, b) = (vec![5u32, 6, 9, 2], vec![7u32, 2]);
    let lm = |mu: Vec<f64>| {
        let c = [comparison(0, vec![a.clone(), b.clone()], mu)];
        let refs: Vec<&Comparison> = c.iter().collect();
        chosen_lm_loss(&m, &refs).double_value(&[])
    };
    // Per-token means of each response alone, and their token counts.
    let (la, lb) = (lm(vec![1.0, 0.0]), lm(vec![0.0, 1.0]));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    assert!((la - lb).abs() > 1e-3, "{la} {lb}");
    for (wa, wb) in [(0.5, 0.5), (0.3, 0.7)] {
        let want = (wa * na * la + wb * nb * lb) / (wa * na + wb * nb);
        let got = lm(vec![wa, wb]);
        assert!((got - want).abs() < 1e-5, "μ ({wa}, {wb}): {got} vs {want}");
    }
}

#[test]
fn the_reward_models_losses_see_neither_prompt_padding_nor_tokens_after_the_response() {
    tch::set_num_threads(1);
    let m = rm(1);
    let c = [comparison(
        0,
        vec![vec![5, 6, 2], vec![7, 2]],
        vec![1.0, 0.0],
    )];
    let refs: Vec<&Comparison> = c.iter().collect();
    let base = preference_loss(&m, &refs).double_value(&[]);
    let lm = chosen_lm_loss(&m, &refs).double_value(&[]);
    // The same comparison batched beside a longer one pads these responses further: their
    // scores, hence the loss of the pair, cannot change.
    let long = comparison(1, vec![vec![8; 12], vec![9; 10]], vec![0.0, 1.0]);
    let both = [&c[0], &long];
    let seqs = Sequences::pack(
        &[&prompt(0)[..], &prompt(0)[..]],
        &[&c[0].responses[0][..], &c[0].responses[1][..]],
        Device::Cpu,
    );
    let alone = scores(&m, &seqs);
    let padded = Sequences::pack(
        &[&prompt(0)[..], &prompt(0)[..], &prompt(1)[..]],
        &[
            &c[0].responses[0][..],
            &c[0].responses[1][..],
            &long.responses[0][..],
        ],
        Device::Cpu,
    );
    let with_padding = scores(&m, &padded).narrow(0, 0, 2);
    assert!(
        (&alone - &with_padding).abs().max().double_value(&[]) < 1e-5,
        "padding changed a score"
    );
    let pair = preference_loss(&m, &both[..1]).double_value(&[]);
    assert_eq!(pair, base);
    // No gradient reaches the embedding of <pad> from the preference loss: padding sits after
    // every position the scores are read at. (The LM term's softmax normaliser touches every
    // row of the tied unembedding, <pad>'s included, so it is not checked this way.)
    let wte =
        m.vs.variables()
            .into_iter()
            .find(|(n, _)| n == "transformer__wte__weight")
            .unwrap()
            .1;
    preference_loss(&m, &both).backward();
    let g_pad = wte.grad().get(PAD as i64).abs().max().double_value(&[]);
    let g_word = wte.grad().get(8).abs().max().double_value(&[]);
    assert_eq!(g_pad, 0.0, "padding's embedding got a gradient");
    assert!(g_word > 0.0, "a response word's embedding got none");
    assert!(lm.is_finite());
}

#[test]
fn the_reward_model_starts_as_the_sft_model_and_the_value_function_as_the_reward_model() {
    let sft = model(40, 3);
    let reward_model = sft
        .with_scalar_head(&mut rng::stream(3, "test/rlhf-head", 0))
        .unwrap();
    let body: Vec<_> = sft.named_parameters();
    let rm_params = reward_model.named_parameters();
    assert_eq!(rm_params.len(), body.len() + 2);
    for ((n, a), (m, b)) in body.iter().zip(&rm_params) {
        assert_eq!(n, m);
        assert!(a.equal(b), "{n} differs from the SFT weights");
    }
    // The learner the pipeline builds: the policy is the SFT model, the value function the
    // reward model.
    let learner =
        TokenLearner::from_models(Algo::Ppo, RlConfig::default(), &sft, &reward_model).unwrap();
    for ((n, a), (_, b)) in body.iter().zip(learner.policy.named_parameters()) {
        assert!(a.equal(&b), "{n}: the policy is not the SFT model");
    }
    let value = learner.value.named_parameters();
    assert_eq!(value.len(), rm_params.len());
    for ((n, a), (_, b)) in rm_params.iter().zip(&value) {
        assert!(
            a.equal(b),
            "{n}: the value function is not the reward model"
        );
    }
    // And they are copies, not views: training one leaves the other.
    tch::no_grad(|| {
        for (_, mut v) in learner.value.vs.variables() {
            let _ = v.g_add_scalar_(1.0);
        }
    });
    assert!(reward_model.named_parameters()[0].1.equal(&rm_params[0].1));
}

#[test]
fn a_reward_model_checkpoint_round_trips_with_its_head() {
    let m = rm(4);
    let dir = Scratch::new("rm", "checkpoint");
    m.save(&dir).unwrap();
    let json = std::fs::read_to_string(dir.join("model.json")).unwrap();
    assert!(json.contains("\"scalar_head\": true"), "{json}");
    let back = Gpt::load(&dir, Device::Cpu).unwrap();
    for ((n, a), (_, b)) in m.named_parameters().iter().zip(back.named_parameters()) {
        assert!(a.equal(&b), "{n}");
    }
    let seqs = Sequences::pack(&[&prompt(0)[..]], &[&[5u32, 6, 2][..]], Device::Cpu);
    assert_eq!(
        scores(&m, &seqs).double_value(&[0]),
        scores(&back, &seqs).double_value(&[0])
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Every response of a 3-token vocabulary (two words and <eos>) up to 3 tokens, with its exact
/// probability under a random tiny GPT.
#[test]
fn best_of_n_on_an_enumerable_vocabulary_stays_under_the_bound_and_the_estimate_agrees() {
    tch::set_num_threads(1);
    let eos = 2u32;
    let config = GptConfig {
        vocab: 3,
        context: 8,
        width: 16,
        layers: 1,
        heads: 2,
        scalar_head: false,
    };
    let model = Gpt::new(config, Device::Cpu, &mut rng::stream(9, "test/bon", 0)).unwrap();
    let prompt = vec![0u32, 1, 0, 1, 0];
    let max_new = 3;
    // Enumerate: every sequence of words ending at <eos> or at max_new tokens.
    let mut responses: Vec<Vec<u32>> = Vec::new();
    fn grow(prefix: Vec<u32>, max: usize, eos: u32, out: &mut Vec<Vec<u32>>) {
        for t in 0..3u32 {
            let mut r = prefix.clone();
            r.push(t);
            if t == eos || r.len() == max {
                out.push(r);
            } else {
                grow(r, max, eos, out);
            }
        }
    }
    grow(vec![], max_new, eos, &mut responses);
    let prob = |r: &[u32]| -> f64 {
        let mut tokens: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        tokens.extend(r.iter().map(|&t| t as i64));
        let x = Tensor::from_slice(&tokens).view([1, -1]);
        let logp = tch::no_grad(|| model.forward(&x)).log_softmax(-1, Kind::Double);
        (0..r.len())
            .map(|j| logp.double_value(&[0, (prompt.len() + j - 1) as i64, r[j] as i64]))
            .sum::<f64>()
            .exp()
    };
    let probs: Vec<f64> = responses.iter().map(|r| prob(r)).collect();
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    // A reward with ties: the count of word 1, minus a little for length.
    let reward = |r: &[u32]| r.iter().filter(|&&t| t == 1).count() as f64 - 0.1 * r.len() as f64;
    let rewards: Vec<f64> = responses.iter().map(|r| reward(r)).collect();
    // The estimator runs use: N samples from the model, the plug-in weights.
    let n_samples = 20_000;
    let generated = generate(
        &model,
        &vec![prompt.clone(); n_samples],
        max_new,
        eos,
        &SamplingConfig::default(),
        &mut rng::stream(9, "test/bon-sample", 0),
    );
    let sampled: Vec<f64> = generated.iter().map(|g| reward(&g.tokens)).collect();
    for n in [1usize, 2, 4, 8, 16, 64] {
        let exact = exact_kl(&probs, &rewards, n);
        assert!(
            exact <= kl_bound(n) + 1e-9,
            "n {n}: exact KL {exact} above the bound {}",
            kl_bound(n)
        );
        let (_, estimate) = empirical_weights(&sampled, n);
        assert!(
            (estimate - exact).abs() < 0.03 + 0.02 * exact,
            "n {n}: estimate {estimate} vs exact {exact}"
        );
    }
    // With few distinct rewards the bound is far from tight: the analytic formula overstates.
    // (2.86 nats against the bound's 3.17 at n = 64 for this model.)
    assert!(exact_kl(&probs, &rewards, 64) < kl_bound(64) - 0.2);
}

#[test]
fn token_level_losses_ignore_padding() {
    tch::set_num_threads(1);
    let policy = model(40, 5);
    let p = prompt(2);
    let short = [5u32, 6, 2];
    let alone = Sequences::pack(&[&p[..]], &[&short[..]], Device::Cpu);
    let batched = Sequences::pack(
        &[&p[..], &p[..]],
        &[&short[..], &[7u32; 9][..]],
        Device::Cpu,
    );
    let a = token_stats(&policy, &alone);
    let b = token_stats(&policy, &batched);
    let diff = (a.logprobs.get(0) - b.logprobs.get(0).narrow(0, 0, 3))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
    // Padding positions carry exactly 0 log-probability and entropy.
    let pad = b.logprobs.get(0).narrow(0, 3, 6);
    assert_eq!(pad.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(
        b.entropy
            .get(0)
            .narrow(0, 3, 6)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}

fn tiny_config(seed: u64) -> RlhfConfig {
    let mut c = RlhfConfig::from_toml(
        r#"
        [model]
        context = 24
        width = 32
        [pretrain]
        steps = 30
        [sft]
        steps = 20
        [labels]
        comparisons = 60
        [reward_model]
        epochs = 1
        normalize_samples = 32
        [rl]
        updates = 3
        batch_size = 8
        max_response = 16
        [eval]
        prompts = 8
        every = 2
        best_of_n = [1, 4]
        samples_per_prompt = 8
        "#,
        "tiny",
    )
    .unwrap();
    c.seed = seed;
    c.threads = 1;
    c
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).unwrap().display().to_string();
        if rel == "manifest.json" {
            continue;
        }
        out.push((rel, std::fs::read(&entry).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_same_seed_gives_byte_identical_runs_and_another_seed_does_not() {
    let base = Scratch::new("rlhf-seed", "runs");
    let mut quiet = |_: &str| {};
    let mut run = |seed: u64, name: &str| {
        let out = base.join(name);
        pipeline::run(
            &tiny_config(seed),
            Stage::All,
            &Inputs::default(),
            &out,
            Existing::Refuse,
            &mut quiet,
            None,
        )
        .unwrap();
        out
    };
    let a = run(1, "a");
    let b = run(1, "b");
    let c = run(2, "c");
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    for name in [
        "metrics.csv",
        "eval.csv",
        "best_of_n.csv",
        "labels.jsonl",
        "samples.jsonl",
        "policy/model.safetensors",
        "summary.json",
    ] {
        assert!(fa.iter().any(|(n, _)| n == name), "{name} is missing");
    }
    assert_eq!(fa, fb, "same seed, different bytes");
    let metrics = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .find(|(n, _)| n == "metrics.csv")
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(
        metrics(&fa),
        metrics(&fc),
        "another seed gave the same metrics"
    );
    std::fs::remove_dir_all(base).ok();
}

/// A column of a run's metrics.csv, by name.
fn column(dir: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    lines
        .map(|l| l.split(',').nth(i).unwrap().parse().unwrap())
        .collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn each_learner_and_option_of_the_pipeline_runs_and_shows_its_effect() {
    let base = Scratch::new("rlhf-options", "runs");
    let mut quiet = |_: &str| {};
    let mut run = |name: &str, edit: &dyn Fn(&mut RlhfConfig)| {
        let mut c = tiny_config(3);
        c.rl.updates = 4;
        edit(&mut c);
        let out = base.join(name);
        pipeline::run(
            &c,
            Stage::All,
            &Inputs::default(),
            &out,
            Existing::Refuse,
            &mut quiet,
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        out
    };
    // The learners: PPO takes update_epochs × num_minibatches steps per batch, REINFORCE and
    // A2C one; each moves the policy away from the SFT model.
    let sft_weights = |dir: &Path| std::fs::read(dir.join("sft/model.safetensors")).unwrap();
    for (algo, steps) in [
        ("ppo", 16.0),
        ("reinforce", 1.0),
        ("a2c", 1.0),
        ("rloo", 16.0),
        ("grpo", 16.0),
    ] {
        let dir = run(algo, &|c| c.rl.algo = algo.into());
        let header = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let header = header.lines().next().unwrap();
        // RLOO and GRPO have no value function and report their groups' spread instead.
        let grouped = matches!(algo, "rloo" | "grpo");
        assert_eq!(header.contains("val/error"), !grouped, "{algo}: {header}");
        assert_eq!(header.contains("reward_std"), grouped, "{algo}: {header}");
        assert_eq!(column(&dir, "gradient_steps"), vec![steps; 4], "{algo}");
        let policy = std::fs::read(dir.join("policy/model.safetensors")).unwrap();
        assert_ne!(
            policy,
            sft_weights(&dir),
            "{algo} left the policy at the SFT weights"
        );
        assert!(
            column(&dir, "objective/kl").last().unwrap().abs() > 0.0,
            "{algo}"
        );
        assert_eq!(summary(&dir)["algo"], algo);
    }
    // Ziegler's online mode: three rounds over four updates (each round at least one); each
    // later round labels the current policy's samples, writes them, and refits on every label
    // so far.
    let dir = run("rounds", &|c| c.rl.rounds = 3);
    assert_eq!(column(&dir, "round"), vec![1.0, 2.0, 3.0, 3.0]);
    let lines = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .lines()
            .count()
    };
    let s = summary(&dir);
    let mut so_far = 0;
    for (r, labels) in [
        (1, "labels.jsonl"),
        (2, "labels_round2.jsonl"),
        (3, "labels_round3.jsonl"),
    ] {
        assert!(lines(labels) > 0, "{labels} is empty");
        so_far += lines(labels);
        assert_eq!(s[format!("rm_comparisons_round{r}")], so_far, "round {r}");
        if r > 1 {
            assert!(lines(&format!("held_out_round{r}.jsonl")) > 0);
            assert!(
                dir.join(format!("reward_model_round{r}/model.safetensors"))
                    .is_file()
            );
            assert!(s.get(format!("rm_gold_accuracy_round{r}")).is_some());
        }
    }
    // The fits' steps grow with the labels they see (rm.csv: round, step, loss).
    let rm_csv = std::fs::read_to_string(dir.join("rm.csv")).unwrap();
    let steps = |r: &str| {
        rm_csv
            .lines()
            .filter(|l| l.split(',').next() == Some(r))
            .count()
    };
    assert!(
        steps("1") < steps("2") && steps("2") < steps("3"),
        "steps per round: {} {} {}",
        steps("1"),
        steps("2"),
        steps("3")
    );
    // The pipeline's reward model starts from the SFT weights: with both loss coefficients 0
    // its fit moves nothing but the normalisation, which lives in the head.
    let dir = run("rm-init", &|c| {
        c.reward_model.preference_coef = 0.0;
        c.reward_model.lm_coef = 0.0;
    });
    let load = |m: &str| {
        Gpt::load(&dir.join(m), Device::Cpu)
            .unwrap()
            .named_parameters()
    };
    let (sft, rm, pretrained) = (load("sft"), load("reward_model"), load("pretrain"));
    assert_eq!(rm.len(), sft.len() + 2);
    assert!(
        sft.iter()
            .zip(&pretrained)
            .any(|((_, a), (_, b))| !a.equal(b))
    );
    for ((n, a), (m, b)) in sft.iter().zip(&rm) {
        assert_eq!(n, m);
        assert!(
            a.equal(b),
            "{n}: the reward model's body is not the SFT weights"
        );
    }
    // The adaptive KL controller moves β; a fixed β stays put.
    let dir = run("adaptive", &|c| c.rl.kl_target = Some(0.01));
    let beta = column(&dir, "beta");
    assert_eq!(beta[0], 0.05);
    assert!(
        beta.windows(2).any(|w| w[0] != w[1]),
        "β never moved: {beta:?}"
    );
    assert_eq!(column(&base.join("ppo"), "beta"), vec![0.05; 4]);
    // PPO-KL: its β toward the old policy has a column of its own, doubling here toward a
    // tiny target; the clipped surrogate's runs have no such column.
    let dir = run("ppo-kl", &|c| {
        c.rl.ppo_loss = PpoLoss::Kl;
        c.rl.ppo_kl_target = Some(1e-12);
    });
    assert_eq!(column(&dir, "policy/kl_coef"), [1.0, 2.0, 4.0, 8.0]);
    // CleanRL's annealed learning rate: 1, ¾, ½, ¼ of its start over four updates, logged.
    let dir_anneal = run("anneal", &|c| c.rl.anneal_lr = true);
    let lr = RlConfig::default().learning_rate;
    assert_eq!(
        column(&dir_anneal, "learning_rate"),
        [lr, lr * 0.75, lr * 0.5, lr * 0.25]
    );
    let weights = |d: &Path| std::fs::read(d.join("policy/model.safetensors")).unwrap();
    assert_ne!(weights(&dir_anneal), weights(&base.join("ppo")));
    let after = column(&dir, "policy/kl_after");
    assert!(after.iter().all(|&d| d > 0.0), "{after:?}");
    let header = std::fs::read_to_string(base.join("ppo/metrics.csv")).unwrap();
    assert!(!header.lines().next().unwrap().contains("policy/kl_"));
    // A clipped run's manifest names none of PPO-KL's fields, left at their defaults (runs
    // of one setting group by their manifests' configs).
    let manifest = std::fs::read_to_string(base.join("ppo/manifest.json")).unwrap();
    for key in ["ppo_loss", "kl_coef", "ppo_kl_target", "target_kl"] {
        assert!(!manifest.contains(key), "{key} in {manifest}");
    }
    // Askell's LM term is fitted and reported.
    let dir = run("lm", &|c| c.reward_model.lm_coef = 0.5);
    let lm = summary(&dir)["rm_lm_loss"].as_f64().expect("an LM loss");
    assert!(lm.is_finite() && lm > 0.0);
    assert!(summary(&base.join("ppo"))["rm_lm_loss"].is_null());
    // K-way labels: best of 4, written in the JSONL K-way form.
    let dir = run("kway", &|c| c.labels.num_responses = 4);
    let first = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(
        line["responses"].as_array().map(|r| r.len()),
        Some(4),
        "{line}"
    );
    std::fs::remove_dir_all(base).ok();
}

/// A learner on `backend` whose policy starts from seed 5's weights and whose value function
/// is a reward model on them, with an entropy bonus of `ent_coef`.
fn learner_on(
    algo: Algo,
    num_minibatches: usize,
    backend: BackendKind,
    ent_coef: f64,
) -> TokenLearner {
    learner_with(algo, num_minibatches, backend, |c| c.ent_coef = ent_coef)
}

/// [`learner_on`] with no entropy bonus and `edit` made to its config.
fn learner_with(
    algo: Algo,
    num_minibatches: usize,
    backend: BackendKind,
    edit: impl Fn(&mut RlConfig),
) -> TokenLearner {
    let policy = model(40, 5);
    let value = policy
        .with_scalar_head(&mut rng::stream(5, "test/rlhf-head", 0))
        .unwrap();
    let mut config = RlConfig {
        num_minibatches,
        update_epochs: 2,
        max_response: 12,
        backend,
        ..RlConfig::default()
    };
    edit(&mut config);
    TokenLearner::new(algo, config, policy, value).unwrap()
}

/// `rl.anneal_lr`'s scaling reaches both optimisers on both backends: at 0 an update leaves
/// the policy and the value function exactly where they were, at 1 it moves them.
#[test]
fn scaled_learning_rates_reach_both_networks_on_both_backends() {
    tch::set_num_threads(1);
    let s = setting();
    for backend in [BackendKind::Libtorch, BackendKind::Native] {
        for (frac, moves) in [(0.0, false), (1.0, true)] {
            let mut l = learner_with(Algo::Ppo, 1, backend, |_| {});
            let (policy0, value0) = (l.policy.duplicate().unwrap(), l.value.duplicate().unwrap());
            l.scale_learning_rates(frac);
            let r = s.rollout(&l);
            l.update(&r, &mut rng::stream(0, "test/anneal", 0)).unwrap();
            let what = format!("{backend:?} at {frac}");
            assert_eq!(
                max_param_diff(&l.policy, &policy0) > 0.0,
                moves,
                "policy, {what}"
            );
            assert_eq!(
                max_param_diff(&l.value, &value0) > 0.0,
                moves,
                "value, {what}"
            );
        }
    }
}

/// PPO with `rl.ppo_loss = "kl"` (`L^KLPEN`), on both backends: its penalty holds the policy
/// nearer the one that sampled the batch (a large β ends an update's steps at a smaller KL to
/// it than β = 0, which is the unclipped surrogate); its β stays at `kl_coef` without a
/// target, and with `ppo_kl_target` is doubled after an update whose KL, measured after it,
/// is above 1.5 × the target and halved below the target / 1.5 (Schulman et al. 2017,
/// section 4); and
/// CleanRL's `target_kl` ends the epochs after the first whose last step passes it.
#[test]
fn ppo_kl_penalises_the_kl_to_the_old_policy_adapts_its_beta_and_target_kl_stops_early() {
    tch::set_num_threads(1);
    let s = setting();
    for backend in [BackendKind::Libtorch, BackendKind::Native] {
        let kl = |edit: &dyn Fn(&mut RlConfig)| {
            learner_with(Algo::Ppo, 1, backend, |c| {
                c.ppo_loss = PpoLoss::Kl;
                c.update_epochs = 8;
                c.learning_rate = 3e-3;
                edit(c);
            })
        };
        let updates = |l: &mut TokenLearner, n: usize| -> Vec<TokenUpdateStats> {
            let r = s.rollout(l);
            (0..n)
                .map(|i| {
                    l.update(&r, &mut rng::stream(i as u64, "test/ppo-kl", 0))
                        .unwrap()
                })
                .collect()
        };
        // The penalty's effect.
        let free = updates(&mut kl(&|c| c.kl_coef = 0.0), 1)[0].approx_kl;
        let held = updates(&mut kl(&|c| c.kl_coef = 100.0), 1)[0].approx_kl;
        assert!(
            held < 0.5 * free,
            "{backend:?}: KL to the old policy {held} with β = 100 against {free} with β = 0"
        );
        // β: fixed, doubled, halved; each update reports the β its steps used.
        let betas = |edit: &dyn Fn(&mut RlConfig)| -> Vec<f64> {
            updates(&mut kl(edit), 3)
                .iter()
                .map(|s| s.kl_coef)
                .collect()
        };
        assert_eq!(betas(&|_| {}), [1.0, 1.0, 1.0], "{backend:?}");
        assert_eq!(
            betas(&|c| c.ppo_kl_target = Some(1e-12)),
            [1.0, 2.0, 4.0],
            "{backend:?}"
        );
        assert_eq!(
            betas(&|c| c.ppo_kl_target = Some(1e9)),
            [1.0, 0.5, 0.25],
            "{backend:?}"
        );
        // The rule reads the KL after the update, over the batch's real tokens: with one
        // step per update a tiny target still doubles β (the KL before that step is 0).
        let mut one = kl(&|c| {
            c.update_epochs = 1;
            c.ppo_kl_target = Some(1e-9);
        });
        let r = s.rollout(&one);
        let s = one
            .update(&r, &mut rng::stream(0, "test/ppo-kl", 0))
            .unwrap();
        let log_ratio = tch::no_grad(|| token_logprobs(&one.policy, &r.seqs) - &r.old_logprobs)
            .masked_select(&r.seqs.mask.to_kind(Kind::Bool));
        let k3 = ((log_ratio.exp() - 1.0) - &log_ratio)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        // The native backend takes it from its own forward pass, which agrees with
        // libtorch's to float rounding, not bit for bit.
        let tolerance = match backend {
            BackendKind::Native => 1e-3 * k3,
            _ => 1e-12,
        };
        assert!(
            k3 > 0.0 && (s.kl_after - k3).abs() < tolerance,
            "{backend:?}: {} vs {k3}",
            s.kl_after
        );
        // ...and on the native backend from its own pass: libtorch's would give k3's bits.
        if backend == BackendKind::Native {
            assert_ne!(
                s.kl_after, k3,
                "the native backend's d came from libtorch's pass"
            );
        }
        let s = one
            .update(&r, &mut rng::stream(1, "test/ppo-kl", 0))
            .unwrap();
        assert_eq!(s.kl_coef, 2.0, "{backend:?}");
        // The clipped surrogate has no β.
        let mut clip = learner_with(Algo::Ppo, 1, backend, |_| {});
        assert_eq!(updates(&mut clip, 1)[0].kl_coef, 0.0);
        // target_kl: three minibatches of one sequence; the first epoch's last step sees a
        // policy its first steps moved, so its KL is past a tiny target and no second epoch
        // runs.
        let steps = |target_kl: Option<f64>| {
            let mut l = learner_with(Algo::Ppo, 3, backend, |c| {
                c.update_epochs = 4;
                c.target_kl = target_kl;
            });
            updates(&mut l, 1)[0].gradient_steps
        };
        assert_eq!(steps(None), 12, "{backend:?}");
        assert_eq!(steps(Some(1e-12)), 3, "{backend:?}");
        assert_eq!(steps(Some(1e9)), 12, "{backend:?}");
    }
}

fn max_param_diff(a: &Gpt, b: &Gpt) -> f64 {
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    va.iter()
        .map(|(name, x)| (x - &vb[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// A batch whose advantages or returns are not finite is refused before any gradient step,
/// naming its cause: the value function's predictions (rl.value_learning_rate) when they are
/// not finite, else rewards that overflowed GAE or whitening (rl.beta).
#[test]
fn a_batch_of_non_finite_advantages_names_its_cause_before_a_step() {
    tch::set_num_threads(1);
    let reference = model(40, 5);
    let reward_model = rm(7);
    let (p, r) = (prompt(1), vec![5u32, 6, 2]);
    let mut l = learner_on(Algo::Ppo, 1, BackendKind::Libtorch, 0.0);
    let fresh = |l: &mut TokenLearner| l.rollout(&reference, &reward_model, &[&p], &[&r], 0.05);
    let start = l.policy.duplicate().unwrap();
    // The error of an update of a fresh rollout with one tensor replaced by `damage`.
    let refused = |l: &mut TokenLearner, damage: &dyn Fn(&mut TokenRollout)| {
        let mut rollout = fresh(l);
        damage(&mut rollout);
        l.update(&rollout, &mut rng::stream(1, "test/mb", 0))
            .unwrap_err()
            .to_string()
    };
    let e = refused(&mut l, &|r| r.old_values = r.old_values.fill(f64::NAN));
    assert!(e.contains("lower rl.value_learning_rate"), "{e}");
    let e = refused(&mut l, &|r| r.advantages = r.advantages.fill(f64::INFINITY));
    assert!(
        e.contains("overflowed") && e.contains("lower rl.beta"),
        "{e}"
    );
    // Finite returns whose squares would overflow float32 (whitening would make every
    // advantage 0, and the value loss overflow, blamed on the value learning rate).
    let e = refused(&mut l, &|r| r.returns = r.returns.ones_like() * 1e20);
    assert!(
        e.contains("overflowed") && e.contains("lower rl.beta"),
        "{e}"
    );
    assert_eq!(
        max_param_diff(&start, &l.policy),
        0.0,
        "a refused batch took a step"
    );
    let good = fresh(&mut l);
    l.update(&good, &mut rng::stream(1, "test/mb", 0)).unwrap();
    assert!(
        max_param_diff(&start, &l.policy) > 0.0,
        "a finite batch steps"
    );
}

#[test]
fn the_updates_see_nothing_of_the_padding_positions_of_a_rollout() {
    tch::set_num_threads(1);
    let s = setting();
    for (algo, backend) in [
        (Algo::Ppo, BackendKind::Libtorch),
        (Algo::Reinforce, BackendKind::Libtorch),
        (Algo::A2c, BackendKind::Libtorch),
        (Algo::Ppo, BackendKind::Native),
        (Algo::A2c, BackendKind::Native),
        (Algo::Rloo, BackendKind::Libtorch),
        (Algo::Grpo, BackendKind::Native),
    ] {
        for minibatches in [1, 3] {
            // The three responses as one group, for RLOO and GRPO.
            let new = || learner_with(algo, minibatches, backend, |c| c.num_generations = Some(3));
            let (mut a, mut b) = (new(), new());
            let ra = s.rollout(&a);
            let mut rb = s.rollout(&b);
            // Garbage wherever the mask says padding: huge advantages, returns and values,
            // log-probabilities of impossible tokens.
            let pad = rb.seqs.mask.ones_like() - &rb.seqs.mask;
            let junk = |x: &Tensor, v: f64| x * &rb.seqs.mask + &pad * v;
            rb.advantages = junk(&rb.advantages, 1e4);
            rb.returns = junk(&rb.returns, -1e4);
            rb.old_values = junk(&rb.old_values, 1e4);
            rb.old_logprobs = junk(&rb.old_logprobs, -50.0);
            rb.ref_logprobs = junk(&rb.ref_logprobs, -50.0);
            rb.token_weights = rb.token_weights.as_ref().map(|w| junk(w, 1e4));
            let sa = a.update(&ra, &mut rng::stream(1, "test/mb", 0)).unwrap();
            let sb = b.update(&rb, &mut rng::stream(1, "test/mb", 0)).unwrap();
            let what = format!("{algo:?} on {backend:?}, {minibatches} minibatch(es)");
            assert!(
                max_param_diff(&a.policy, &b.policy) < 1e-6,
                "policy, {what}"
            );
            assert!(max_param_diff(&a.value, &b.value) < 1e-6, "value, {what}");
            assert!((sa.policy_loss - sb.policy_loss).abs() < 1e-6, "{what}");
            assert!(
                (sa.value_loss - sb.value_loss).abs() < 1e-6
                    || (algo.grouped() && sa.value_loss.is_nan() && sb.value_loss.is_nan()),
                "{what}"
            );
            assert!((sa.approx_kl - sb.approx_kl).abs() < 1e-9, "{what}");
            assert_eq!(sa.clipfrac, sb.clipfrac, "{what}");
            assert!(
                max_param_diff(&a.policy, &s.reference) > 0.0,
                "{what}: no step taken"
            );
        }
    }
}

/// RLOO's and GRPO's batch in the tests: prompts 1 and 2, three responses each, of lengths
/// from 2 to 11 (one without `<eos>`).
fn two_groups_of_three() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let prompts = [1, 1, 1, 2, 2, 2].into_iter().map(prompt).collect();
    let responses = vec![
        vec![5, 6, 2],
        vec![7; 11],
        vec![8, 9, 10, 11, 2],
        vec![12, 13],
        vec![14, 15, 16, 17, 18, 19, 2],
        vec![20, 2],
    ];
    (prompts, responses)
}

/// RLOO and GRPO: each response's advantage, on every one of its real tokens and nowhere else,
/// is its group's formula (`gradgym_algorithms::group`) of the rollout's own rewards: RLOO's of
/// the KL-penalised sequence reward, GRPO's of the score alone. Neither steps the value
/// function; GRPO's step reads β (its KL term is in the loss), on both backends.
#[test]
fn rloo_and_grpo_take_advantages_within_groups_and_leave_the_value_function_alone() {
    use gradgym_agents::config::rlhf::ScaleRewards;
    use gradgym_algorithms::group::{centred_advantages, grpo_advantages, rloo_advantages};
    tch::set_num_threads(1);
    let reference = model(40, 5);
    let reward_model = rm(7);
    let (ps, rs) = two_groups_of_three();
    for backend in [BackendKind::Libtorch, BackendKind::Native] {
        for (algo, scale) in [
            (Algo::Rloo, ScaleRewards::Group),
            (Algo::Grpo, ScaleRewards::Group),
            (Algo::Grpo, ScaleRewards::None),
        ] {
            let what = format!("{algo:?} ({scale:?}) on {backend:?}");
            let new = || {
                learner_with(algo, 1, backend, |c| {
                    c.num_generations = Some(3);
                    c.scale_rewards = scale;
                })
            };
            let mut l = new();
            let r = l.rollout(&reference, &reward_model, &slices(&ps), &slices(&rs), 0.05);
            let want = match (algo, scale) {
                (Algo::Rloo, _) => rloo_advantages(&r.total_reward, 3),
                (_, ScaleRewards::Group) => grpo_advantages(&r.scores, 3),
                (_, ScaleRewards::None) => centred_advantages(&r.scores, 3),
            };
            let adv = Vec::<f32>::try_from(r.advantages.view([-1])).unwrap();
            let t = r.seqs.width;
            for (i, resp) in rs.iter().enumerate() {
                for j in 0..t {
                    let expect = if j < resp.len() { want[i] as f32 } else { 0.0 };
                    assert_eq!(adv[i * t + j], expect, "{what}: row {i}, token {j}");
                }
            }
            assert!(want.iter().any(|a| a.abs() > 1e-3), "{what}: {want:?}");
            assert_eq!(r.old_values.abs().sum(Kind::Float).double_value(&[]), 0.0);
            let value_before = l.value.duplicate().unwrap();
            let stats = l.update(&r, &mut rng::stream(1, "test/mb", 0)).unwrap();
            assert_eq!(stats.gradient_steps, 2, "{what}: update_epochs × 1");
            assert!(stats.value_loss.is_nan(), "{what}");
            assert_eq!(max_param_diff(&l.value, &value_before), 0.0, "{what}");
            assert!(max_param_diff(&l.policy, &reference) > 0.0, "{what}");
            // The same batch with β = 0 in the loss: GRPO steps elsewhere, RLOO (whose β is
            // in the rewards its advantages were taken from) the same.
            let mut m = new();
            let mut r0 = m.rollout(&reference, &reward_model, &slices(&ps), &slices(&rs), 0.05);
            r0.beta = 0.0;
            m.update(&r0, &mut rng::stream(1, "test/mb", 0)).unwrap();
            let moved = max_param_diff(&l.policy, &m.policy);
            match algo {
                Algo::Grpo => assert!(moved > 0.0, "{what}: β did not reach the loss"),
                _ => assert_eq!(moved, 0.0, "{what}"),
            }
        }
    }
}

/// RLOO's and GRPO's token weights are 1/B of each sequence over the whole batch; a
/// minibatch of b rows scales them by B/b, so that each step's loss is a mean over its own
/// sequences. At ratio 1 (a learning rate too small to move the policy) RLOO's loss over two
/// minibatches of 3 is then −Σ A_i |y_i| / 6 whichever rows each holds; without the rescale it
/// would be half that.
#[test]
fn rloo_and_grpo_minibatch_losses_are_means_over_their_own_sequences() {
    tch::set_num_threads(1);
    let reference = model(40, 5);
    let reward_model = rm(7);
    let (ps, rs) = two_groups_of_three();
    for backend in [BackendKind::Libtorch, BackendKind::Native] {
        let mut l = learner_with(Algo::Rloo, 2, backend, |c| {
            c.num_generations = Some(3);
            c.update_epochs = 1;
            c.learning_rate = 1e-12;
        });
        let r = l.rollout(&reference, &reward_model, &slices(&ps), &slices(&rs), 0.05);
        let sum_a_len = r.advantages.sum(Kind::Double).double_value(&[]);
        assert!(
            sum_a_len.abs() > 1e-3,
            "a batch whose loss tells the two apart"
        );
        let stats = l.update(&r, &mut rng::stream(1, "test/mb", 0)).unwrap();
        assert_eq!(stats.gradient_steps, 2);
        let want = -sum_a_len / 6.0;
        assert!(
            (stats.policy_loss - want).abs() < 1e-5,
            "{backend:?}: loss {} against {want} (half of it: {})",
            stats.policy_loss,
            want / 2.0
        );
    }
}

/// The largest difference between two models' parameters relative to the largest parameter.
fn rel_param_diff(a: &Gpt, b: &Gpt) -> f64 {
    let scale =
        a.vs.variables()
            .values()
            .map(|x| x.abs().max().double_value(&[]))
            .fold(0.0, f64::max);
    max_param_diff(a, b) / scale
}

#[test]
fn the_native_backend_trains_what_libtorch_trains() {
    tch::set_num_threads(1);
    let reference = model(40, 5);
    let reward_model = rm(7);
    let ps: Vec<Vec<u32>> = (0..5).map(prompt).collect();
    let prompts = slices(&ps);
    let rs: Vec<Vec<u32>> = vec![
        vec![5, 6, 2],
        vec![7; 11],
        vec![8, 9, 10, 11, 2],
        vec![12, 13],
        vec![14, 15, 16, 17, 18, 19, 2],
    ];
    let responses = slices(&rs);
    for (algo, minibatches, ent_coef) in [
        (Algo::Ppo, 1, 0.0),
        (Algo::Ppo, 1, 0.05),
        (Algo::Ppo, 3, 0.0),
        (Algo::Reinforce, 1, 0.01),
        (Algo::A2c, 1, 0.0),
        (Algo::Rloo, 1, 0.0),
        (Algo::Grpo, 3, 0.01),
    ] {
        let what = format!("{algo:?}, {minibatches} minibatch(es), ent_coef {ent_coef}");
        // The five responses as one group, for RLOO and GRPO.
        let on = |backend| {
            learner_with(algo, minibatches, backend, |c| {
                c.ent_coef = ent_coef;
                c.num_generations = Some(5);
            })
        };
        let (mut a, mut b) = (on(BackendKind::Libtorch), on(BackendKind::Native));
        assert_eq!(b.backend(), BackendKind::Native);
        for update in 0..3 {
            let ra = a.rollout(&reference, &reward_model, &prompts, &responses, 0.05);
            let rb = b.rollout(&reference, &reward_model, &prompts, &responses, 0.05);
            for (x, y) in [
                (&ra.scores, &rb.scores),
                (&ra.kl_k1, &rb.kl_k1),
                (&ra.entropy, &rb.entropy),
            ] {
                for (x, y) in x.iter().zip(y) {
                    assert!(
                        (x - y).abs() < 1e-4,
                        "{what}, update {update}: {x} against {y}"
                    );
                }
            }
            let sa = a
                .update(&ra, &mut rng::stream(1, "test/mb", update))
                .unwrap();
            let sb = b
                .update(&rb, &mut rng::stream(1, "test/mb", update))
                .unwrap();
            assert!(
                (sa.policy_loss - sb.policy_loss).abs() < 1e-4,
                "{what}: {sa:?} {sb:?}"
            );
            assert!(
                (sa.value_loss - sb.value_loss).abs() < 1e-4
                    || (algo.grouped() && sa.value_loss.is_nan() && sb.value_loss.is_nan()),
                "{what}: {sa:?} {sb:?}"
            );
            assert_eq!(sa.gradient_steps, sb.gradient_steps, "{what}");
        }
        // The steps moved the weights, the same way on both backends.
        let moved = rel_param_diff(&a.policy, &reference);
        assert!(moved > 5e-4, "{what}: no step taken ({moved})");
        let dp = rel_param_diff(&a.policy, &b.policy);
        let dv = rel_param_diff(&a.value, &b.value);
        // About 1e-6 here: float rounding, against steps 500 times larger.
        assert!(dp < 2e-5, "{what}: policies differ by {dp} (relative)");
        assert!(
            dv < 2e-5,
            "{what}: value functions differ by {dv} (relative)"
        );
    }
}

#[test]
fn a_native_learner_reads_weights_changed_behind_its_back() {
    tch::set_num_threads(1);
    let reference = model(40, 5);
    let reward_model = rm(7);
    let p = prompt(1);
    let r = vec![5u32, 6, 2];
    let mut a = learner_on(Algo::Ppo, 1, BackendKind::Libtorch, 0.0);
    let mut b = learner_on(Algo::Ppo, 1, BackendKind::Native, 0.0);
    // The same new weights written into both policies from outside.
    let other = model(40, 9);
    for l in [&mut a, &mut b] {
        let vars = l.policy.vs.variables();
        tch::no_grad(|| {
            for (name, t) in other.vs.variables() {
                vars[&name].shallow_clone().copy_(&t);
            }
        });
    }
    let ra = a.rollout(&reference, &reward_model, &[&p], &[&r], 0.05);
    let rb = b.rollout(&reference, &reward_model, &[&p], &[&r], 0.05);
    assert!((ra.kl_k1[0] - rb.kl_k1[0]).abs() < 1e-5, "{ra:?} {rb:?}");
    a.update(&ra, &mut rng::stream(1, "test/mb", 0)).unwrap();
    b.update(&rb, &mut rng::stream(1, "test/mb", 0)).unwrap();
    assert!(rel_param_diff(&a.policy, &b.policy) < 1e-4);
    assert!(rel_param_diff(&b.policy, &other) > 1e-4, "no step taken");
}

#[test]
fn generation_ends_and_masks_episodes_as_the_text_env_does() {
    use gradgym_envs::text::{EOS, Grammar, TextEnv, TextEnvConfig};
    tch::set_num_threads(1);
    let model = language_model(9);
    let grammar = Grammar::new();
    let mut draw = rng::stream(9, "test/requests", 0);
    let requests: Vec<_> = (0..256)
        .map(|_| grammar.sample_request(&mut draw))
        .collect();
    let prompts: Vec<Vec<u32>> = requests.iter().map(|r| grammar.prompt(*r)).collect();
    let max_response = 12;
    let generated = generate(
        &model,
        &prompts,
        max_response,
        EOS,
        &SamplingConfig::default(),
        &mut rng::stream(9, "test/sample", 0),
    );
    // Replay the sampled tokens through the env, every row at each step (ended rows get
    // <eos>, which the env ignores).
    let mut env = TextEnv::new(TextEnvConfig {
        batch: prompts.len(),
        max_response,
        context: 24,
    })
    .unwrap();
    env.reset_with(&requests).unwrap();
    for step in 0..max_response {
        let actions: Vec<u32> = generated
            .iter()
            .map(|g| g.tokens.get(step).copied().unwrap_or(EOS))
            .collect();
        env.step(&actions).unwrap();
    }
    assert!(env.all_done());
    let (mut ended, mut cut) = (0, 0);
    let p: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
    let seqs = Sequences::pack(&p, &r, Device::Cpu);
    let mask = Vec::<Vec<f32>>::try_from(&seqs.mask).unwrap();
    let env_mask = env.response_mask();
    for (i, g) in generated.iter().enumerate() {
        assert_eq!(env.prompt(i), prompts[i].as_slice());
        assert_eq!(env.response(i), g.tokens.as_slice(), "row {i}");
        if g.tokens.last() == Some(&EOS) {
            ended += 1;
        } else {
            assert_eq!(g.tokens.len(), max_response, "row {i} stopped early");
            cut += 1;
        }
        // The same response positions are real in the learner's batch and in the env.
        for (j, &m) in mask[i].iter().enumerate() {
            let in_env = env_mask[i].get(PROMPT_LEN + j).copied().unwrap_or(false);
            assert_eq!(m == 1.0, in_env, "row {i}, response position {j}");
        }
    }
    assert!(
        ended > 0 && cut > 0,
        "{ended} ended at <eos>, {cut} cut at the limit"
    );
}

#[test]
fn labels_of_any_sampled_text_round_trip_through_jsonl() {
    use gradgym_agents::config::rlhf::LabelsConfig;
    use gradgym_agents::rlhf::data::{read_jsonl, write_jsonl};
    use gradgym_agents::rlhf::reward::{human, label};
    use gradgym_envs::text::GoldJudge;
    tch::set_num_threads(1);
    // An untrained model samples every kind of token: special ones (<sep>, <pad>, <bos>)
    // inside responses, responses cut at the limit, and some that end at <eos>.
    let model = language_model(4);
    let judge = GoldJudge::new();
    for k in [2, 4] {
        let labels_config = LabelsConfig {
            num_responses: k,
            ..LabelsConfig::default()
        };
        let mut h = human(&labels_config, rng::stream(4, "test/human", 0)).unwrap();
        let mut labels = label(
            &model,
            &judge,
            &mut h,
            &labels_config,
            100,
            16,
            &mut rng::stream(4, "test/labels", 0),
            None,
        )
        .unwrap();
        // A user's soft label (any K): it must come back soft, not as a hard choice.
        let mut soft = labels[0].clone();
        soft.mu = (1..=k)
            .map(|i| (2 * i) as f64 / (k * (k + 1)) as f64)
            .collect();
        labels.push(soft);
        // One whose float a parser that is not correctly rounded reads back one ulp off
        // (107/216: serde_json without `float_roundtrip`).
        let mut odd = labels[0].clone();
        let a = 107.0 / 216.0;
        odd.mu = std::iter::once(a)
            .chain((1..k).map(|_| (1.0 - a) / (k - 1) as f64))
            .collect();
        labels.push(odd);
        let special = |t: &u32| *t == PAD || *t == 1 || *t == 3;
        assert!(
            labels
                .iter()
                .any(|c| c.responses.iter().any(|r| r.iter().any(special))),
            "the test needs special tokens inside responses"
        );
        let path = Scratch::new("rlhf-roundtrip", &format!("{k}.jsonl"));
        write_jsonl(&path, &labels, &judge.grammar).unwrap();
        let back = read_jsonl(&path, &judge.grammar, 16).unwrap();
        // The pairwise form writes the chosen response first: the same comparison, in
        // another order.
        let canonical = |c: &Comparison| {
            let mut pairs: Vec<(Vec<u32>, u64)> = c
                .responses
                .iter()
                .cloned()
                .zip(c.mu.iter().map(|m| m.to_bits()))
                .collect();
            pairs.sort();
            (c.prompt.clone(), pairs)
        };
        assert_eq!(back.len(), labels.len(), "K = {k}");
        for (i, (a, b)) in back.iter().zip(&labels).enumerate() {
            assert_eq!(canonical(a), canonical(b), "K = {k}, line {}", i + 1);
        }
        std::fs::remove_file(path).ok();
    }
}

/// A table of mixed rows written out (pandas writes a column's gaps as `null`): a null field
/// counts as not given, so pairwise, tie and K-way rows of one export load as their forms.
#[test]
fn a_null_field_in_a_preference_line_is_a_gap() {
    use gradgym_agents::rlhf::data::read_jsonl;
    use gradgym_envs::text::GoldJudge;
    let grammar = GoldJudge::new().grammar;
    let lines = [
        r#"{"prompt": "review of the phone positive :", "chosen": "the phone is great . <eos>", "rejected": "bad . <eos>", "tie": null, "responses": null, "best": null, "mu": null}"#,
        r#"{"prompt": "review of the phone positive :", "chosen": "the phone is great . <eos>", "rejected": "bad . <eos>", "tie": true, "responses": null, "best": null, "mu": null}"#,
        r#"{"prompt": "review of the phone positive :", "chosen": null, "rejected": null, "tie": null, "responses": ["bad . <eos>", "the phone is great . <eos>"], "best": 1.0, "mu": null}"#,
        r#"{"prompt": "review of the phone positive :", "chosen": null, "rejected": null, "tie": null, "responses": ["bad . <eos>", "the phone is great . <eos>"], "best": null, "mu": [0.25, 0.75]}"#,
    ];
    let dir = Scratch::new("jsonl-null", "data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prefs.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let got = read_jsonl(&path, &grammar, 16).unwrap();
    let mus: Vec<Vec<f64>> = got.iter().map(|c| c.mu.clone()).collect();
    assert_eq!(
        mus,
        [
            vec![1.0, 0.0],
            vec![0.5, 0.5],
            vec![0.0, 1.0],
            vec![0.25, 0.75]
        ]
    );
    // The prompt is always needed: a null one is named.
    std::fs::write(
        &path,
        r#"{"prompt": null, "chosen": "great . <eos>", "rejected": "bad . <eos>"}"#,
    )
    .unwrap();
    let e = format!("{:#}", read_jsonl(&path, &grammar, 16).unwrap_err());
    assert!(e.contains("prompt") && e.contains("got null"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_preference_file_may_carry_a_byte_order_mark_and_crlf_but_not_bytes_outside_utf8() {
    use gradgym_agents::rlhf::data::read_jsonl;
    use gradgym_envs::text::GoldJudge;
    let grammar = GoldJudge::new().grammar;
    let line = r#"{"prompt": "review of the phone positive :", "chosen": "the phone is great . <eos>", "rejected": "the phone is awful . <eos>"}"#;
    let dir = Scratch::new("jsonl", "data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prefs.jsonl");
    let plain = format!("{line}\n{line}\n");
    std::fs::write(&path, &plain).unwrap();
    let want = read_jsonl(&path, &grammar, 16).unwrap();
    assert_eq!(want.len(), 2);
    // A byte-order mark and Windows line ends read as the plain file does.
    let windows = format!("\u{feff}{line}\r\n{line}\r\n");
    std::fs::write(&path, windows).unwrap();
    let got = read_jsonl(&path, &grammar, 16).unwrap();
    assert_eq!(
        got.iter().map(|c| &c.responses).collect::<Vec<_>>(),
        want.iter().map(|c| &c.responses).collect::<Vec<_>>()
    );
    // A byte-order mark inside the file (two files joined) is named by its line.
    std::fs::write(&path, format!("\u{feff}{line}\n\u{feff}{line}\n")).unwrap();
    let e = read_jsonl(&path, &grammar, 16).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}:2: field `(line)`: starts with a byte-order mark",
            path.display()
        )),
        "{e}"
    );
    // A byte that is not UTF-8 is named by its line.
    let mut bytes = format!("{line}\n").into_bytes();
    bytes.extend_from_slice(b"{\"prompt\": \"\xff\"}\n");
    std::fs::write(&path, bytes).unwrap();
    let e = read_jsonl(&path, &grammar, 16).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}:2: field `(line)`: not UTF-8", path.display())),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A refused prompt is quoted shortened: a 5,000-word prompt gave a 30 KB error line.
#[test]
fn a_long_bad_prompt_is_quoted_shortened() {
    use gradgym_agents::rlhf::data::read_jsonl;
    use gradgym_envs::text::GoldJudge;
    let grammar = GoldJudge::new().grammar;
    let prompt = vec!["great"; 5000].join(" ");
    let line = format!(
        r#"{{"prompt": "{prompt}", "chosen": "the phone is great . <eos>", "rejected": "the phone is awful . <eos>"}}"#
    );
    let path = Scratch::new("long-prompt", "prefs.jsonl");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let e = format!("{:#}", read_jsonl(&path, &grammar, 16).unwrap_err());
    std::fs::remove_file(&path).ok();
    assert!(
        e.contains(":1: field `prompt`") && e.contains("more characters"),
        "{e}"
    );
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
}

#[test]
fn a_reward_model_that_scores_everything_alike_is_a_coin_flip_in_its_accuracy() {
    use gradgym_agents::config::rlhf::LabelsConfig;
    use gradgym_agents::rlhf::reward::{accuracy, human, label};
    use gradgym_envs::text::GoldJudge;
    tch::set_num_threads(1);
    let policy = language_model(5);
    let judge = GoldJudge::new();
    for k in [2usize, 4] {
        let labels_config = LabelsConfig {
            num_responses: k,
            ..LabelsConfig::default()
        };
        let mut h = human(&labels_config, rng::stream(5, "test/human", 0)).unwrap();
        let held_out = label(
            &policy,
            &judge,
            &mut h,
            &labels_config,
            60,
            16,
            &mut rng::stream(5, "test/labels", 0),
            None,
        )
        .unwrap();
        let mut rm = policy
            .with_scalar_head(&mut rng::stream(5, "test/rlhf-head", 0))
            .unwrap();
        let trained = accuracy(&rm, &held_out, &judge, 0.0).unwrap();
        // Every response scores 0.25.
        rm.rescale_head(0.0, 0.25);
        let flat = accuracy(&rm, &held_out, &judge, 0.0).unwrap();
        assert!(flat.gold_pairs > 20, "K = {k}: {flat:?}");
        assert_eq!(flat.gold_pairs, trained.gold_pairs);
        // Each pair is half a hit; each comparison with a single best response 1/K.
        assert_eq!(flat.gold, 0.5, "K = {k}: {flat:?}");
        assert_eq!(flat.label, 1.0 / k as f64, "K = {k}: {flat:?}");
        // A head that ranks responses gives a whole hit or none per pair.
        let hits = trained.gold * trained.gold_pairs as f64;
        assert!((hits - hits.round()).abs() < 1e-9, "K = {k}: {trained:?}");
    }
}

#[test]
fn finite_weights_that_overflow_in_the_forward_pass_stop_sampling_with_an_error() {
    let m = language_model(4);
    let prompts = vec![vec![gradgym_envs::text::BOS; PROMPT_LEN]; 3];
    let mut r = rng::stream(1, "test/overflow", 0);
    gradgym_agents::rlhf::reward::sample(&m, &prompts, 4, &mut r, None).expect("a healthy model");
    // A huge but finite gain in the final LayerNorm: its outputs, then the logits, overflow.
    tch::no_grad(|| {
        let mut vars = m.vs.variables();
        let _ = vars
            .get_mut("transformer__ln_f__weight")
            .unwrap()
            .fill_(3e38);
    });
    let e = gradgym_agents::rlhf::reward::sample(&m, &prompts, 4, &mut r, None).unwrap_err();
    assert!(
        e.to_string().contains(
            "the model's next-token distribution is not finite (sequence 1 drawn, token 1"
        ),
        "{e}"
    );
}
