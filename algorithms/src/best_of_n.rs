//! Best-of-n sampling against a reward model: draw n responses from the reference p, keep the
//! one the reward model scores highest. Its distribution, exactly, when rewards are sorted into
//! groups of equal score g₁ < g₂ < … with cumulative reference mass F_g = P_p(r ≤ g) and
//! F_{g−} = P_p(r < g) (ties within a group broken uniformly at random):
//!
//! ```text
//! π_bon(y) = p(y) · (F_g^n − F_{g−}^n) / (F_g − F_{g−})      for y in group g
//! ```
//!
//! so KL(π_bon‖p) = Σ_g (F_g^n − F_{g−}^n) · log[(F_g^n − F_{g−}^n)/(F_g − F_{g−})].
//!
//! The analytic `log n − (n−1)/n` that papers quote (Stiennon et al. 2020, appendix G.3) is only
//! an upper bound (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment
//! policy"): it is reached when no two responses tie and every response has vanishing mass;
//! with ties or with mass concentrated on few responses the true KL is below it.
//!
//! From samples (what runs use): with N ≥ n draws from p for a prompt, sorted by reward, the
//! plug-in estimate applies the formula above to the empirical distribution of those N draws
//! ([`empirical_weights`]). It gives both the expected score of best-of-n (weights times scores,
//! for any score: proxy or gold) and its KL from p; it is consistent as N grows, and a test on a
//! tiny vocabulary, where every response can be enumerated, checks it against the exact value.

/// The KL bound `log n − (n−1)/n`.
pub fn kl_bound(n: usize) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// The probability that best-of-`n` picks each response of a reference distribution with
/// masses `probs` (summing to 1) and rewards `rewards`, ties broken uniformly.
pub fn exact_distribution(probs: &[f64], rewards: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(probs.len(), rewards.len(), "one reward per response");
    assert!(n >= 1, "best-of-n needs n ≥ 1");
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| rewards[a].total_cmp(&rewards[b]));
    let mut out = vec![0.0; probs.len()];
    let mut below = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && rewards[order[j]] == rewards[order[i]] {
            j += 1;
        }
        let mass: f64 = order[i..j].iter().map(|&k| probs[k]).sum();
        let upto = (below + mass).min(1.0);
        let picked = upto.powi(n as i32) - below.powi(n as i32);
        for &k in &order[i..j] {
            out[k] = if mass > 0.0 {
                picked * probs[k] / mass
            } else {
                0.0
            };
        }
        below = upto;
        i = j;
    }
    out
}

/// KL(π‖p) of two distributions over the same responses (terms with π = 0 are 0).
pub fn kl(pi: &[f64], p: &[f64]) -> f64 {
    pi.iter()
        .zip(p)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b).ln())
        .sum()
}

/// The exact KL(π_bon‖p) of best-of-`n`.
pub fn exact_kl(probs: &[f64], rewards: &[f64], n: usize) -> f64 {
    kl(&exact_distribution(probs, rewards, n), probs)
}

/// The plug-in estimate from N samples of p scored `rewards` (N = `rewards.len()` ≥ 1): the
/// weight best-of-`n` puts on each sample (summing to 1) and the KL of that choice from the
/// empirical reference. Weighting any per-sample score by the weights gives best-of-n's
/// expected score.
pub fn empirical_weights(rewards: &[f64], n: usize) -> (Vec<f64>, f64) {
    let m = rewards.len();
    assert!(m >= 1, "at least one sample");
    let uniform = vec![1.0 / m as f64; m];
    let w = exact_distribution(&uniform, rewards, n);
    let k = kl(&w, &uniform);
    (w, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_equal_one_is_the_reference_and_costs_nothing() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let r = [3.0, 1.0, 2.0, 0.0];
        let d = exact_distribution(&p, &r, 1);
        for (a, b) in d.iter().zip(&p) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!(exact_kl(&p, &r, 1).abs() < 1e-15);
        assert_eq!(kl_bound(1), 0.0);
    }

    #[test]
    fn the_distribution_sums_to_one_and_ties_share_their_mass() {
        let p = [0.25, 0.25, 0.5];
        let r = [1.0, 1.0, 0.0];
        let d = exact_distribution(&p, &r, 3);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // P(best is in the top group) = 1 − 0.5³, split evenly.
        assert!((d[0] - 0.4375).abs() < 1e-12 && (d[1] - 0.4375).abs() < 1e-12);
        assert!((d[2] - 0.125).abs() < 1e-12);
    }

    #[test]
    fn many_distinct_small_masses_approach_the_bound_from_below() {
        let m = 20_000;
        let p = vec![1.0 / m as f64; m];
        let r: Vec<f64> = (0..m).map(|i| i as f64).collect();
        for n in [2, 4, 16, 64] {
            let k = exact_kl(&p, &r, n);
            assert!(k <= kl_bound(n) + 1e-12, "n {n}: {k}");
            assert!(kl_bound(n) - k < 2e-3, "n {n}: {k} vs {}", kl_bound(n));
        }
    }
}
