//! Sampling the next token from a language model's logits: temperature, top-k and top-p
//! (nucleus), drawn from the caller's stream, and generation with the KV cache
//! ([`crate::nn::gpt::KvCache`]).

use gradgym_envs::rng::{Stream, uniform01};
use tch::{Kind, Tensor};

use crate::nn::gpt::{Gpt, KvCache};

/// How the next token is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Logits are divided by this before the softmax (> 0).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: all).
    pub top_p: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SamplingConfig {
    /// The settings' problems, naming the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err((
                "temperature",
                format!("must be a positive number, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

/// The distribution sampling draws from: softmax(logits / T), cut to the top k and to the
/// nucleus of mass top_p, renormalised.
pub fn sampling_probabilities(logits: &[f32], config: &SamplingConfig) -> Vec<f64> {
    let t = config.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    // Most likely first; ties by id, so the cut is deterministic.
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let mut keep = if config.top_k > 0 {
        config.top_k.min(p.len())
    } else {
        p.len()
    };
    if config.top_p < 1.0 {
        let mut mass = 0.0;
        for (i, &j) in order.iter().enumerate().take(keep) {
            mass += p[j];
            if mass >= config.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let mut out = vec![0.0; p.len()];
    for &j in &order[..keep] {
        out[j] = p[j];
    }
    let total: f64 = out.iter().sum();
    out.iter_mut().for_each(|x| *x /= total);
    out
}

/// A token drawn from [`sampling_probabilities`] with one uniform from `rng`.
pub fn sample_token(logits: &[f32], config: &SamplingConfig, rng: &mut Stream) -> u32 {
    let p = sampling_probabilities(logits, config);
    let u = uniform01(rng);
    let mut cumulative = 0.0;
    let mut last = 0;
    for (j, &q) in p.iter().enumerate() {
        if q > 0.0 {
            cumulative += q;
            last = j;
            if u < cumulative {
                return j as u32;
            }
        }
    }
    last as u32
}

/// What [`generate`] returns for each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The response tokens (ending with `eos` if it was drawn).
    pub tokens: Vec<u32>,
    /// log π(token | context) of each response token under the model (temperature 1).
    pub logprobs: Vec<f64>,
}

/// Continues every prompt (`prompts`, equal lengths) by up to `max_new` tokens, with the KV
/// cache: the prompts run once, then one position per step. A row stops at `eos`.
pub fn generate(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    rng: &mut Stream,
) -> Vec<Generated> {
    let device = model.vs.device();
    let b = prompts.len();
    let flat: Vec<i64> = prompts.iter().flatten().map(|&t| t as i64).collect();
    let p = prompts[0].len() as i64;
    let mut cache = KvCache::default();
    let mut out = vec![
        Generated {
            tokens: Vec::new(),
            logprobs: Vec::new(),
        };
        b
    ];
    let mut done = vec![false; b];
    tch::no_grad(|| {
        let mut input = Tensor::from_slice(&flat)
            .view([b as i64, p])
            .to_device(device);
        for _ in 0..max_new {
            let logits = model.forward_cached(&input, &mut cache);
            let last = logits
                .select(1, logits.size()[1] - 1)
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu);
            let logp = last.log_softmax(-1, Kind::Float);
            let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&last).expect("[B, V] floats");
            let logp: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logp).expect("[B, V] floats");
            let mut next = vec![0i64; b];
            for i in 0..b {
                if done[i] {
                    next[i] = eos as i64;
                    continue;
                }
                let t = sample_token(&rows[i], config, rng);
                out[i].tokens.push(t);
                out[i].logprobs.push(logp[i][t as usize] as f64);
                next[i] = t as i64;
                done[i] = t == eos;
            }
            if done.iter().all(|d| *d) {
                break;
            }
            input = Tensor::from_slice(&next)
                .view([b as i64, 1])
                .to_device(device);
        }
    });
    out
}
