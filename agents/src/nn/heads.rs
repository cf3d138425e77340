//! The action distributions on the actor's output `[n, outputs]`: log-probabilities, entropy,
//! their gradients, and sampling.
//!
//! **Categorical** over `k` logits `z` (`outputs = k`), with `p = softmax(z)`:
//! `log π(a) = z_a − logsumexp(z)`, `H = −Σ_j p_j log p_j`;
//! `∂log π(a)/∂z_j = 1[j = a] − p_j`, `∂H/∂z_j = −p_j (log p_j + H)`.
//!
//! **Diagonal Gaussian** with mean `μ` (the actor's output, `outputs = dim`) and a learned,
//! state-independent `log σ [dim]`, with `u = (a − μ)/σ`:
//! `log π(a) = Σ_k (−½ u_k² − log σ_k − ½ log 2π)`, `H = Σ_k (log σ_k + ½ (1 + log 2π))`;
//! `∂log π/∂μ_k = u_k/σ_k`, `∂log π/∂log σ_k = u_k² − 1`, `∂H/∂log σ_k = 1`.
//!
//! The same maths in three forms, one per caller:
//! - sampling at rollout time, one row at a time, in f64 from the run's `"actions"` stream, or
//!   the mode when `deterministic` ([`sample_categorical`], [`sample_gaussian`]);
//! - batched in f32 for the native backend's update: log π and H of a minibatch, and the
//!   gradient of `g_logprob · log π + g_entropy · H` with respect to the actor's output (and
//!   log σ) ([`categorical_log_probs`], [`categorical_backward`], [`gaussian_log_probs`],
//!   [`gaussian_backward`]);
//! - as tch tensors for the libtorch backend, differentiated by autograd
//!   ([`categorical_tensors`], [`gaussian_tensors`]).
//!
//! The update recomputes log π in its backend, so the rollout's f64 values only have to agree
//! with it to float rounding.

use gradgym_envs::rng::{self, Stream};
use tch::{Kind, Tensor};

/// The action distribution family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Softmax over `n` logits.
    Categorical { n: usize },
    /// Independent normals over `dim` components, with learned, state-independent log-std.
    Gaussian { dim: usize },
}

impl Head {
    /// Outputs of the actor's last layer.
    pub fn outputs(&self) -> usize {
        match *self {
            Head::Categorical { n } => n,
            Head::Gaussian { dim } => dim,
        }
    }
}

// ---- Sampling, at rollout time (f64, one row) ----

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
/// takes the most likely one when `deterministic`. Returns `(action, log π(action))`; `logp`
/// is scratch.
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

// ---- Batched, for the native backend's update (f32) ----

/// For `n = actions.len()` rows of `logits [n, k]`: the log-softmax into `log_p [n, k]`,
/// log π(action) into `logprobs [n]` and the entropy into `entropy [n]`.
pub fn categorical_log_probs(
    logits: &[f32],
    k: usize,
    actions: &[i64],
    log_p: &mut [f32],
    logprobs: &mut [f32],
    entropy: &mut [f32],
) {
    for i in 0..actions.len() {
        let z = &logits[i * k..(i + 1) * k];
        let lp = &mut log_p[i * k..(i + 1) * k];
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let lse = z.iter().map(|&x| (x - max).exp()).sum::<f32>().ln() + max;
        let mut h = 0.0f32;
        for (l, &x) in lp.iter_mut().zip(z) {
            *l = x - lse;
            h -= l.exp() * *l;
        }
        logprobs[i] = lp[actions[i] as usize];
        entropy[i] = h;
    }
}

/// `d_logits [n, k]` = ∂/∂z of `Σ_i g_logprob[i] · log π(a_i) + g_entropy · Σ_i H_i`, from the
/// `log_p` and `entropy` of [`categorical_log_probs`].
pub fn categorical_backward(
    log_p: &[f32],
    k: usize,
    actions: &[i64],
    entropy: &[f32],
    g_logprob: &[f32],
    g_entropy: f32,
    d_logits: &mut [f32],
) {
    for i in 0..actions.len() {
        let (g_lp, h) = (g_logprob[i], entropy[i]);
        let a = actions[i] as usize;
        for j in 0..k {
            let l = log_p[i * k + j];
            let p = l.exp();
            let onehot = if j == a { 1.0 } else { 0.0 };
            d_logits[i * k + j] = g_lp * (onehot - p) - g_entropy * p * (l + h);
        }
    }
}

/// For `n = logprobs.len()` rows of `mean [n, dim]` and `actions [n, dim]`: log π(action)
/// into `logprobs [n]` and the entropy (the same for every row) into `entropy [n]`.
pub fn gaussian_log_probs(
    mean: &[f32],
    log_std: &[f32],
    actions: &[f32],
    logprobs: &mut [f32],
    entropy: &mut [f32],
) {
    let dim = log_std.len();
    let log_two_pi = (2.0 * std::f32::consts::PI).ln();
    let h: f32 = log_std.iter().map(|&s| s + 0.5 * (1.0 + log_two_pi)).sum();
    for i in 0..logprobs.len() {
        let mut lp = 0.0f32;
        for k in 0..dim {
            let u = (actions[i * dim + k] - mean[i * dim + k]) / log_std[k].exp();
            lp += -0.5 * u * u - log_std[k] - 0.5 * log_two_pi;
        }
        logprobs[i] = lp;
        entropy[i] = h;
    }
}

/// The gradient of `Σ_i g_logprob[i] · log π(a_i) + g_entropy · Σ_i H_i` with respect to the
/// means, into `d_mean [n, dim]`, and to log σ, into `d_log_std [dim]`.
pub fn gaussian_backward(
    mean: &[f32],
    log_std: &[f32],
    actions: &[f32],
    g_logprob: &[f32],
    g_entropy: f32,
    d_mean: &mut [f32],
    d_log_std: &mut [f32],
) {
    let dim = log_std.len();
    for k in 0..dim {
        let std = log_std[k].exp();
        let mut g = 0.0f32;
        for i in 0..g_logprob.len() {
            let u = (actions[i * dim + k] - mean[i * dim + k]) / std;
            d_mean[i * dim + k] = g_logprob[i] * u / std;
            g += g_logprob[i] * (u * u - 1.0) + g_entropy;
        }
        d_log_std[k] = g;
    }
}

// ---- Tensors, for the libtorch backend (autograd) ----

/// `(log π(actions) [B], H [B])` for `logits [B, k]` and int64 `actions [B]`.
pub fn categorical_tensors(logits: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
    let log_p = logits.log_softmax(-1, Kind::Float);
    let logprobs = log_p
        .gather(1, &actions.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let entropy = -(log_p.exp() * &log_p).sum_dim_intlist(-1, false, Kind::Float);
    (logprobs, entropy)
}

/// `(log π(actions) [B], H [B])` for `mean [B, dim]`, `log_std [dim]` and float
/// `actions [B, dim]`.
pub fn gaussian_tensors(mean: &Tensor, log_std: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
    let z = (actions - mean) / log_std.exp();
    let log_two_pi = (2.0 * std::f64::consts::PI).ln();
    let per_dim = z.square() * -0.5 - log_std - 0.5 * log_two_pi;
    let logprobs = per_dim.sum_dim_intlist(-1, false, Kind::Float);
    // The entropy of a diagonal Gaussian does not depend on the state.
    let entropy = (log_std + 0.5 * (1.0 + log_two_pi))
        .sum(Kind::Float)
        .expand([mean.size()[0]], false);
    (logprobs, entropy)
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
    fn gaussian_logprob_is_the_normal_density() {
        let mut r = rng::stream(0, "actions", 0);
        let mut a = [0.0f32; 2];
        let lp = sample_gaussian(&[0.5, -1.0], &[0.0, (2.0f32).ln()], &mut r, true, &mut a);
        assert_eq!(a, [0.5, -1.0]);
        let expected = -(2.0f64 * std::f64::consts::PI).ln() - (2.0f64).ln();
        assert!((lp as f64 - expected).abs() < 1e-6);
    }

    /// The three forms give the same log π and H on the same rows.
    #[test]
    fn sampling_batched_and_tensor_forms_agree() {
        let (n, k) = (4, 3);
        let logits: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).sin() * 2.0).collect();
        let actions: Vec<i64> = (0..n as i64).map(|i| i % k as i64).collect();
        let (mut log_p, mut lp, mut h) = (vec![0.0; n * k], vec![0.0; n], vec![0.0; n]);
        categorical_log_probs(&logits, k, &actions, &mut log_p, &mut lp, &mut h);
        let (t_lp, t_h) = categorical_tensors(
            &Tensor::from_slice(&logits).view([n as i64, k as i64]),
            &Tensor::from_slice(&actions),
        );
        let (t_lp, t_h) = (
            Vec::<f32>::try_from(t_lp).unwrap(),
            Vec::<f32>::try_from(t_h).unwrap(),
        );
        let mut scratch = Vec::new();
        let mut r = rng::stream(0, "actions", 0);
        for i in 0..n {
            assert!((lp[i] - t_lp[i]).abs() < 1e-6 && (h[i] - t_h[i]).abs() < 1e-6);
            let (a, mode_lp) =
                sample_categorical(&logits[i * k..(i + 1) * k], &mut r, true, &mut scratch);
            assert!((mode_lp - log_p[i * k + a as usize]).abs() < 1e-6);
        }

        let dim = 2;
        let mean: Vec<f32> = (0..n * dim).map(|i| (i as f32 * 0.3).cos()).collect();
        let log_std = [-0.4f32, 0.2];
        let mut r = rng::stream(1, "actions", 0);
        let mut actions = vec![0.0f32; n * dim];
        let mut sampled = vec![0.0f32; n];
        for i in 0..n {
            sampled[i] = sample_gaussian(
                &mean[i * dim..(i + 1) * dim],
                &log_std,
                &mut r,
                false,
                &mut actions[i * dim..(i + 1) * dim],
            );
        }
        gaussian_log_probs(&mean, &log_std, &actions, &mut lp, &mut h);
        let (t_lp, t_h) = gaussian_tensors(
            &Tensor::from_slice(&mean).view([n as i64, dim as i64]),
            &Tensor::from_slice(&log_std),
            &Tensor::from_slice(&actions).view([n as i64, dim as i64]),
        );
        let (t_lp, t_h) = (
            Vec::<f32>::try_from(t_lp).unwrap(),
            Vec::<f32>::try_from(t_h).unwrap(),
        );
        for i in 0..n {
            assert!((lp[i] - t_lp[i]).abs() < 1e-5 && (h[i] - t_h[i]).abs() < 1e-5);
            assert!(
                (lp[i] - sampled[i]).abs() < 1e-5,
                "{} vs {}",
                lp[i],
                sampled[i]
            );
        }
    }

    /// The closed-form gradients are those of autograd through the tensor form.
    #[test]
    fn the_closed_form_gradients_are_autograds() {
        let (n, k) = (5, 3);
        let logits: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.9).cos() * 1.5).collect();
        let actions: Vec<i64> = (0..n as i64).map(|i| (i * 2) % k as i64).collect();
        let g_logprob: Vec<f32> = (0..n).map(|i| i as f32 * 0.3 - 0.5).collect();
        let g_entropy = -0.07f32;
        let (mut log_p, mut lp, mut h) = (vec![0.0; n * k], vec![0.0; n], vec![0.0; n]);
        categorical_log_probs(&logits, k, &actions, &mut log_p, &mut lp, &mut h);
        let mut d = vec![0.0; n * k];
        categorical_backward(&log_p, k, &actions, &h, &g_logprob, g_entropy, &mut d);
        let z = Tensor::from_slice(&logits)
            .view([n as i64, k as i64])
            .set_requires_grad(true);
        let (t_lp, t_h) = categorical_tensors(&z, &Tensor::from_slice(&actions));
        let objective = (t_lp * Tensor::from_slice(&g_logprob)).sum(Kind::Float)
            + t_h.sum(Kind::Float) * g_entropy as f64;
        objective.backward();
        let autograd: Vec<f32> = Vec::try_from(z.grad().view([-1])).unwrap();
        for (a, b) in d.iter().zip(&autograd) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }

        let dim = 2;
        let mean: Vec<f32> = (0..n * dim).map(|i| (i as f32 * 0.4).sin()).collect();
        let actions: Vec<f32> = (0..n * dim).map(|i| (i as f32 * 0.8).cos()).collect();
        let log_std = [0.3f32, -0.6];
        let (mut d_mean, mut d_log_std) = (vec![0.0; n * dim], vec![0.0; dim]);
        gaussian_backward(
            &mean,
            &log_std,
            &actions,
            &g_logprob,
            g_entropy,
            &mut d_mean,
            &mut d_log_std,
        );
        let mu = Tensor::from_slice(&mean)
            .view([n as i64, dim as i64])
            .set_requires_grad(true);
        let s = Tensor::from_slice(&log_std).set_requires_grad(true);
        let (t_lp, t_h) = gaussian_tensors(
            &mu,
            &s,
            &Tensor::from_slice(&actions).view([n as i64, dim as i64]),
        );
        let objective = (t_lp * Tensor::from_slice(&g_logprob)).sum(Kind::Float)
            + t_h.sum(Kind::Float) * g_entropy as f64;
        objective.backward();
        let g_mu: Vec<f32> = Vec::try_from(mu.grad().view([-1])).unwrap();
        let g_s: Vec<f32> = Vec::try_from(s.grad()).unwrap();
        for (a, b) in d_mean.iter().zip(&g_mu).chain(d_log_std.iter().zip(&g_s)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
