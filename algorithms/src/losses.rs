//! Surrogate losses whose gradients are the policy-gradient estimators, as functions over
//! tensors. Every loss is a mean over the samples of a batch, to be minimised.
//!
//! - REINFORCE and actor-critic (Williams 1992; Sutton, McAllester, Singh & Mansour 2000):
//!   `L = −mean(Ψ_t · log π(a_t|s_t))`, so `−∇L = 1/N Σ Ψ_t ∇log π(a_t|s_t)` with Ψ the total
//!   return, the reward-to-go, or an advantage estimate (baseline subtracted).
//! - PPO-clip (Schulman, Wolski, Dhariwal, Radford & Klimov 2017, eq. 7):
//!   `L^CLIP = −mean(min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t))`, `ρ_t = π(a_t|s_t) / π_old(a_t|s_t)`.
//! - PPO with a KL penalty (same paper, eq. 8): `L^KLPEN = −mean(ρ_t Â_t) + β · KL[π_old ‖ π]`,
//!   with the KL estimated from the batch by `k3 = (ρ − 1) − log ρ` (unbiased, ≥ 0).
//! - The group estimators on text (RLOO, GRPO; [`crate::group`]): the same clipped surrogate
//!   with a weight per token instead of a mean, `L = Σ_t w_t max(−Â_t ρ_t, −Â_t clip(ρ_t))`, and
//!   for GRPO `+ β Σ_t w_t k3_t` toward the frozen reference, `k3_t = p_t/π_t − log(p_t/π_t) − 1`
//!   (Shao et al. 2024, equations 3 and 4).
//! - Value loss: `½ mean((V − R)²)`, optionally clipped around the old values as in PPO
//!   implementations (`clip_vloss`).

use tch::{Kind, Tensor};

/// `(A − mean A) / (std A + 1e-8)` over the batch. (The standard deviation is the unbiased
/// one, as in `torch.std`.)
pub fn normalize_advantages(advantages: &Tensor) -> Tensor {
    let mean = advantages.mean(Kind::Float);
    let std = advantages.std(true);
    (advantages - mean) / (std + 1e-8)
}

/// `−mean(weights · logprobs)`: the REINFORCE / actor-critic surrogate. `weights` are constants
/// (returns or advantages); its gradient is minus the policy-gradient estimate.
pub fn policy_gradient_loss(logprobs: &Tensor, weights: &Tensor) -> Tensor {
    -(logprobs * weights.detach()).mean(Kind::Float)
}

/// Diagnostics of a PPO surrogate, computed without gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RatioStats {
    /// `mean((ρ − 1) − log ρ)`: the k3 estimate of KL[π_old ‖ π].
    pub approx_kl: f64,
    /// `mean(−log ρ)`: the k1 estimate (CleanRL logs both).
    pub old_approx_kl: f64,
    /// Fraction of samples whose ratio left `[1 − ε, 1 + ε]`.
    pub clipfrac: f64,
}

fn ratio_stats(log_ratio: &Tensor, clip_coef: f64) -> RatioStats {
    tch::no_grad(|| {
        let ratio = log_ratio.exp();
        RatioStats {
            approx_kl: ((&ratio - 1.0) - log_ratio)
                .mean(Kind::Float)
                .double_value(&[]),
            old_approx_kl: (-log_ratio).mean(Kind::Float).double_value(&[]),
            clipfrac: (&ratio - 1.0)
                .abs()
                .gt(clip_coef)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]),
        }
    })
}

/// The ratio diagnostics as TRL's PPO trainers log them (`policy/approxkl_avg`,
/// `policy/clipfrac_avg`), which differ from CleanRL's ([`RatioStats`]):
/// - `approxkl` is `½ mean((log ρ)²)`, the k2 estimate of KL[π_old ‖ π] (CleanRL: k3);
/// - `clipfrac` is the share of samples where the clipped term is the larger loss, so the
///   clip takes their gradient (CleanRL: every ratio outside `[1 − ε, 1 + ε]`, also those
///   on the side where the unclipped term still decides and the gradient flows).
///
/// `k3` is CleanRL's `approx_kl`, `mean((ρ − 1) − log ρ)`, beside them: what an early stop at
/// `target_kl` and PPO-KL's adaptive β read, as on the classic tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrlRatioStats {
    pub approxkl: f64,
    pub clipfrac: f64,
    pub k3: f64,
}

/// [`TrlRatioStats`] of `log ρ` and the per-sample losses `−Â ρ` and `−Â clip(ρ, 1 ± ε)`.
fn trl_ratio_stats(log_ratio: &Tensor, unclipped: &Tensor, clipped: &Tensor) -> TrlRatioStats {
    tch::no_grad(|| TrlRatioStats {
        approxkl: (log_ratio.square().mean(Kind::Float) * 0.5).double_value(&[]),
        clipfrac: clipped
            .gt_tensor(unclipped)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]),
        k3: ((log_ratio.exp() - 1.0) - log_ratio)
            .mean(Kind::Float)
            .double_value(&[]),
    })
}

/// The terms of `L^CLIP`: the loss, `log ρ`, and the unclipped and clipped per-sample losses
/// `−Â ρ` and `−Â clip(ρ, 1 ± ε)`.
fn clip_terms(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    clip_coef: f64,
) -> (Tensor, Tensor, Tensor, Tensor) {
    let log_ratio = new_logprobs - old_logprobs.detach();
    let ratio = log_ratio.exp();
    let advantages = advantages.detach();
    let unclipped = -&advantages * &ratio;
    let clipped = -&advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef);
    let loss = unclipped.maximum(&clipped).mean(Kind::Float);
    (loss, log_ratio, unclipped, clipped)
}

/// PPO's clipped surrogate `L^CLIP` with clip range `clip_coef` (ε; 0.2 in the paper), with
/// CleanRL's diagnostics.
pub fn ppo_clip_loss(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    clip_coef: f64,
) -> (Tensor, RatioStats) {
    let (loss, log_ratio, _, _) = clip_terms(new_logprobs, old_logprobs, advantages, clip_coef);
    (loss, ratio_stats(&log_ratio, clip_coef))
}

/// The same `L^CLIP`, with TRL's diagnostics ([`TrlRatioStats`]), computed from the loss's own
/// terms.
pub fn ppo_clip_loss_trl(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    clip_coef: f64,
) -> (Tensor, TrlRatioStats) {
    let (loss, log_ratio, unclipped, clipped) =
        clip_terms(new_logprobs, old_logprobs, advantages, clip_coef);
    let stats = trl_ratio_stats(&log_ratio, &unclipped, &clipped);
    (loss, stats)
}

/// [`ppo_kl_loss`]'s `L^KLPEN` with TRL's diagnostics: its `clipfrac` is the share of samples
/// whose gradient `L^CLIP` with `clip_coef` would have clipped (this loss clips none).
pub fn ppo_kl_loss_trl(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    beta: f64,
    clip_coef: f64,
) -> (Tensor, TrlRatioStats) {
    let (_, log_ratio, unclipped, clipped) =
        clip_terms(new_logprobs, old_logprobs, advantages, clip_coef);
    let loss = kl_penalised(&log_ratio, advantages, beta);
    (loss, trl_ratio_stats(&log_ratio, &unclipped, &clipped))
}

/// The group estimators' clipped surrogate: `Σ_t w_t max(−Â_t ρ_t, −Â_t clip(ρ_t, 1 ± ε))`
/// with a weight `w_t` per token ([`crate::group::token_weights`]) instead of a mean, and TRL's
/// diagnostics (whose means are over the tokens, unweighted, as for PPO).
pub fn weighted_clip_loss_trl(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    weights: &Tensor,
    clip_coef: f64,
) -> (Tensor, TrlRatioStats) {
    let (_, log_ratio, unclipped, clipped) =
        clip_terms(new_logprobs, old_logprobs, advantages, clip_coef);
    let loss = (unclipped.maximum(&clipped) * weights.detach()).sum(Kind::Float);
    (loss, trl_ratio_stats(&log_ratio, &unclipped, &clipped))
}

/// GRPO's penalty toward the frozen reference: `Σ_t w_t k3_t`, `k3_t = e^{log p_t − log π_t} −
/// (log p_t − log π_t) − 1` (Shao et al. 2024, equation 4), to be added times β. Its gradient in
/// `log π_t` is `w_t (1 − p_t/π_t)`.
pub fn reference_k3_penalty(
    new_logprobs: &Tensor,
    ref_logprobs: &Tensor,
    weights: &Tensor,
) -> Tensor {
    let d = ref_logprobs.detach() - new_logprobs;
    (((d.exp() - &d) - 1.0) * weights.detach()).sum(Kind::Float)
}

/// PPO's KL-penalised surrogate `L^KLPEN` with coefficient `beta`. `clip_coef` is used only for
/// the `clipfrac` diagnostic.
pub fn ppo_kl_loss(
    new_logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    beta: f64,
    clip_coef: f64,
) -> (Tensor, RatioStats) {
    let log_ratio = new_logprobs - old_logprobs.detach();
    let loss = kl_penalised(&log_ratio, advantages, beta);
    (loss, ratio_stats(&log_ratio, clip_coef))
}

/// `L^KLPEN` from `log ρ`: `−mean(ρ Â) + β · mean((ρ − 1) − log ρ)`.
fn kl_penalised(log_ratio: &Tensor, advantages: &Tensor, beta: f64) -> Tensor {
    let ratio = log_ratio.exp();
    let surrogate = -(&ratio * advantages.detach()).mean(Kind::Float);
    let kl = ((&ratio - 1.0) - log_ratio).mean(Kind::Float);
    surrogate + kl * beta
}

/// `½ mean((V − R)²)`; with `clip` = Some(ε), `½ mean(max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²))`.
pub fn value_loss(
    new_values: &Tensor,
    returns: &Tensor,
    old_values: &Tensor,
    clip: Option<f64>,
) -> Tensor {
    let returns = returns.detach();
    let unclipped = (new_values - &returns).square();
    match clip {
        None => unclipped.mean(Kind::Float) * 0.5,
        Some(eps) => {
            let old = old_values.detach();
            let clipped = &old + (new_values - &old).clamp(-eps, eps);
            let clipped = (clipped - &returns).square();
            unclipped.maximum(&clipped).mean(Kind::Float) * 0.5
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }
    fn scalar(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    #[test]
    fn clip_loss_equals_the_policy_gradient_surrogate_at_ratio_one() {
        let lp = t(&[-0.5, -1.0, -2.0]).set_requires_grad(true);
        let adv = t(&[1.0, -2.0, 0.5]);
        let (loss, stats) = ppo_clip_loss(&lp, &lp.detach(), &adv, 0.2);
        assert!((scalar(&loss) - (-(1.0 - 2.0 + 0.5) / 3.0)).abs() < 1e-6);
        assert_eq!(stats.clipfrac, 0.0);
        assert!(stats.approx_kl.abs() < 1e-9);
        loss.backward();
        // d/dlp of −mean(A·exp(lp − lp_old)) at lp = lp_old is −A/3.
        let g = Vec::<f32>::try_from(lp.grad()).unwrap();
        for (gi, ai) in g.iter().zip([1.0f32, -2.0, 0.5]) {
            assert!((gi + ai / 3.0).abs() < 1e-6);
        }
    }

    #[test]
    fn clip_loss_stops_the_gradient_beyond_the_clip_range() {
        // Positive advantage, ratio 1.5 > 1.2: clipped branch is the max of the negatives.
        let old = t(&[0.0]);
        let new = t(&[(1.5f32).ln()]).set_requires_grad(true);
        let (loss, stats) = ppo_clip_loss(&new, &old, &t(&[2.0]), 0.2);
        assert!((scalar(&loss) + 2.0 * 1.2).abs() < 1e-5);
        assert_eq!(stats.clipfrac, 1.0);
        loss.backward();
        assert_eq!(Vec::<f32>::try_from(new.grad()).unwrap(), vec![0.0]);
        // Negative advantage with ratio 1.5: the unclipped term is larger and keeps its gradient.
        let new = t(&[(1.5f32).ln()]).set_requires_grad(true);
        let (loss, _) = ppo_clip_loss(&new, &old, &t(&[-2.0]), 0.2);
        assert!((scalar(&loss) - 3.0).abs() < 1e-5);
        loss.backward();
        assert!((Vec::<f32>::try_from(new.grad()).unwrap()[0] - 3.0).abs() < 1e-5);
    }

    #[test]
    fn trls_ratio_diagnostics_count_only_the_clips_that_bind() {
        // ρ = 0.7 with A > 0 and ρ = 1.3 with A < 0: outside the range, but the unclipped
        // term is the larger loss and keeps the gradient; ρ = 1.5 with A > 0 and ρ = 0.5 with
        // A < 0 are clipped; ρ = 1 is neither.
        let ratios = [0.7f32, 1.3, 1.5, 0.5, 1.0];
        let log_ratio = t(&ratios.map(f32::ln));
        let adv = t(&[1.0, -1.0, 2.0, -0.5, 3.0]);
        let (trl_loss, trl) = ppo_clip_loss_trl(&log_ratio, &t(&[0.0; 5]), &adv, 0.2);
        assert!((trl.clipfrac - 0.4).abs() < 1e-6, "{trl:?}");
        let want = 0.5 * ratios.iter().map(|r| (*r as f64).ln().powi(2)).sum::<f64>() / 5.0;
        assert!((trl.approxkl - want).abs() < 1e-6, "{trl:?} vs {want}");
        let k3 = ratios
            .iter()
            .map(|&r| r as f64 - 1.0 - (r as f64).ln())
            .sum::<f64>()
            / 5.0;
        assert!((trl.k3 - k3).abs() < 1e-6, "{trl:?} vs {k3}");
        // CleanRL's count takes all four ratios outside the range; the loss is the same.
        let (loss, stats) = ppo_clip_loss(&log_ratio, &t(&[0.0; 5]), &adv, 0.2);
        assert!((stats.clipfrac - 0.8).abs() < 1e-6);
        assert_eq!(scalar(&trl_loss), scalar(&loss));
    }

    #[test]
    fn kl_loss_adds_beta_times_the_k3_estimate() {
        let old = t(&[-1.0, -1.0]);
        let new = t(&[-0.8, -1.3]);
        let adv = t(&[1.0, 1.0]);
        let (loss, stats) = ppo_kl_loss(&new, &old, &adv, 0.5, 0.2);
        let r: Vec<f64> = vec![(0.2f64).exp(), (-0.3f64).exp()];
        let k3 = ((r[0] - 1.0 - 0.2) + (r[1] - 1.0 + 0.3)) / 2.0;
        let expected = -(r[0] + r[1]) / 2.0 + 0.5 * k3;
        assert!(
            (scalar(&loss) - expected).abs() < 1e-5,
            "{} vs {expected}",
            scalar(&loss)
        );
        assert!((stats.approx_kl - k3).abs() < 1e-6);
        // With TRL's diagnostics: the same loss, its k3, and the clip it does not apply.
        let (trl_loss, trl) = ppo_kl_loss_trl(&new, &old, &adv, 0.5, 0.2);
        assert_eq!(scalar(&trl_loss), scalar(&loss));
        assert!((trl.k3 - k3).abs() < 1e-6, "{trl:?}");
        let k2 = (0.2f64.powi(2) + 0.3f64.powi(2)) / 4.0;
        assert!((trl.approxkl - k2).abs() < 1e-6, "{trl:?}");
        // ρ = e^0.2 ≈ 1.22 with A > 0 is past 1 + ε: the clip would have bound; e^−0.3 not.
        assert!((trl.clipfrac - 0.5).abs() < 1e-6, "{trl:?}");
    }

    #[test]
    fn value_loss_clips_around_old_values() {
        let v = t(&[2.0]);
        let ret = t(&[0.0]);
        let old = t(&[0.0]);
        assert!((scalar(&value_loss(&v, &ret, &old, None)) - 2.0).abs() < 1e-6);
        // Clipped prediction 0.2 is closer to the target, so max picks the unclipped 4.0.
        assert!((scalar(&value_loss(&v, &ret, &old, Some(0.2))) - 2.0).abs() < 1e-6);
        // Target beyond: unclipped error 1, clipped error (0.2 − 3)² → the larger one.
        let ret = t(&[3.0]);
        let expected = 0.5 * (2.8f64).powi(2);
        assert!((scalar(&value_loss(&v, &ret, &old, Some(0.2))) - expected).abs() < 1e-5);
    }

    #[test]
    fn normalised_advantages_have_zero_mean_and_unit_std() {
        let a = normalize_advantages(&t(&[1.0, 2.0, 3.0, 10.0]));
        assert!(scalar(&a.mean(Kind::Float)).abs() < 1e-6);
        assert!((scalar(&a.std(true)) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn policy_gradient_loss_gradient_is_minus_weights_over_n() {
        let lp = t(&[-0.1, -0.2]).set_requires_grad(true);
        let loss = policy_gradient_loss(&lp, &t(&[3.0, -1.0]));
        loss.backward();
        assert_eq!(Vec::<f32>::try_from(lp.grad()).unwrap(), vec![-1.5, 0.5]);
    }
}
