//! Group-relative advantages on text: `k` responses are sampled for each prompt, and each
//! response's advantage is taken against the others of its group instead of against a learned
//! value function. A batch is laid out group by group: rows `g·k … g·k + k − 1` answer prompt `g`.
//!
//! - **RLOO**, REINFORCE with a leave-one-out baseline (Kool, van Hoof & Welling 2019, "Buy 4
//!   REINFORCE samples, get a baseline for free!"; Ahmadian et al. 2024, "Back to basics"):
//!   `A_i = R_i − 1/(k−1) Σ_{j≠i} R_j`, with `R_i = r(x, y_i) − β log π(y_i|x)/p(y_i|x)` the
//!   whole sequence's KL-penalised reward. The baseline of response i is made of the other
//!   responses only, which are independent of `y_i`, so the estimator
//!   `1/B Σ_i A_i ∇log π(y_i|x)` is unbiased for `∇ E[R]`.
//! - **GRPO** (Shao et al. 2024, DeepSeekMath, section 4.1.2, outcome supervision):
//!   `A_i = (r_i − mean_j r_j) / (std_j r_j + ε)` on the reward model's score alone (GRPO puts
//!   the KL to the reference in the loss instead), the standard deviation over the group with
//!   `k − 1` in its denominator and ε = 1e-4, as TRL's `GRPOTrainer` computes them. A group whose
//!   scores are all equal has advantage 0 everywhere. This is not unbiased: the division by the
//!   group's own spread couples the responses, and the loss averages each sequence's tokens
//!   ([`Weighting::SequenceMean`]), the two biases Liu et al. 2025 ("Understanding R1-Zero-like
//!   training", Dr. GRPO) name. (That the mean includes response i itself only scales the
//!   unbiased step by (k − 1)/k.)
//!   `algorithms/src/token_mdp.rs` measures both estimators' expectations exactly.
//!
//! How a loss weighs each response token ([`token_weights`]), B the sequences of the
//! (mini)batch and `|y_i|` the length of response i:
//! - [`Weighting::SequenceSum`] (RLOO): `1/B` on every token, so that at ratio 1 the loss's
//!   gradient is `−1/B Σ_i A_i Σ_t ∇log π(y_{i,t}|x, y_{i,<t})`, the sequence's log-probability
//!   being the sum of its tokens';
//! - [`Weighting::SequenceMean`] (GRPO, Shao et al.'s equation 3): `1/(B·|y_i|)`, a mean over each
//!   sequence's tokens and then over the sequences.

/// GRPO's ε in the denominator, as TRL's `GRPOTrainer` adds it (1e-4).
pub const GRPO_STD_EPS: f64 = 1e-4;

/// How a loss weighs the tokens of a response; see the module's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// `1/B` per token: the sum over the sequence, the mean over sequences (RLOO).
    SequenceSum,
    /// `1/(B·|y_i|)` per token: the mean over the sequence, then over sequences (GRPO).
    SequenceMean,
}

fn check_groups(rewards: &[f64], k: usize) {
    assert!(k >= 2, "a group needs at least 2 responses, got k = {k}");
    assert!(
        rewards.len() % k == 0,
        "{} rewards do not split into groups of {k}",
        rewards.len()
    );
}

/// RLOO's advantages `A_i = R_i − 1/(k−1) Σ_{j≠i} R_j` of `rewards`, groups of `k` in order.
pub fn rloo_advantages(rewards: &[f64], k: usize) -> Vec<f64> {
    check_groups(rewards, k);
    rewards
        .chunks_exact(k)
        .flat_map(|g| {
            let sum: f64 = g.iter().sum();
            g.iter().map(move |&r| r - (sum - r) / (k - 1) as f64)
        })
        .collect()
}

/// The mean and the standard deviation (denominator `n − 1`) of one group, or of any values.
pub fn group_mean_std(group: &[f64]) -> (f64, f64) {
    let k = group.len() as f64;
    let mean = group.iter().sum::<f64>() / k;
    let ss: f64 = group.iter().map(|r| (r - mean).powi(2)).sum();
    (mean, (ss / (k - 1.0)).sqrt())
}

/// GRPO's advantages `(r_i − mean r)/(std r + ε)` of `scores`, groups of `k` in order.
pub fn grpo_advantages(scores: &[f64], k: usize) -> Vec<f64> {
    check_groups(scores, k);
    scores
        .chunks_exact(k)
        .flat_map(|g| {
            let (mean, std) = group_mean_std(g);
            g.iter().map(move |&r| (r - mean) / (std + GRPO_STD_EPS))
        })
        .collect()
}

/// GRPO's advantages without the division, `r_i − mean r` (Liu et al. 2025's Dr. GRPO; TRL's
/// `scale_rewards = "none"`): (k − 1)/k times RLOO's on the same values.
pub fn centred_advantages(scores: &[f64], k: usize) -> Vec<f64> {
    check_groups(scores, k);
    scores
        .chunks_exact(k)
        .flat_map(|g| {
            let mean = g.iter().sum::<f64>() / k as f64;
            g.iter().map(move |&r| r - mean)
        })
        .collect()
}

/// Per group statistics for the metrics: the mean of the groups' standard deviations, and the
/// share of groups whose rewards are all equal (TRL `GRPOTrainer`'s `reward_std` and
/// `frac_reward_zero_std`). A group of equal scores adds no advantage term to GRPO's step
/// (only its KL term, when β > 0).
pub fn group_spread(rewards: &[f64], k: usize) -> (f64, f64) {
    check_groups(rewards, k);
    let groups = rewards.len() / k;
    let (mut std_sum, mut flat) = (0.0, 0usize);
    for g in rewards.chunks_exact(k) {
        let (_, std) = group_mean_std(g);
        std_sum += std;
        if g.iter().all(|&r| r == g[0]) {
            flat += 1;
        }
    }
    (std_sum / groups as f64, flat as f64 / groups as f64)
}

/// The weight of each token of each sequence (one value per sequence, the same for all its
/// tokens), for sequences of `lengths` response tokens: see [`Weighting`].
pub fn token_weights(lengths: &[usize], weighting: Weighting) -> Vec<f64> {
    let b = lengths.len() as f64;
    lengths
        .iter()
        .map(|&n| {
            assert!(n >= 1, "a response has at least one token");
            match weighting {
                Weighting::SequenceSum => 1.0 / b,
                Weighting::SequenceMean => 1.0 / (b * n as f64),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rloo_is_each_reward_less_the_mean_of_the_others() {
        let a = rloo_advantages(&[1.0, 2.0, 6.0, 0.0, 0.0, 3.0], 3);
        // Group 1: 1 − 4, 2 − 3.5, 6 − 1.5; group 2: 0 − 1.5, 0 − 1.5, 3 − 0.
        assert_eq!(a, vec![-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]);
        // k/(k−1) times the centred reward, so each group's advantages sum to 0.
        assert!(a[..3].iter().sum::<f64>().abs() < 1e-12);
    }

    #[test]
    fn grpo_standardises_within_each_group_and_a_flat_group_gets_zero() {
        let a = grpo_advantages(&[1.0, 3.0, 5.0, 5.0], 2);
        let s = 2f64.sqrt(); // std of (1, 3) with k − 1: √2
        assert!((a[0] + 1.0 / (s + GRPO_STD_EPS)).abs() < 1e-12);
        assert!((a[1] - 1.0 / (s + GRPO_STD_EPS)).abs() < 1e-12);
        assert_eq!(&a[2..], &[0.0, 0.0]);
        assert_eq!(
            centred_advantages(&[1.0, 3.0, 5.0, 5.0], 2),
            vec![-1.0, 1.0, 0.0, 0.0]
        );
        let (std, flat) = group_spread(&[1.0, 3.0, 5.0, 5.0], 2);
        assert!((std - s / 2.0).abs() < 1e-12);
        assert_eq!(flat, 0.5);
    }

    #[test]
    fn weights_sum_or_average_each_sequence() {
        let lengths = [1, 4];
        assert_eq!(
            token_weights(&lengths, Weighting::SequenceSum),
            vec![0.5, 0.5]
        );
        let w = token_weights(&lengths, Weighting::SequenceMean);
        assert_eq!(w, vec![0.5, 0.125]);
        // Mean: every sequence's tokens weigh 1/B together.
        assert_eq!(w[0] * 1.0, w[1] * 4.0);
    }

    #[test]
    #[should_panic(expected = "do not split into groups of 3")]
    fn a_batch_that_is_not_whole_groups_is_refused() {
        rloo_advantages(&[1.0, 2.0, 3.0, 4.0], 3);
    }
}
