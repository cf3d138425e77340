//! The reward model and its data: comparisons of the policy's samples labelled by the synthetic
//! human (the gold judge behind a Boltzmann-rational, tie-making, ε-noisy oracle), the fit of
//! the SFT network plus a scalar head to them, the normalisation of its scores, and how well it
//! orders held-out pairs.
//!
//! - **Initialisation**: the SFT weights, plus a head N(0, 1/(width + 1)) read at the last real
//!   response token ([`Gpt::with_scalar_head`]).
//! - **Loss**: `preference_coef · L_pref + lm_coef · L_LM` (Askell et al. 2021), L_pref the
//!   K-way cross-entropy against the label distribution μ (pairwise with ties at K = 2,
//!   [`gradgym_algorithms::reward_losses`]), L_LM the next-token loss of the chosen response
//!   through the same body's tied unembedding.
//! - **Normalisation**: a shift and gain folded into the head, so that the SFT policy's samples
//!   score mean 0 and standard deviation 1 (Ziegler et al. 2019; Stiennon et al. 2020).

use anyhow::Result;
use gradgym_algorithms::reward_losses::{kway_loss, pairwise_loss, top_share};
use gradgym_envs::preference::{OracleConfig, SyntheticHuman};
use gradgym_envs::rng::Stream;
use gradgym_envs::text::{EOS, GoldJudge, Grammar, PROMPT_LEN, Request};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use super::data::Comparison;
use super::lm::learning_rate;
use super::sequences::{Sequences, scores, vec_f64};
use crate::config::rlhf::{LabelsConfig, RewardModelConfig};
use crate::error::check_interrupt;
use crate::nn::gpt::Gpt;
use crate::nn::sampling::{Generated, SamplingConfig, generate};
use std::sync::atomic::AtomicBool;

/// Rows per forward pass when generating or scoring many sequences.
pub const CHUNK: usize = 256;

/// Samples a response to each prompt from `model` itself (temperature 1, no cut), in chunks
/// of [`CHUNK`]; `interrupt` (a signal's flag) is looked at between chunks.
pub fn sample(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_response: usize,
    rng: &mut Stream,
    interrupt: Option<&AtomicBool>,
) -> Result<Vec<Generated>> {
    sample_with(
        model,
        prompts,
        max_response,
        &SamplingConfig::default(),
        rng,
        interrupt,
    )
}

/// [`sample`] with a temperature, top-k and top-p.
pub fn sample_with(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_response: usize,
    sampling: &SamplingConfig,
    rng: &mut Stream,
    interrupt: Option<&AtomicBool>,
) -> Result<Vec<Generated>> {
    let mut generated: Vec<Generated> = Vec::with_capacity(prompts.len());
    for c in prompts.chunks(CHUNK) {
        // Best-of-n and labelling draw tens of thousands of sequences: a signal is answered
        // within a chunk, not at the end.
        check_interrupt(interrupt, || {
            format!(
                "while sampling ({} of {} sequences drawn)",
                generated.len(),
                prompts.len()
            )
        })?;
        generated.extend(generate(model, c, max_response, EOS, sampling, rng));
    }
    // Finite weights can still overflow in the forward pass (a huge bias); the sampler would
    // then draw from a distribution of NaNs, which picks the first token every time.
    for (i, g) in generated.iter().enumerate() {
        if let Some(j) = g.logprobs.iter().position(|l| !l.is_finite()) {
            anyhow::bail!(
                "the model's next-token distribution is not finite (sequence {} drawn, token {}: \
                 log-probability {}): its weights, though finite, overflow in the forward pass",
                i + 1,
                j + 1,
                g.logprobs[j]
            );
        }
    }
    Ok(generated)
}

/// The reward model's (or value model's) score of every (prompt, response), in chunks.
pub fn score_all(reward_model: &Gpt, prompts: &[&[u32]], responses: &[&[u32]]) -> Vec<f64> {
    let device = reward_model.vs.device();
    tch::no_grad(|| {
        prompts
            .chunks(CHUNK)
            .zip(responses.chunks(CHUNK))
            .flat_map(|(p, r)| vec_f64(&scores(reward_model, &Sequences::pack(p, r, device))))
            .collect()
    })
}

/// `n` random prompts.
pub fn prompts(grammar: &Grammar, n: usize, rng: &mut Stream) -> (Vec<Request>, Vec<Vec<u32>>) {
    let requests: Vec<Request> = (0..n).map(|_| grammar.sample_request(rng)).collect();
    let prompts = requests.iter().map(|&r| grammar.prompt(r)).collect();
    (requests, prompts)
}

/// The synthetic human of the `[labels]` table, drawing from `stream`.
pub fn human(config: &LabelsConfig, stream: Stream) -> Result<SyntheticHuman> {
    Ok(SyntheticHuman::new(
        OracleConfig {
            temperature: config.temperature,
            margin: config.margin,
            epsilon: config.epsilon,
            ..OracleConfig::default()
        },
        stream,
    )?)
}

/// `count` comparisons of `num_responses` samples of `policy` for fresh prompts, labelled by
/// `human` from the gold judge's scores.
#[allow(clippy::too_many_arguments)]
pub fn label(
    policy: &Gpt,
    judge: &GoldJudge,
    human: &mut SyntheticHuman,
    config: &LabelsConfig,
    count: usize,
    max_response: usize,
    rng: &mut Stream,
    interrupt: Option<&AtomicBool>,
) -> Result<Vec<Comparison>> {
    let k = config.num_responses;
    let (_, prompts) = prompts(&judge.grammar, count, rng);
    let repeated: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), k))
        .collect();
    let sampling = SamplingConfig {
        temperature: config.sample_temperature,
        ..SamplingConfig::default()
    };
    let samples = sample_with(policy, &repeated, max_response, &sampling, rng, interrupt)
        .map_err(|e| e.context("labels: sampling the responses to compare"))?;
    let mut out = Vec::with_capacity(count);
    for (prompt, group) in prompts.into_iter().zip(samples.chunks(k)) {
        let responses: Vec<Vec<u32>> = group.iter().map(|g| g.tokens.clone()).collect();
        let refs: Vec<&[u32]> = responses.iter().map(|r| r.as_slice()).collect();
        let answer = judge.compare(&prompt, &refs, human)?;
        out.push(Comparison {
            prompt,
            responses,
            mu: answer.mu,
        });
    }
    Ok(out)
}

/// What a fit measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// Mean preference loss over the last epoch.
    pub train_loss: f64,
    /// Mean LM loss of the last epoch (NaN when `lm_coef` is 0).
    pub lm_loss: f64,
    pub steps: usize,
}

fn batch_scores(rm: &Gpt, batch: &[&Comparison]) -> (Tensor, Tensor, Sequences) {
    let device = rm.vs.device();
    let k = batch[0].responses.len();
    let prompts: Vec<&[u32]> = batch
        .iter()
        .flat_map(|c| std::iter::repeat_n(c.prompt.as_slice(), k))
        .collect();
    let responses: Vec<&[u32]> = batch
        .iter()
        .flat_map(|c| c.responses.iter().map(|r| r.as_slice()))
        .collect();
    let seqs = Sequences::pack(&prompts, &responses, device);
    let s = scores(rm, &seqs).view([batch.len() as i64, k as i64]);
    let mu: Vec<f32> = batch
        .iter()
        .flat_map(|c| c.mu.iter().map(|&m| m as f32))
        .collect();
    let mu = Tensor::from_slice(&mu)
        .view([batch.len() as i64, k as i64])
        .to_device(device);
    (s, mu, seqs)
}

/// The preference loss of a batch: pairwise (Stiennon's form, ties as μ = ½) at K = 2, the
/// K-way cross-entropy otherwise.
pub fn preference_loss(rm: &Gpt, batch: &[&Comparison]) -> Tensor {
    let (s, mu, _) = batch_scores(rm, batch);
    if s.size()[1] == 2 {
        pairwise_loss(&s.select(1, 0), &s.select(1, 1), &mu.select(1, 0))
    } else {
        kway_loss(&s, &mu)
    }
}

/// Askell et al.'s LM term: the next-token loss of each comparison's chosen response through
/// the reward model's own body. A comparison whose label is not one response (a tie, μ =
/// (½, ½), or a soft μ) has no single chosen one: each response it prefers with weight μⱼ > 0
/// enters with its tokens weighted μⱼ, the expected loss of the response a labeller drawing
/// from μ would choose. A hard label is its one response, as before.
pub fn chosen_lm_loss(rm: &Gpt, batch: &[&Comparison]) -> Tensor {
    let device = rm.vs.device();
    let (mut prompts, mut chosen, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    for c in batch {
        for (r, &m) in c.responses.iter().zip(&c.mu) {
            if m > 0.0 {
                prompts.push(c.prompt.as_slice());
                chosen.push(r.as_slice());
                weights.push(m as f32);
            }
        }
    }
    let seqs = Sequences::pack(&prompts, &chosen, device);
    let l = seqs.tokens.size()[1];
    let rows = chosen.len() as i64;
    let weight = Tensor::from_slice(&weights)
        .view([rows, 1])
        .to_device(device);
    let mask = Tensor::cat(
        &[
            Tensor::zeros([rows, PROMPT_LEN as i64], (Kind::Float, device)),
            seqs.mask.shallow_clone() * weight,
        ],
        1,
    );
    debug_assert_eq!(mask.size()[1], l);
    rm.masked_lm_loss(&seqs.tokens, &mask)
}

/// Fits `rm` (already initialised) to `train`, comparisons grouped by their K. The order of
/// batches comes from `rng`; `report(step, loss)` is called after every step, and an error it
/// returns stops the fit.
/// The gradient steps [`fit`] takes on `train`: per epoch, each K's comparisons in batches.
pub fn fit_steps(train: &[Comparison], config: &RewardModelConfig) -> usize {
    let mut by_k: std::collections::BTreeMap<usize, usize> = Default::default();
    for c in train {
        *by_k.entry(c.responses.len()).or_default() += 1;
    }
    let per_epoch: usize = by_k.values().map(|n| n.div_ceil(config.batch_size)).sum();
    per_epoch * config.epochs
}

pub fn fit(
    rm: &mut Gpt,
    train: &[Comparison],
    config: &RewardModelConfig,
    rng: &mut Stream,
    mut report: impl FnMut(usize, f64) -> Result<()>,
) -> Result<FitReport> {
    anyhow::ensure!(
        !train.is_empty(),
        "the reward model has no comparisons to fit"
    );
    let mut opt = nn::adamw(0.9, 0.999, config.weight_decay).build(&rm.vs, config.learning_rate)?;
    // Batches hold comparisons of one K.
    let mut by_k: std::collections::BTreeMap<usize, Vec<&Comparison>> = Default::default();
    for c in train {
        by_k.entry(c.responses.len()).or_default().push(c);
    }
    let total = fit_steps(train, config);
    let mut step = 0;
    let (mut last_pref, mut last_lm) = (f64::NAN, f64::NAN);
    for _epoch in 0..config.epochs {
        let mut batches: Vec<Vec<&Comparison>> = Vec::new();
        for group in by_k.values() {
            let mut order: Vec<&Comparison> = group.clone();
            shuffle(&mut order, rng);
            batches.extend(order.chunks(config.batch_size).map(|c| c.to_vec()));
        }
        shuffle(&mut batches, rng);
        let (mut sum_pref, mut sum_lm) = (0.0, 0.0);
        for batch in &batches {
            opt.set_lr(learning_rate(config.learning_rate, step, total));
            let pref = preference_loss(rm, batch);
            let pv = pref.double_value(&[]);
            let loss = if config.lm_coef > 0.0 {
                let lm = chosen_lm_loss(rm, batch);
                sum_lm += lm.double_value(&[]);
                &pref * config.preference_coef + lm * config.lm_coef
            } else {
                &pref * config.preference_coef
            };
            let lv = loss.double_value(&[]);
            anyhow::ensure!(
                lv.is_finite(),
                "reward model: non-finite loss ({lv}) at step {} (counting from 1, as the \
                 progress lines do); lower reward_model.learning_rate",
                step + 1
            );
            opt.backward_step_clip_norm(&loss, 1.0);
            sum_pref += pv;
            report(step, pv)?;
            step += 1;
        }
        last_pref = sum_pref / batches.len() as f64;
        last_lm = if config.lm_coef > 0.0 {
            sum_lm / batches.len() as f64
        } else {
            f64::NAN
        };
    }
    Ok(FitReport {
        train_loss: last_pref,
        lm_loss: last_lm,
        steps: step,
    })
}

/// Fisher–Yates with the run's stream.
pub fn shuffle<T>(items: &mut [T], rng: &mut Stream) {
    for i in (1..items.len()).rev() {
        let j = ((gradgym_envs::rng::uniform01(rng) * (i + 1) as f64) as usize).min(i);
        items.swap(i, j);
    }
}

/// The normalisation measured: the raw scores' mean and standard deviation on SFT samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalisation {
    pub mean: f64,
    pub std: f64,
}

/// Folds `(score − mean)/std` over `samples` SFT responses into `rm`'s head.
pub fn normalise(
    rm: &mut Gpt,
    sft: &Gpt,
    grammar: &Grammar,
    samples: usize,
    max_response: usize,
    rng: &mut Stream,
    interrupt: Option<&AtomicBool>,
) -> Result<Normalisation> {
    let (_, prompts) = prompts(grammar, samples, rng);
    let generated = sample(sft, &prompts, max_response, rng, interrupt)
        .map_err(|e| e.context("normalising the reward model on the SFT model's samples"))?;
    let p: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
    let s = score_all(rm, &p, &r);
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (s.len() - 1) as f64;
    let std = var.sqrt().max(1e-8);
    rm.rescale_head(1.0 / std, -mean / std);
    Ok(Normalisation { mean, std })
}

/// How the reward model orders held-out comparisons. A tie in the model's scores earns the
/// share of a coin flip: 1/k of a comparison whose best response shares the top score with k − 1
/// others, ½ of a pair the model scores equal (before, a pair of equal scores counted as ordered
/// right whenever its second response was the better, and a comparison's tie went to its last
/// response).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// Comparisons whose label has a single best response that the model scores highest.
    pub label: f64,
    /// Pairs (every pair within each comparison) whose gold scores differ by more than
    /// `margin`, ordered as the noise-free gold judge orders them.
    pub gold: f64,
    /// How many such pairs.
    pub gold_pairs: usize,
}

/// The reward model's agreement with the labels and with the gold judge on `held_out`.
pub fn accuracy(
    rm: &Gpt,
    held_out: &[Comparison],
    judge: &GoldJudge,
    margin: f64,
) -> Result<Accuracy> {
    let (mut hit, mut n) = (0f64, 0usize);
    let (mut ghit, mut gn) = (0f64, 0usize);
    for c in held_out {
        let p: Vec<&[u32]> = c.responses.iter().map(|_| c.prompt.as_slice()).collect();
        let r: Vec<&[u32]> = c.responses.iter().map(|r| r.as_slice()).collect();
        let s = score_all(rm, &p, &r);
        if !c.is_tie() {
            n += 1;
            hit += top_share(&s, argmax(&c.mu));
        }
        let gold: Vec<f64> = r
            .iter()
            .map(|resp| judge.score(&c.prompt, resp).map(|x| x.gold))
            .collect::<Result<_, _>>()?;
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                if (gold[i] - gold[j]).abs() > margin {
                    gn += 1;
                    // The pair's better response by gold, and its score against the other's.
                    let (better, worse) = if gold[i] > gold[j] { (i, j) } else { (j, i) };
                    ghit += match s[better].partial_cmp(&s[worse]) {
                        Some(std::cmp::Ordering::Greater) => 1.0,
                        Some(std::cmp::Ordering::Equal) => 0.5,
                        _ => 0.0,
                    };
                }
            }
        }
    }
    let frac = |a: f64, b: usize| {
        if b == 0 { f64::NAN } else { a / b as f64 }
    };
    Ok(Accuracy {
        label: frac(hit, n),
        gold: frac(ghit, gn),
        gold_pairs: gn,
    })
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}
