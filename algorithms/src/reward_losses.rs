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

/// The fraction of rows whose highest score is the response the label puts most mass on (rows
/// with a tie, no single mode, are left out; NaN when none is left).
pub fn accuracy(scores: &Tensor, mu: &Tensor) -> f64 {
    let (top, _) = mu.max_dim(-1, false);
    let single = mu
        .eq_tensor(&top.unsqueeze(-1))
        .sum_dim_intlist(-1, false, Kind::Int64)
        .eq(1);
    let hit = scores.argmax(-1, false).eq_tensor(&mu.argmax(-1, false));
    let n = single.sum(Kind::Int64).int64_value(&[]);
    if n == 0 {
        return f64::NAN;
    }
    (hit.logical_and(&single)).sum(Kind::Int64).int64_value(&[]) as f64 / n as f64
}
