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
//! From samples (what runs use), N ≥ n draws from p for a prompt:
//! - **the expected score** of best-of-n (proxy or gold) is the U-statistic
//!   ([`unbiased_weights`]): the mean, over all C(N, n) subsets of n of the N draws, of the
//!   score of the subset's best, which weights the i-th lowest-rewarded draw by
//!   C(i−1, n−1)/C(N, n). Each subset is n independent draws from p, so the estimate is
//!   unbiased for any N ≥ n (Nakano et al. 2021, WebGPT, appendix; Gao et al. 2022 use it for
//!   their best-of-n curves). At n = N it is the best draw's score, at n = 1 the mean.
//! - **the KL** of best-of-n from p is the plug-in estimate ([`empirical_weights`]): the formula
//!   above applied to the empirical distribution of the N draws. It is consistent as N grows,
//!   and a test on a tiny vocabulary, where every response can be enumerated, checks it against
//!   the exact value; at finite N it depends on N (best-of-n of N equally likely draws is at most
//!   log N from them), so it is reported beside N.
//!
//! The plug-in's weights, used for the score, would be best-of-n drawn with replacement from
//! the N draws: biased low, more so as n nears N (at n = N they put only 1 − (1 − 1/N)^N ≈ 63%
//! of the weight on the best draw).

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
/// weight best-of-`n` puts on each sample (summing to 1) when it draws its n from the N with
/// replacement, and the KL of that choice from the empirical reference. Runs use the KL; for
/// an expected score these weights read low as n nears N, and [`unbiased_weights`] is used.
pub fn empirical_weights(rewards: &[f64], n: usize) -> (Vec<f64>, f64) {
    let m = rewards.len();
    assert!(m >= 1, "at least one sample");
    let uniform = vec![1.0 / m as f64; m];
    let w = exact_distribution(&uniform, rewards, n);
    let k = kl(&w, &uniform);
    (w, k)
}

/// The U-statistic's weight on each of N draws scored `rewards` (N = `rewards.len()` ≥ `n`):
/// the probability that the draw is the best of n drawn from the N without replacement,
/// C(i−1, n−1)/C(N, n) for the i-th lowest reward, with draws of equal reward sharing their
/// group's weight equally (best-of-n breaks ties uniformly). Weighting any per-draw score by
/// them gives an unbiased estimate of best-of-n's expected score.
pub fn unbiased_weights(rewards: &[f64], n: usize) -> Vec<f64> {
    let m = rewards.len();
    assert!(
        n >= 1 && n <= m,
        "best-of-n needs 1 ≤ n ≤ N, got n {n} of {m}"
    );
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| rewards[a].total_cmp(&rewards[b]));
    // By rank i (1-based): w_N = n/N and w_{i−1} = w_i·(i−n)/(i−1), 0 below rank n.
    let mut by_rank = vec![0.0f64; m];
    let mut w = n as f64 / m as f64;
    for i in (n..=m).rev() {
        by_rank[i - 1] = w;
        w *= (i - n) as f64 / (i - 1).max(1) as f64;
    }
    let mut out = vec![0.0; m];
    let mut i = 0;
    while i < m {
        let mut j = i;
        while j < m && rewards[order[j]] == rewards[order[i]] {
            j += 1;
        }
        let share = by_rank[i..j].iter().sum::<f64>() / (j - i) as f64;
        for &k in &order[i..j] {
            out[k] = share;
        }
        i = j;
    }
    out
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

    /// Every N-tuple of draws from a small distribution, with its probability.
    fn tuples(probs: &[f64], n_draws: usize) -> Vec<(Vec<usize>, f64)> {
        let mut out = vec![(Vec::new(), 1.0)];
        for _ in 0..n_draws {
            out = out
                .into_iter()
                .flat_map(|(t, q)| {
                    (0..probs.len()).map(move |k| {
                        let mut t = t.clone();
                        t.push(k);
                        (t, q * probs[k])
                    })
                })
                .collect();
        }
        out
    }

    #[test]
    fn the_u_statistic_is_unbiased_where_the_plug_in_is_not() {
        // Four responses: two share a reward but not a gold score, so ties matter.
        let p = [0.4, 0.3, 0.2, 0.1];
        let reward = [0.0, 1.0, 1.0, 2.0];
        let gold = [0.0, 5.0, -1.0, 3.0];
        for (n, n_draws) in [(1, 3), (2, 3), (3, 3), (2, 5), (4, 5), (5, 5)] {
            let exact: f64 = exact_distribution(&p, &reward, n)
                .iter()
                .zip(&gold)
                .map(|(a, b)| a * b)
                .sum();
            let (mut u, mut plug) = (0.0, 0.0);
            for (t, q) in tuples(&p, n_draws) {
                let r: Vec<f64> = t.iter().map(|&k| reward[k]).collect();
                let g: Vec<f64> = t.iter().map(|&k| gold[k]).collect();
                let w = unbiased_weights(&r, n);
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                u += q * w.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>();
                let (w, _) = empirical_weights(&r, n);
                plug += q * w.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>();
            }
            assert!(
                (u - exact).abs() < 1e-12,
                "n {n} of {n_draws}: {u} vs {exact}"
            );
            if n > 1 {
                assert!(
                    (plug - exact).abs() > 1e-3,
                    "n {n} of {n_draws}: plug-in {plug}"
                );
            }
        }
    }

    #[test]
    fn the_u_statistic_at_the_ends_is_the_mean_and_the_best() {
        let r = [0.3, -1.0, 2.5, 0.7, 1.1];
        let w1 = unbiased_weights(&r, 1);
        assert!(w1.iter().all(|&w| (w - 0.2).abs() < 1e-15));
        let w5 = unbiased_weights(&r, 5);
        assert_eq!(w5, vec![0.0, 0.0, 1.0, 0.0, 0.0]);
        // The second-best draw is the best of 4 in one subset of 5, minus the best: 1/5.
        let w4 = unbiased_weights(&r, 4);
        assert!(
            (w4[2] - 0.8).abs() < 1e-15 && (w4[4] - 0.2).abs() < 1e-15,
            "{w4:?}"
        );
        // Ties at the top share it.
        let w = unbiased_weights(&[1.0, 2.0, 2.0], 3);
        assert_eq!(w, vec![0.0, 0.5, 0.5]);
    }
}
