//! The losses of a reward model learned from comparisons of K responses to one prompt, as
//! functions over tensors (autograd gives their gradients).
//!
//! - K-way (Ziegler et al. 2019, eq. 1): the human picked b among K responses,
//!   `loss = −log exp r(x, y_b) / Σ_j exp r(x, y_j)`; with a label distribution μ over the K
//!   responses (a tie spreads its mass) it is the cross-entropy `−Σ_j μ_j log softmax(r)_j`.
//! - Pairwise (Stiennon et al. 2020, eq. 1): `−log σ(r(x, y_w) − r(x, y_l))`, the K = 2 case;
//!   a tie (μ = (½, ½), Christiano et al. 2017) is `−½ log σ(d) − ½ log σ(−d)`.
//!
//! Both are means over the batch. The language-model auxiliary term of Askell et al. 2021
//! (next-token loss on the chosen response, its own coefficient) lives with the model, since it
//! needs its logits.
//!
//! [`top_share`] is a comparison's credit in held-out accuracy, a tie in the scores shared.

use tch::{Kind, Tensor};

/// `−Σ_j μ_j log softmax(scores)_j`, averaged over rows: `scores` and `mu` are `[B, K]`, each row
/// of `mu` a distribution (one-hot for a choice, spread for a tie).
pub fn kway_loss(scores: &Tensor, mu: &Tensor) -> Tensor {
    -(scores.log_softmax(-1, Kind::Float) * mu.detach())
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// `−[μ_w log σ(r_w − r_l) + (1 − μ_w) log σ(r_l − r_w)]`, averaged: `chosen` and `rejected` are
/// `[B]` scores, `mu_chosen` `[B]` the chosen response's label mass (1, or ½ for a tie).
pub fn pairwise_loss(chosen: &Tensor, rejected: &Tensor, mu_chosen: &Tensor) -> Tensor {
    let d = chosen - rejected;
    let mu = mu_chosen.detach();
    let win: Tensor = &mu * d.log_sigmoid();
    let lose: Tensor = (1.0 - &mu) * (-&d).log_sigmoid();
    -(win + lose).mean(Kind::Float)
}

/// The accuracy credit of `scores` for the response `chosen`: 1 if it alone scores highest,
/// 1/k if it shares the highest score with k − 1 others (a tie is a coin flip among them),
/// else 0 (also when its score is NaN). The held-out accuracy of the text reward model and of
/// the preference ensemble are means of it.
pub fn top_share(scores: &[f64], chosen: usize) -> f64 {
    let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if scores[chosen] < top || scores[chosen].is_nan() {
        return 0.0;
    }
    1.0 / scores.iter().filter(|&&x| x == top).count() as f64
}

#[cfg(test)]
mod tests {
    use super::top_share;

    #[test]
    fn a_tie_at_the_top_shares_the_credit() {
        assert_eq!(top_share(&[0.3, 0.1], 0), 1.0);
        assert_eq!(top_share(&[0.3, 0.1], 1), 0.0);
        assert_eq!(top_share(&[0.3, 0.3, 0.1], 1), 0.5);
        assert_eq!(top_share(&[0.2, 0.2, 0.2, 0.2], 3), 0.25);
        assert_eq!(top_share(&[0.2, 0.2, 0.5], 0), 0.0);
        assert_eq!(top_share(&[f64::NAN, 0.1], 0), 0.0);
        assert_eq!(top_share(&[0.1, f64::NAN], 0), 1.0);
    }
}
