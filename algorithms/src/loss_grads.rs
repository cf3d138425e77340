//! The losses of [`crate::losses`] with their gradients written out, over slices: for each
//! sample i, ∂L/∂log π(a_i|s_i) and ∂L/∂V(s_i). The native backend (`gradgym-agents`,
//! `backend/native.rs`) chains these through its networks instead of running autodiff.
//!
//! Every function computes the same loss as its tensor twin, and the tests below check both the
//! value and the gradient against libtorch's autograd through [`crate::losses`] on random
//! batches, including the corners: ratios outside the clip range, ties between the clipped
//! and unclipped terms, and clipped value predictions. Where two terms of a `max` are equal,
//! the gradient is split evenly between them, as PyTorch's `maximum` does; `clamp` passes the
//! gradient on its closed interval.
//!
//! The functions are generic over the float type ([`Real`]): the native backend calls them with
//! `f32`; the exact-expectation tests of the estimators (`tests/estimators.rs`), through
//! [`crate::study`], with `f64`.
//!
//! With B samples, writing ρ_i = exp(log π_i − log π_old,i) and A_i the (constant) advantage:
//! - policy gradient `−1/B Σ Ψ_i log π_i`:           ∂/∂log π_i = −Ψ_i / B
//! - PPO-clip `1/B Σ max(−A_i ρ_i, −A_i clip(ρ_i))`: ∂/∂log π_i = −A_i ρ_i / B, except 0 when
//!   ρ_i is outside [1 − ε, 1 + ε] and the clipped term is the larger
//! - PPO-KL `1/B Σ (−A_i ρ_i + β((ρ_i − 1) − log ρ_i))`: ∂/∂log π_i = (−A_i ρ_i + β(ρ_i − 1)) / B
//! - value `1/2B Σ (V_i − R_i)²`: ∂/∂V_i = (V_i − R_i) / B; clipped around V_old by ε, the
//!   larger of the two squared errors passes its gradient.

use crate::losses::RatioStats;
use crate::real::Real;

/// `(A − mean A) / (std A + 1e-8)` in place, the unbiased standard deviation, sums in f64
/// (see [`crate::losses::normalize_advantages`]).
pub fn normalize_advantages<F: Real>(a: &mut [F]) {
    let n = a.len() as f64;
    let mean = a.iter().map(|&x| x.to_f64()).sum::<f64>() / n;
    let var = a.iter().map(|&x| (x.to_f64() - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (mean, denom) = (F::from_f64(mean), F::from_f64(var.sqrt() + 1e-8));
    for x in a.iter_mut() {
        *x = (*x - mean) / denom;
    }
}

fn mean(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    (0..n).map(f).sum::<f64>() / n as f64
}

/// `log π − log π_old` per sample.
fn log_ratio<F: Real>(new_logprobs: &[F], old_logprobs: &[F]) -> Vec<F> {
    new_logprobs
        .iter()
        .zip(old_logprobs)
        .map(|(&a, &b)| a - b)
        .collect()
}

fn ratio_stats<F: Real>(log_ratio: &[F], clip_coef: f64) -> RatioStats {
    let n = log_ratio.len();
    let r = |i: usize| log_ratio[i].to_f64().exp();
    RatioStats {
        approx_kl: mean(n, |i| (r(i) - 1.0) - log_ratio[i].to_f64()),
        old_approx_kl: mean(n, |i| -log_ratio[i].to_f64()),
        clipfrac: mean(n, |i| f64::from(u8::from((r(i) - 1.0).abs() > clip_coef))),
    }
}

/// `−mean(weights · logprobs)`; writes ∂L/∂logprobs into `grad`.
pub fn policy_gradient_loss<F: Real>(logprobs: &[F], weights: &[F], grad: &mut [F]) -> f64 {
    let n = logprobs.len();
    for (g, &w) in grad.iter_mut().zip(weights) {
        *g = -w / F::from_usize(n);
    }
    -mean(n, |i| weights[i].to_f64() * logprobs[i].to_f64())
}

/// PPO's clipped surrogate `L^CLIP`; writes ∂L/∂new_logprobs into `grad`.
pub fn ppo_clip_loss<F: Real>(
    new_logprobs: &[F],
    old_logprobs: &[F],
    advantages: &[F],
    clip_coef: f64,
    grad: &mut [F],
) -> (f64, RatioStats) {
    let n = new_logprobs.len();
    let (lo, hi) = (F::from_f64(1.0 - clip_coef), F::from_f64(1.0 + clip_coef));
    let log_ratio = log_ratio(new_logprobs, old_logprobs);
    let mut loss = 0.0f64;
    for i in 0..n {
        let (ratio, a) = (log_ratio[i].exp(), advantages[i]);
        let unclipped = -a * ratio;
        let clipped = -a * ratio.clamp(lo, hi);
        loss += unclipped.max(clipped).to_f64();
        let inside = (lo..=hi).contains(&ratio);
        // The clipped branch carries the gradient only inside the clip range, where it equals
        // the unclipped one; outside, the unclipped branch carries it when it is the larger.
        grad[i] = if inside || unclipped > clipped {
            unclipped / F::from_usize(n)
        } else if unclipped == clipped {
            unclipped / F::from_usize(2 * n)
        } else {
            F::ZERO
        };
    }
    (loss / n as f64, ratio_stats(&log_ratio, clip_coef))
}

/// PPO's KL-penalised surrogate `L^KLPEN`; writes ∂L/∂new_logprobs into `grad`.
pub fn ppo_kl_loss<F: Real>(
    new_logprobs: &[F],
    old_logprobs: &[F],
    advantages: &[F],
    beta: f64,
    clip_coef: f64,
    grad: &mut [F],
) -> (f64, RatioStats) {
    let n = new_logprobs.len();
    let log_ratio = log_ratio(new_logprobs, old_logprobs);
    let mut surrogate = 0.0f64;
    let mut kl = 0.0f64;
    let beta_f = F::from_f64(beta);
    for i in 0..n {
        let ratio = log_ratio[i].exp();
        surrogate -= (ratio * advantages[i]).to_f64();
        kl += ((ratio - F::ONE) - log_ratio[i]).to_f64();
        grad[i] = (-advantages[i] * ratio + beta_f * (ratio - F::ONE)) / F::from_usize(n);
    }
    let loss = surrogate / n as f64 + beta * kl / n as f64;
    (loss, ratio_stats(&log_ratio, clip_coef))
}

/// `½ mean((V − R)²)`, or with `clip` = Some(ε) the larger of that and the error of
/// `V_old + clip(V − V_old, ±ε)`; writes ∂L/∂values into `grad`.
pub fn value_loss<F: Real>(
    values: &[F],
    returns: &[F],
    old_values: &[F],
    clip: Option<f64>,
    grad: &mut [F],
) -> f64 {
    let n = values.len();
    let inv_n = F::ONE / F::from_usize(n);
    let mut loss = 0.0f64;
    for i in 0..n {
        let err = values[i] - returns[i];
        let unclipped = err * err;
        match clip {
            None => {
                loss += unclipped.to_f64();
                grad[i] = err * inv_n;
            }
            Some(eps) => {
                let eps = F::from_f64(eps);
                let delta = values[i] - old_values[i];
                let clipped_err = old_values[i] + delta.clamp(-eps, eps) - returns[i];
                let clipped = clipped_err * clipped_err;
                loss += unclipped.max(clipped).to_f64();
                let inside = (-eps..=eps).contains(&delta);
                let through_clipped = if inside { clipped_err } else { F::ZERO };
                grad[i] = inv_n
                    * if unclipped > clipped {
                        err
                    } else if clipped > unclipped {
                        through_clipped
                    } else {
                        F::from_f64(0.5) * (err + through_clipped)
                    };
            }
        }
    }
    0.5 * loss / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses;
    use gradgym_envs::rng;
    use tch::Tensor;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }
    fn leaf(v: &[f32]) -> Tensor {
        t(v).set_requires_grad(true)
    }
    fn grad_of(x: &Tensor) -> Vec<f32> {
        Vec::try_from(x.grad()).unwrap()
    }
    fn close(a: &[f32], b: &[f32], what: &str) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                "{what}[{i}]: closed form {x}, autograd {y}"
            );
        }
    }
    fn normals(n: usize, scale: f64, r: &mut rng::Stream) -> Vec<f32> {
        (0..n)
            .map(|_| (rng::standard_normal(r) * scale) as f32)
            .collect()
    }

    /// Random batches whose ratios spread well past the clip range, plus exact ties.
    fn batch(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut r = rng::stream(seed, "test", 0);
        let mut old = normals(64, 1.0, &mut r);
        let new: Vec<f32> = old
            .iter()
            .zip(normals(64, 0.3, &mut r))
            .map(|(o, d)| o + d)
            .collect();
        let mut adv = normals(64, 2.0, &mut r);
        old[0] = new[0]; // ratio exactly 1
        adv[1] = 0.0; // a tie at any ratio
        (new, old, adv)
    }

    #[test]
    fn normalised_advantages_match_the_tensor_version() {
        let (_, _, adv) = batch(3);
        let mut a = adv.clone();
        normalize_advantages(&mut a);
        let expected: Vec<f32> = Vec::try_from(losses::normalize_advantages(&t(&adv))).unwrap();
        close(&a, &expected, "normalised");
    }

    #[test]
    fn policy_gradient_loss_matches_autograd() {
        let (lp, _, w) = batch(4);
        let x = leaf(&lp);
        let loss = losses::policy_gradient_loss(&x, &t(&w));
        loss.backward();
        let mut g = vec![0.0; lp.len()];
        let value = policy_gradient_loss(&lp, &w, &mut g);
        assert!((value - loss.double_value(&[])).abs() < 1e-5);
        close(&g, &grad_of(&x), "∂L/∂log π");
    }

    #[test]
    fn clip_loss_matches_autograd_inside_and_outside_the_clip_range() {
        for seed in 0..5 {
            let (new, old, adv) = batch(seed);
            for eps in [0.1, 0.2, 0.3] {
                let x = leaf(&new);
                let (loss, stats) = losses::ppo_clip_loss(&x, &t(&old), &t(&adv), eps);
                loss.backward();
                let mut g = vec![0.0; new.len()];
                let (value, ours) = ppo_clip_loss(&new, &old, &adv, eps, &mut g);
                assert!((value - loss.double_value(&[])).abs() < 1e-5);
                close(&g, &grad_of(&x), "∂L^CLIP/∂log π");
                assert!((ours.approx_kl - stats.approx_kl).abs() < 1e-6);
                assert!((ours.old_approx_kl - stats.old_approx_kl).abs() < 1e-6);
                assert_eq!(ours.clipfrac, stats.clipfrac);
                // The batch does exercise both sides of the clip.
                assert!(stats.clipfrac > 0.1 && stats.clipfrac < 0.9, "{stats:?}");
                assert!(g.iter().filter(|&&v| v == 0.0).count() > 3);
            }
        }
    }

    #[test]
    fn kl_loss_matches_autograd() {
        let (new, old, adv) = batch(7);
        for beta in [0.0, 0.5, 3.0] {
            let x = leaf(&new);
            let (loss, _) = losses::ppo_kl_loss(&x, &t(&old), &t(&adv), beta, 0.2);
            loss.backward();
            let mut g = vec![0.0; new.len()];
            let (value, _) = ppo_kl_loss(&new, &old, &adv, beta, 0.2, &mut g);
            assert!((value - loss.double_value(&[])).abs() < 1e-5 * value.abs().max(1.0));
            close(&g, &grad_of(&x), "∂L^KLPEN/∂log π");
        }
    }

    #[test]
    fn value_loss_matches_autograd_clipped_or_not() {
        let mut r = rng::stream(9, "test", 0);
        let old = normals(64, 1.0, &mut r);
        let values: Vec<f32> = old
            .iter()
            .zip(normals(64, 0.4, &mut r))
            .map(|(o, d)| o + d)
            .collect();
        let mut returns = normals(64, 1.5, &mut r);
        returns[0] = values[0]; // zero error: a tie between the two terms
        for clip in [None, Some(0.2), Some(1.0)] {
            let x = leaf(&values);
            let loss = losses::value_loss(&x, &t(&returns), &t(&old), clip);
            loss.backward();
            let mut g = vec![0.0; values.len()];
            let value = value_loss(&values, &returns, &old, clip, &mut g);
            assert!((value - loss.double_value(&[])).abs() < 1e-5 * value.max(1.0));
            close(&g, &grad_of(&x), "∂L^V/∂V");
        }
        // Sanity of the comparison itself: a wrong gradient is caught.
        let x = leaf(&values);
        losses::value_loss(&x, &t(&returns), &t(&old), Some(0.2)).backward();
        let mut g = vec![0.0; values.len()];
        value_loss(&values, &returns, &old, None, &mut g);
        let autograd = grad_of(&x);
        assert!(g.iter().zip(&autograd).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
