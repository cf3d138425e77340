//! The policy at rollout time, in plain Rust.
//!
//! A rollout calls the policy once per env step on a handful of observations; through libtorch
//! each call costs tens of µs of dispatch for microseconds of arithmetic (see ARCHITECTURE.md,
//! "libtorch, measured here"). So the rollout uses a CPU copy of the weights, taken after every
//! update ([`crate::backend::Backend::snapshot`]), and samples actions in Rust from the run's
//! own stream; each layer runs over all rows of a call at once. The update step
//! recomputes log-probabilities in its backend, so the rollout copy only has to agree to float
//! rounding (a test checks 1e-5 against libtorch's forward).

use gradgym_envs::rng::{self, Stream};

use crate::backend::mlp::tanh_in_place;
use crate::network::Head;

/// A dense layer with its weight stored transposed, `w_t[k * outputs + j] = W[j, k]`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub w_t: Vec<f32>,
    pub b: Vec<f32>,
}

/// Reusable buffers for [`FastPolicy::forward`].
#[derive(Default, Debug)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    actor_out: Vec<f32>,
    values: Vec<f32>,
}

#[inline(always)]
fn dense_rows_generic(layer: &Dense, x: &[f32], target: &mut [f32]) {
    for (r, row) in target.chunks_exact_mut(layer.outputs).enumerate() {
        for (k, &xk) in x[r * layer.inputs..(r + 1) * layer.inputs]
            .iter()
            .enumerate()
        {
            let w = &layer.w_t[k * layer.outputs..(k + 1) * layer.outputs];
            for (o, wv) in row.iter_mut().zip(w) {
                *o += wv * xk;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dense_rows_avx2(layer: &Dense, x: &[f32], target: &mut [f32]) {
    dense_rows_generic(layer, x, target)
}

fn dense_rows(layer: &Dense, x: &[f32], target: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { dense_rows_avx2(layer, x, target) };
    }
    dense_rows_generic(layer, x, target)
}

/// The MLP over `n` rows of `x`, into `out [n, outputs]`. At 4 rows, `sgemm`'s packing of the
/// weights costs more than the product, so layers are row-wise axpy loops.
fn mlp(
    layers: &[Dense],
    x: &[f32],
    n: usize,
    scratch_a: &mut Vec<f32>,
    scratch_b: &mut Vec<f32>,
    out: &mut Vec<f32>,
) {
    let last = layers.len() - 1;
    scratch_a.clear();
    scratch_a.extend_from_slice(&x[..n * layers[0].inputs]);
    for (i, layer) in layers.iter().enumerate() {
        let target = if i == last {
            &mut *out
        } else {
            &mut *scratch_b
        };
        target.clear();
        for _ in 0..n {
            target.extend_from_slice(&layer.b);
        }
        dense_rows(layer, scratch_a, target);
        if i != last {
            tanh_in_place(scratch_b);
            std::mem::swap(scratch_a, scratch_b);
        }
    }
}

/// The actor and critic weights, on the CPU.
#[derive(Clone, Debug)]
pub struct FastPolicy {
    pub actor: Vec<Dense>,
    pub critic: Vec<Dense>,
    pub log_std: Option<Vec<f32>>,
    pub head: Head,
}

impl FastPolicy {
    pub fn obs_dim(&self) -> usize {
        self.actor[0].inputs
    }

    /// Actor outputs `[n, outputs]` (logits or means) and values `[n]` for `n` observations.
    pub fn forward<'s>(
        &self,
        obs: &[f32],
        n: usize,
        scratch: &'s mut Scratch,
    ) -> (&'s [f32], &'s [f32]) {
        let Scratch {
            a,
            b,
            actor_out,
            values,
        } = scratch;
        mlp(&self.actor, obs, n, a, b, actor_out);
        mlp(&self.critic, obs, n, a, b, values);
        (&scratch.actor_out, &scratch.values)
    }

    /// Values only, `[n]`.
    pub fn values<'s>(&self, obs: &[f32], n: usize, scratch: &'s mut Scratch) -> &'s [f32] {
        let Scratch { a, b, values, .. } = scratch;
        mlp(&self.critic, obs, n, a, b, values);
        &scratch.values
    }
}

/// log-softmax of one row of logits, in f64.
fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = x as f64 - lse;
    }
}

/// Samples one categorical action from `logits` (inverse CDF with one uniform from `rng`), or
/// takes the most likely one when `deterministic`. Returns `(action, log π(action))`.
pub fn sample_categorical(
    logits: &[f32],
    rng: &mut Stream,
    deterministic: bool,
    logp: &mut Vec<f64>,
) -> (i64, f32) {
    logp.resize(logits.len(), 0.0);
    log_softmax(logits, logp);
    let action = if deterministic {
        logp.iter()
            .enumerate()
            .fold(0, |best, (k, &v)| if v > logp[best] { k } else { best })
    } else {
        let u = rng::uniform01(rng);
        let mut cumulative = 0.0;
        let mut chosen = logp.len() - 1;
        for (k, &lp) in logp.iter().enumerate() {
            cumulative += lp.exp();
            if u < cumulative {
                chosen = k;
                break;
            }
        }
        chosen
    };
    (action as i64, logp[action] as f32)
}

/// Samples a diagonal-Gaussian action `mean + exp(log_std)·z` (z from `rng`), or the mean when
/// `deterministic`, into `action`. Returns log π(action).
pub fn sample_gaussian(
    mean: &[f32],
    log_std: &[f32],
    rng: &mut Stream,
    deterministic: bool,
    action: &mut [f32],
) -> f32 {
    let log_two_pi = (2.0 * std::f64::consts::PI).ln();
    let mut logp = 0.0f64;
    for k in 0..mean.len() {
        let z = if deterministic {
            0.0
        } else {
            rng::standard_normal(rng)
        };
        let std = (log_std[k] as f64).exp();
        action[k] = (mean[k] as f64 + std * z) as f32;
        let z_back = (action[k] as f64 - mean[k] as f64) / std;
        logp += -0.5 * z_back * z_back - log_std[k] as f64 - 0.5 * log_two_pi;
    }
    logp as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categorical_sampling_follows_the_softmax() {
        let logits = [0.0f32, (3.0f32).ln(), 0.0];
        let mut r = rng::stream(0, "actions", 0);
        let mut counts = [0usize; 3];
        let mut scratch = Vec::new();
        let n = 100_000;
        for _ in 0..n {
            let (a, lp) = sample_categorical(&logits, &mut r, false, &mut scratch);
            counts[a as usize] += 1;
            let expected = if a == 1 { (0.6f32).ln() } else { (0.2f32).ln() };
            assert!((lp - expected).abs() < 1e-6);
        }
        // p = 0.2, 0.6, 0.2; standard error √(p(1−p)/n) ≤ 0.0016, bound at 5 SE.
        for (c, p) in counts.iter().zip([0.2, 0.6, 0.2]) {
            assert!((*c as f64 / n as f64 - p).abs() < 0.008, "{counts:?}");
        }
        assert_eq!(sample_categorical(&logits, &mut r, true, &mut scratch).0, 1);
    }

    #[test]
    fn the_avx2_layer_gives_the_generic_bits() {
        let layer = Dense {
            inputs: 7,
            outputs: 19,
            w_t: (0..7 * 19)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.137)
                .collect(),
            b: vec![0.0; 19],
        };
        let x: Vec<f32> = (0..5 * 7).map(|i| (i as f32 * 0.77).sin()).collect();
        let (mut a, mut b) = (vec![0.1f32; 5 * 19], vec![0.1f32; 5 * 19]);
        dense_rows(&layer, &x, &mut a);
        dense_rows_generic(&layer, &x, &mut b);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }

    #[test]
    fn gaussian_logprob_is_the_normal_density() {
        let mut r = rng::stream(0, "actions", 0);
        let mut a = [0.0f32; 2];
        let lp = sample_gaussian(&[0.5, -1.0], &[0.0, (2.0f32).ln()], &mut r, true, &mut a);
        assert_eq!(a, [0.5, -1.0]);
        let expected = -(2.0f64 * std::f64::consts::PI).ln() - (2.0f64).ln();
        assert!((lp as f64 - expected).abs() < 1e-6);
    }
}
