//! The preference loss of Christiano et al. 2017 (eq. 1), in its K-way form.
//!
//! A query shows K segments σ¹ … σᴷ; the model's probability that the human prefers σʲ is the
//! softmax of the segments' summed predicted rewards sⱼ = Σₜ r̂(oₜʲ, aₜʲ):
//!
//!   p̂(σʲ) = exp sⱼ / Σᵢ exp sᵢ,
//!
//! and the label is a distribution μ over the K segments ((1, 0), (0, 1) or (½, ½) for a pair;
//! one-hot or uniform for K-way). The loss is the cross-entropy
//!
//!   L = −Σⱼ μⱼ log p̂(σʲ),
//!
//! which at K = 2 is exactly −μ₁ log p̂(σ¹ ≻ σ²) − μ₂ log p̂(σ² ≻ σ¹) with
//! p̂(σ¹ ≻ σ²) = σ(s₁ − s₂), the pairwise loss. Its gradient is ∂L/∂sⱼ = p̂ⱼ · Σᵢ μᵢ − μⱼ.

/// `log Σⱼ exp sⱼ`, shifted by the maximum so that it cannot overflow.
pub fn log_sum_exp(s: &[f64]) -> f64 {
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + s.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// The model's answer probabilities p̂ⱼ = softmax(s)ⱼ.
pub fn probabilities(sums: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(sums);
    sums.iter().map(|s| (s - lse).exp()).collect()
}

/// L = −Σⱼ μⱼ log softmax(s)ⱼ, with ∂L/∂sⱼ written into `grad`.
pub fn preference_loss(sums: &[f64], mu: &[f64], grad: &mut [f64]) -> f64 {
    assert_eq!(sums.len(), mu.len(), "one μ per segment");
    assert_eq!(sums.len(), grad.len(), "one gradient per segment");
    let lse = log_sum_exp(sums);
    let total_mu: f64 = mu.iter().sum();
    let mut loss = 0.0;
    for ((s, m), g) in sums.iter().zip(mu).zip(grad.iter_mut()) {
        let log_p = s - lse;
        loss -= m * log_p;
        *g = log_p.exp() * total_mu - m;
    }
    loss
}

/// The pairwise loss written as Christiano's eq. 1, for comparison with the K-way form:
/// −μ₁ log σ(s₁ − s₂) − μ₂ log σ(s₂ − s₁).
pub fn pairwise_loss(s1: f64, s2: f64, mu: [f64; 2]) -> f64 {
    // log σ(x) = −log(1 + e^{−x}), computed stably.
    let log_sigmoid = |x: f64| -> f64 {
        if x >= 0.0 {
            -(-x).exp().ln_1p()
        } else {
            x - x.exp().ln_1p()
        }
    };
    -mu[0] * log_sigmoid(s1 - s2) - mu[1] * log_sigmoid(s2 - s1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_way_at_two_is_the_pairwise_loss() {
        for (s1, s2) in [(0.3, -1.2), (5.0, 5.0), (-40.0, 30.0), (1e-3, 0.0)] {
            for mu in [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]] {
                let mut g = [0.0; 2];
                let k = preference_loss(&[s1, s2], &mu, &mut g);
                let p = pairwise_loss(s1, s2, mu);
                assert!(
                    (k - p).abs() < 1e-12 * (1.0 + p.abs()),
                    "{s1} {s2} {mu:?}: {k} vs {p}"
                );
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences_ties_included() {
        let sums = [0.4, -0.7, 1.3];
        for mu in [vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 1.0], vec![1.0 / 3.0; 3]] {
            let mut g = [0.0; 3];
            preference_loss(&sums, &mu, &mut g);
            for j in 0..3 {
                let h = 1e-6;
                let mut up = sums;
                up[j] += h;
                let mut down = sums;
                down[j] -= h;
                let mut scratch = [0.0; 3];
                let fd = (preference_loss(&up, &mu, &mut scratch)
                    - preference_loss(&down, &mu, &mut scratch))
                    / (2.0 * h);
                assert!((fd - g[j]).abs() < 1e-7, "μ {mu:?} j {j}: {fd} vs {}", g[j]);
            }
        }
    }

    #[test]
    fn a_tie_is_minimised_by_equal_sums() {
        let mut g = [0.0; 2];
        let at_equal = preference_loss(&[2.0, 2.0], &[0.5, 0.5], &mut g);
        assert!(g.iter().all(|x| x.abs() < 1e-15));
        assert!((at_equal - std::f64::consts::LN_2).abs() < 1e-15);
        assert!(preference_loss(&[2.5, 2.0], &[0.5, 0.5], &mut g) > at_equal);
    }
}
