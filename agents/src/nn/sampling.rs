//! Sampling the next token from a language model's logits: temperature, top-k and top-p
//! (nucleus), drawn from the caller's stream, and generation with the KV cache
//! ([`crate::nn::gpt::KvCache`]).

use gradgym_envs::rng::{self, Stream, uniform01};
use tch::{Device, Kind, Tensor};

use crate::nn::gpt::{Gpt, KvCache};
use crate::nn::gpt_cpu::{CHUNK_ROWS, CpuGpt};

/// How the next token is drawn (the `[sample]` table of an RLHF config).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    let mut out = Vec::with_capacity(logits.len());
    probabilities_into(logits, config, &mut out, &mut Vec::new());
    out
}

/// [`sampling_probabilities`] into `out`, `order` a scratch buffer (both reused across calls,
/// so that generation allocates nothing per token), with AVX2 where the CPU has it: the same
/// additions, multiplications and divisions in the same order either way (no fused
/// multiply-add), so the same numbers on every x86-64 machine, several at a time.
fn probabilities_into(
    logits: &[f32],
    config: &SamplingConfig,
    out: &mut Vec<f64>,
    order: &mut Vec<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, just checked.
        unsafe { probabilities_avx2(logits, config, out, order) };
        return;
    }
    probabilities(logits, config, out, order);
}

/// Scratch space of [`sample_row`], reused across rows and steps.
#[derive(Default)]
struct RowScratch {
    probs: Vec<f64>,
    order: Vec<usize>,
    exps: Vec<f64>,
}

/// The token the uniform `u` picks from [`sampling_probabilities`] of `logits`, and its
/// log-probability at temperature 1 (from the same exponentials when the temperature is 1).
fn sample_row(logits: &[f32], config: &SamplingConfig, u: f64, s: &mut RowScratch) -> (u32, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, just checked.
        return unsafe { sample_row_avx2(logits, config, u, s) };
    }
    sample_row_generic(logits, config, u, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sample_row_avx2(
    logits: &[f32],
    config: &SamplingConfig,
    u: f64,
    s: &mut RowScratch,
) -> (u32, f64) {
    sample_row_generic(logits, config, u, s)
}

#[inline(always)]
fn sample_row_generic(
    logits: &[f32],
    config: &SamplingConfig,
    u: f64,
    s: &mut RowScratch,
) -> (u32, f64) {
    let (max, total) = probabilities(logits, config, &mut s.probs, &mut s.order);
    let token = inverse_cdf(&s.probs, u);
    let (max, total) = if config.temperature == 1.0 {
        (max, total)
    } else {
        s.exps.clear();
        s.exps
            .extend(logits.iter().map(|&l| exp_nonpositive(l as f64 - max)));
        (max, sum_lanes(&s.exps))
    };
    (token, (logits[token as usize] as f64 - max) - total.ln())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn probabilities_avx2(
    logits: &[f32],
    config: &SamplingConfig,
    out: &mut Vec<f64>,
    order: &mut Vec<usize>,
) {
    probabilities(logits, config, out, order);
}

/// The body of [`probabilities_into`]. Sums run over eight interleaved partial sums (a fixed
/// order, so that they vectorise); the exponential is [`exp_nonpositive`]. Without a cut
/// (top-k off, top-p 1) the sort is skipped: it could not change which tokens are kept.
/// Returns the maximum logit and Σ exp((l − max)/T) before any cut: at temperature 1 the
/// log-softmax of token j is `(l_j − max) − ln Σ`.
#[inline(always)]
fn probabilities(
    logits: &[f32],
    config: &SamplingConfig,
    out: &mut Vec<f64>,
    order: &mut Vec<usize>,
) -> (f64, f64) {
    let t = config.temperature;
    let max = max_lanes(logits) as f64;
    out.clear();
    out.resize(logits.len(), 0.0);
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = exp_nonpositive((l as f64 - max) / t);
    }
    let total = sum_lanes(out);
    let before_cut = (max, total);
    out.iter_mut().for_each(|x| *x /= total);
    let n = out.len();
    let cut_k = config.top_k > 0 && config.top_k < n;
    if cut_k || config.top_p < 1.0 {
        // Most likely first; ties by id, so the cut is deterministic.
        let p = &*out;
        order.clear();
        order.extend(0..n);
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let mut keep = if config.top_k > 0 {
            config.top_k.min(n)
        } else {
            n
        };
        if config.top_p < 1.0 {
            // The nucleus of the distribution top-k left, renormalised (the order Hugging
            // Face's logits processors apply them in).
            let kept: f64 = order[..keep].iter().map(|&j| p[j]).sum();
            let mut mass = 0.0;
            for (i, &j) in order.iter().enumerate().take(keep) {
                mass += p[j];
                if mass >= config.top_p * kept {
                    keep = i + 1;
                    break;
                }
            }
        }
        for &j in &order[keep..] {
            out[j] = 0.0;
        }
    }
    let total = sum_lanes(out);
    out.iter_mut().for_each(|x| *x /= total);
    before_cut
}

/// Whether every element of `x` is finite: 0·x is NaN for ±∞ and NaN alone, summed over
/// eight interleaved lanes so that the loop vectorises (a vocabulary's row per sampled token).
#[inline(always)]
fn all_finite(x: &[f32]) -> bool {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += 0.0 * v;
        }
    }
    acc.iter().all(|&a| a == 0.0) && rest.iter().all(|v| v.is_finite())
}

/// The largest of `x` (−∞ if empty), over eight interleaved running maxima.
#[inline(always)]
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    rest.iter()
        .fold(m.into_iter().fold(f32::NEG_INFINITY, f32::max), |a, &v| {
            a.max(v)
        })
}

/// Σ x: element j goes to partial sum j mod 8, the partial sums are added pairwise, then the
/// elements after the last multiple of 8, in order.
#[inline(always)]
fn sum_lanes(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// e^x for x ≤ 0 (a logit less the maximum), within one ulp of `f64::exp`: fdlibm's reduction
/// x = k ln 2 + r, |r| ≤ ln 2 / 2, and its degree-5 rational approximation of e^r, without
/// branches or tables so that a loop over the vocabulary vectorises. Below −708.39 (where
/// e^x < 2.3e-308) it gives 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const P1: f64 = 1.666_666_666_666_660_2e-1;
    const P2: f64 = -2.777_777_777_701_559_3e-3;
    const P3: f64 = 6.613_756_321_437_934e-5;
    const P4: f64 = -1.653_390_220_546_525_2e-6;
    const P5: f64 = 4.138_136_797_057_238_5e-8;
    // 1.5 · 2^52: adding it rounds to an integer, which lands in the low bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let flush = x < -708.39;
    let x = if flush { 0.0 } else { x };
    let kf = x * INV_LN2 + SHIFTER;
    let k = (kf.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let kf = kf - SHIFTER;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let t = r * r;
    let c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    // 2^k, k ≥ −1022 here.
    let scale = f64::from_bits(((k + 1023) as u64) << 52);
    if flush { 0.0 } else { y * scale }
}

/// The token the uniform `u` in [0, 1) picks from `p` (the inverse of its CDF, in token
/// order, over the tokens of positive probability; the last of them if rounding leaves the
/// total below `u`).
fn inverse_cdf(p: &[f64], u: f64) -> u32 {
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

/// A token drawn from [`sampling_probabilities`] with one uniform from `rng`.
pub fn sample_token(logits: &[f32], config: &SamplingConfig, rng: &mut Stream) -> u32 {
    let p = sampling_probabilities(logits, config);
    inverse_cdf(&p, uniform01(rng))
}

/// What [`generate`] returns for each row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// The response tokens (ending with `eos` if it was drawn).
    pub tokens: Vec<u32>,
    /// log π(token | context) of each response token under the model (temperature 1); NaN
    /// where the model's logits at that step were not all finite.
    pub logprobs: Vec<f64>,
}

/// Continues every prompt (`prompts`, equal lengths) by up to `max_new` tokens, with the KV
/// cache: the prompts run once, then one position per step. A row stops at `eos`.
///
/// Row i draws its tokens from its own stream, `stream(seed, "generate/row", i)`, `seed` one
/// draw from `rng`: a row's response depends on its prompt and its index, not on the other
/// rows or on how they are split between threads. On the CPU the forward pass is
/// [`CpuGpt`]'s (rows in chunks over libtorch's thread count); elsewhere libtorch's.
pub fn generate(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    rng: &mut Stream,
) -> Vec<Generated> {
    let threads = tch::get_num_threads().max(1) as usize;
    generate_with_threads(model, prompts, max_new, eos, config, rng, threads)
}

/// [`generate`] on `threads` threads (on the CPU; the same results for any number).
pub fn generate_with_threads(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    rng: &mut Stream,
    threads: usize,
) -> Vec<Generated> {
    let Some(seed) = start(prompts, rng) else {
        return Vec::new();
    };
    if model.vs.device() != Device::Cpu {
        return torch_rows(model, prompts, max_new, eos, config, seed);
    }
    let cpu = CpuGpt::of(model);
    let threads = threads.clamp(1, prompts.len());
    let rows = prompts.len().div_ceil(threads).clamp(1, CHUNK_ROWS);
    let chunks: Vec<(usize, &[Vec<u32>])> = prompts
        .chunks(rows)
        .enumerate()
        .map(|(k, c)| (k * rows, c))
        .collect();
    let run =
        |first: usize, c: &[Vec<u32>]| generate_chunk(&cpu, c, first, max_new, eos, config, seed);
    if threads == 1 || chunks.len() == 1 {
        return chunks.iter().flat_map(|&(f, c)| run(f, c)).collect();
    }
    // Thread j runs chunks j, j + threads, …; the results go back in row order.
    let mut parts: Vec<Vec<Generated>> = vec![Vec::new(); chunks.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|j| {
                let (chunks, run) = (&chunks, &run);
                scope.spawn(move || {
                    chunks
                        .iter()
                        .enumerate()
                        .skip(j)
                        .step_by(threads)
                        .map(|(k, &(f, c))| (k, run(f, c)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (k, g) in h.join().expect("a generation thread panicked") {
                parts[k] = g;
            }
        }
    });
    parts.into_iter().flatten().collect()
}

/// The stream row `row` of a [`generate`] call samples from.
fn row_stream(seed: u64, row: usize) -> Stream {
    rng::stream(seed, "generate/row", row as u64)
}

/// The sampling loop of both forward passes, on rows `first..first + prompts.len()`:
/// `step(input, t, logits)` runs `input` (`rows × t` tokens, row-major) after the positions
/// already run and writes each row's next-token logits into `logits` (`rows × vocab`). Rows
/// that have drawn `eos` are fed `eos` and draw nothing more.
#[allow(clippy::too_many_arguments)]
fn sample_rows(
    prompts: &[Vec<u32>],
    first: usize,
    vocab: usize,
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    seed: u64,
    mut step: impl FnMut(&[u32], usize, &mut [f32]),
) -> Vec<Generated> {
    let b = prompts.len();
    let mut rngs: Vec<Stream> = (0..b).map(|i| row_stream(seed, first + i)).collect();
    let mut out = vec![Generated::default(); b];
    let mut done = vec![false; b];
    let mut logits = vec![0f32; b * vocab];
    let mut scratch = RowScratch::default();
    let mut input: Vec<u32> = prompts.concat();
    let mut t = prompts[0].len();
    for _ in 0..max_new {
        step(&input, t, &mut logits);
        input.resize(b, eos);
        for i in 0..b {
            if done[i] {
                input[i] = eos;
                continue;
            }
            let row = &logits[i * vocab..(i + 1) * vocab];
            let (tok, logp) = sample_row(row, config, uniform01(&mut rngs[i]), &mut scratch);
            let logp = if all_finite(row) { logp } else { f64::NAN };
            out[i].tokens.push(tok);
            out[i].logprobs.push(logp);
            input[i] = tok;
            done[i] = tok == eos;
        }
        if done.iter().all(|d| *d) {
            break;
        }
        t = 1;
    }
    out
}

/// [`generate`] on rows `first..first + prompts.len()` with [`CpuGpt`].
fn generate_chunk(
    cpu: &CpuGpt,
    prompts: &[Vec<u32>],
    first: usize,
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    seed: u64,
) -> Vec<Generated> {
    let positions = (prompts[0].len() + max_new).min(cpu.context());
    let mut state = cpu.state(prompts.len(), positions);
    sample_rows(
        prompts,
        first,
        cpu.vocab(),
        max_new,
        eos,
        config,
        seed,
        |input, t, logits| cpu.step(input, t, &mut state, logits),
    )
}

/// [`generate`] with libtorch's forward pass on any device, which is what it runs on a GPU
/// (the same streams, so the same tokens up to the float rounding of the logits).
/// `gradgym rlhf bench` times it beside [`generate`] on the CPU.
pub fn generate_libtorch(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    rng: &mut Stream,
) -> Vec<Generated> {
    let Some(seed) = start(prompts, rng) else {
        return Vec::new();
    };
    torch_rows(model, prompts, max_new, eos, config, seed)
}

/// What every generation does first, so that both forward passes draw the same rows' streams:
/// the seed of those streams (one draw from `rng`, even for no prompts), or `None` for no
/// prompts. Generation needs prompts of one length.
fn start(prompts: &[Vec<u32>], rng: &mut Stream) -> Option<u64> {
    let seed = rng::next_seed(rng);
    let p = prompts.first()?.len();
    assert!(
        prompts.iter().all(|q| q.len() == p),
        "generate: prompts of equal length"
    );
    Some(seed)
}

/// [`generate_libtorch`] once the seed is drawn: libtorch's forward pass with its KV cache,
/// the last position's logits copied to the host once per step.
fn torch_rows(
    model: &Gpt,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
    config: &SamplingConfig,
    seed: u64,
) -> Vec<Generated> {
    let device = model.vs.device();
    let b = prompts.len() as i64;
    let mut cache = KvCache::default();
    let mut ids = Vec::new();
    tch::no_grad(|| {
        sample_rows(
            prompts,
            0,
            model.config.vocab,
            max_new,
            eos,
            config,
            seed,
            |input, t, logits| {
                ids.clear();
                ids.extend(input.iter().map(|&x| x as i64));
                let x = Tensor::from_slice(&ids)
                    .view([b, t as i64])
                    .to_device(device);
                let hidden = model.hidden_cached(&x, &mut cache);
                model
                    .logits(&hidden.select(1, hidden.size()[1] - 1))
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
                    .contiguous()
                    .copy_data(logits, logits.len());
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_whose_logits_are_not_all_finite_gives_nan_log_probabilities() {
        let prompts = vec![vec![0u32, 1], vec![1, 0]];
        let config = SamplingConfig::default();
        // Row 0's logits hold −∞ at its last step only (its draws stay finite: the token is
        // never drawn); row 1's are finite throughout.
        let mut steps = 0;
        let out = sample_rows(&prompts, 0, 4, 3, 99, &config, 7, |_, _, logits| {
            steps += 1;
            logits.copy_from_slice(&[0.5, 1.0, -0.5, 0.0, 0.5, 1.0, -0.5, 0.0]);
            if steps == 3 {
                logits[3] = f32::NEG_INFINITY;
            }
        });
        assert!(out[0].logprobs[..2].iter().all(|l| l.is_finite()));
        assert!(out[0].logprobs[2].is_nan(), "{:?}", out[0].logprobs);
        assert!(out[1].logprobs.iter().all(|l| l.is_finite()));
    }
}
