//! An enumerable token MDP, the ground truth of the group estimators on text ([`crate::group`]).
//!
//! A response is a sequence over a vocabulary of `vocab` tokens that ends at the token `eos` or
//! after `max_len` tokens. The state before each token is the prefix so far; the policy is a
//! tabular softmax over the next token with a row of logits per prefix,
//! `π_θ(y_t | y_<t) = softmax(θ[prefix(y_<t), ·])(y_t)`, and the frozen reference `p` is the same
//! form with its own table. With a few tokens and a short horizon every response can be listed,
//! so the RLHF objective with a KL penalty,
//!
//! ```text
//! J_β(θ) = E_{y∼π_θ}[ s(y) − β log π_θ(y)/p(y) ]
//! ```
//!
//! (s the score, one prompt), its gradient, and the exact expectation of an estimator over every
//! group of k responses (|Y|^k of them, each with its probability) are finite sums.
//!
//! `∇J_β` is computed two independent ways: the likelihood-ratio identity
//! `Σ_y π(y) (s(y) − β log π(y)/p(y)) ∇log π(y)` (the `−β E[∇log π]` term is 0), in
//! [`objective_gradient`], and central finite differences of [`objective`].
//!
//! [`group_gradient`] is what the RL stage's first gradient step of an update ascends on one
//! group (the ratio to the sampling policy is 1 there, so the clip is inactive): the advantages
//! of [`crate::group`] (RLOO on the KL-penalised sequence reward, GRPO on the score), the token
//! weights of [`crate::group::token_weights`], and for GRPO the gradient of its KL term
//! `β Σ_t w_t k3_t`, `k3_t = p_t/π_t − log(p_t/π_t) − 1`, whose derivative in `log π_t` is
//! `1 − p_t/π_t`.

use ndarray::Array2;

use crate::group::{Weighting, grpo_advantages, rloo_advantages, token_weights};

/// The responses' tree: `vocab` tokens, `eos` among them, at most `max_len` tokens.
#[derive(Clone, Copy, Debug)]
pub struct TokenTree {
    pub vocab: usize,
    pub eos: usize,
    pub max_len: usize,
}

impl TokenTree {
    /// The prefixes at which a token is chosen: every sequence of non-`eos` tokens shorter than
    /// `max_len`, the empty one first. θ has a row for each.
    pub fn prefixes(&self) -> usize {
        (0..self.max_len)
            .map(|l| (self.vocab - 1).pow(l as u32))
            .sum()
    }

    /// The row of θ for `prefix` (non-`eos` tokens): by length, then as a base-(V − 1) number.
    fn row(&self, prefix: &[usize]) -> usize {
        let base = self.vocab - 1;
        let offset: usize = (0..prefix.len()).map(|l| base.pow(l as u32)).sum();
        let digits = prefix.iter().fold(0, |acc, &tok| {
            debug_assert_ne!(tok, self.eos);
            acc * base + if tok > self.eos { tok - 1 } else { tok }
        });
        offset + digits
    }

    /// Every complete response, in depth-first order.
    pub fn responses(&self) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let mut stack = vec![Vec::new()];
        while let Some(prefix) = stack.pop() {
            for tok in (0..self.vocab).rev() {
                let mut y = prefix.clone();
                y.push(tok);
                if tok == self.eos || y.len() == self.max_len {
                    out.push(y);
                } else {
                    stack.push(y);
                }
            }
        }
        out
    }

    /// `log π(y_t | y_<t)` for each token of `y` under the logits `theta`.
    pub fn token_log_probs(&self, theta: &Array2<f64>, y: &[usize]) -> Vec<f64> {
        (0..y.len())
            .map(|t| log_softmax(theta.row(self.row(&y[..t])).as_slice().unwrap())[y[t]])
            .collect()
    }

    /// `log π(y)`.
    pub fn log_prob(&self, theta: &Array2<f64>, y: &[usize]) -> f64 {
        self.token_log_probs(theta, y).iter().sum()
    }

    /// `∇_θ log π(y_t | y_<t)` for each token t of `y`: `e_{y_t} − π(·|y_<t)` on the prefix's row.
    pub fn token_grads(&self, theta: &Array2<f64>, y: &[usize]) -> Vec<Array2<f64>> {
        (0..y.len())
            .map(|t| {
                let row = self.row(&y[..t]);
                let lp = log_softmax(theta.row(row).as_slice().unwrap());
                let mut g = Array2::zeros(theta.dim());
                for (a, l) in lp.iter().enumerate() {
                    g[[row, a]] = f64::from(a == y[t]) - l.exp();
                }
                g
            })
            .collect()
    }

    /// `∇_θ log π(y)`.
    pub fn grad_log_prob(&self, theta: &Array2<f64>, y: &[usize]) -> Array2<f64> {
        self.token_grads(theta, y)
            .into_iter()
            .fold(Array2::zeros(theta.dim()), |acc, g| acc + g)
    }
}

fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    logits.iter().map(|l| l - lse).collect()
}

/// The problem: the tree, the reference's logits, the score and β.
pub struct Problem<'a> {
    pub tree: TokenTree,
    pub reference: &'a Array2<f64>,
    pub score: &'a dyn Fn(&[usize]) -> f64,
    pub beta: f64,
}

impl Problem<'_> {
    /// `R(y) = s(y) − β log π(y)/p(y)`.
    fn reward(&self, theta: &Array2<f64>, y: &[usize]) -> f64 {
        (self.score)(y)
            - self.beta * (self.tree.log_prob(theta, y) - self.tree.log_prob(self.reference, y))
    }
}

/// `J_β(θ)`, summed over every response.
pub fn objective(p: &Problem, theta: &Array2<f64>) -> f64 {
    p.tree
        .responses()
        .iter()
        .map(|y| p.tree.log_prob(theta, y).exp() * p.reward(theta, y))
        .sum()
}

/// `∇J_β(θ)` by the likelihood-ratio identity, summed over every response.
pub fn objective_gradient(p: &Problem, theta: &Array2<f64>) -> Array2<f64> {
    p.tree
        .responses()
        .iter()
        .fold(Array2::zeros(theta.dim()), |acc, y| {
            let w = p.tree.log_prob(theta, y).exp() * p.reward(theta, y);
            acc + p.tree.grad_log_prob(theta, y) * w
        })
}

/// `∇J_β(θ)` by central differences of [`objective`] with step `h`.
pub fn objective_gradient_fd(p: &Problem, theta: &Array2<f64>, h: f64) -> Array2<f64> {
    let mut g = Array2::zeros(theta.dim());
    for idx in ndarray::indices(theta.dim()) {
        let (mut up, mut down) = (theta.clone(), theta.clone());
        up[idx] += h;
        down[idx] -= h;
        g[idx] = (objective(p, &up) - objective(p, &down)) / (2.0 * h);
    }
    g
}

/// The group estimators of the RL stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAlgo {
    Rloo,
    Grpo,
}

/// The direction the first gradient step of an update ascends on one group of responses to
/// the same prompt (the loss's gradient, negated, at ratio 1): see the module's text.
pub fn group_gradient(
    p: &Problem,
    theta: &Array2<f64>,
    algo: GroupAlgo,
    group: &[&[usize]],
) -> Array2<f64> {
    let k = group.len();
    let lengths: Vec<usize> = group.iter().map(|y| y.len()).collect();
    let (adv, weights) = match algo {
        GroupAlgo::Rloo => {
            let r: Vec<f64> = group.iter().map(|y| p.reward(theta, y)).collect();
            (
                rloo_advantages(&r, k),
                token_weights(&lengths, Weighting::SequenceSum),
            )
        }
        GroupAlgo::Grpo => {
            let s: Vec<f64> = group.iter().map(|y| (p.score)(y)).collect();
            (
                grpo_advantages(&s, k),
                token_weights(&lengths, Weighting::SequenceMean),
            )
        }
    };
    let mut g = Array2::zeros(theta.dim());
    for (i, y) in group.iter().enumerate() {
        let grads = p.tree.token_grads(theta, y);
        let kl_terms = match algo {
            GroupAlgo::Rloo => vec![0.0; y.len()],
            GroupAlgo::Grpo => {
                let lp = p.tree.token_log_probs(theta, y);
                let lr = p.tree.token_log_probs(p.reference, y);
                lp.iter()
                    .zip(&lr)
                    .map(|(lp, lr)| 1.0 - (lr - lp).exp())
                    .collect()
            }
        };
        for (grad, kl) in grads.iter().zip(kl_terms) {
            g = g + grad * (weights[i] * (adv[i] - p.beta * kl));
        }
    }
    g
}

/// The exact expectation of [`group_gradient`] over every group of `k` responses drawn
/// independently from π_θ.
pub fn expected_group_gradient(
    p: &Problem,
    theta: &Array2<f64>,
    algo: GroupAlgo,
    k: usize,
) -> Array2<f64> {
    let ys = p.tree.responses();
    let probs: Vec<f64> = ys.iter().map(|y| p.tree.log_prob(theta, y).exp()).collect();
    let mut out = Array2::zeros(theta.dim());
    let mut idx = vec![0usize; k];
    loop {
        let prob: f64 = idx.iter().map(|&i| probs[i]).product();
        let group: Vec<&[usize]> = idx.iter().map(|&i| ys[i].as_slice()).collect();
        out = out + group_gradient(p, theta, algo, &group) * prob;
        // The next k-tuple, as a base-|Y| counter.
        let mut d = 0;
        loop {
            if d == k {
                return out;
            }
            idx[d] += 1;
            if idx[d] < ys.len() {
                break;
            }
            idx[d] = 0;
            d += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_lists_every_response_once_and_their_probabilities_sum_to_one() {
        let tree = TokenTree {
            vocab: 3,
            eos: 1,
            max_len: 3,
        };
        // Prefixes: "", 2 of length 1, 4 of length 2.
        assert_eq!(tree.prefixes(), 7);
        let ys = tree.responses();
        // [eos]; x [eos] (2 of them); then any third token after one of the 4 prefixes x x.
        assert_eq!(ys.len(), 1 + 2 + 4 * 3);
        let theta = Array2::from_shape_fn((7, 3), |(i, j)| ((i * 3 + j) as f64).sin());
        let total: f64 = ys.iter().map(|y| tree.log_prob(&theta, y).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
}
