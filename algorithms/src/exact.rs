//! Exact objectives and gradients on small finite-horizon tabular MDPs, the ground truth
//! against which the estimators are tested.
//!
//! The MDP: states `0..S`, actions `0..A`, horizon H (steps t = 0..H−1), transitions
//! `P[s, a, s']`, expected rewards `R[s, a]`, start distribution `μ[s]`, discount γ. The policy
//! is a tabular softmax `π_θ(a|s) = softmax(θ[s, ·])(a)`, and the objective is
//! `J(θ) = E[Σ_{t<H} γ^t r_t]`. Everything is f64.
//!
//! `J` and `∇J` are computed two independent ways:
//! - [`TabularMdp::enumerate`] sums over every trajectory: `J = Σ_τ p(τ) G(τ)` and
//!   `∇J = Σ_τ p(τ) G(τ) Σ_t ∇log π(a_t|s_t)` (the likelihood-ratio identity of Williams 1992);
//! - [`TabularMdp::policy_gradient_theorem`] uses the state distributions d_t and action values
//!   Q_t by dynamic programming: `∇J = Σ_t γ^t Σ_s d_t(s) Σ_a ∇π(a|s) Q_t(s, a)` (Sutton,
//!   McAllester, Singh & Mansour 2000, for the finite-horizon, time-indexed case).

use std::f64;

/// A finite-horizon tabular MDP.
#[derive(Clone, Debug, PartialEq)]
pub struct TabularMdp {
    pub states: usize,
    pub actions: usize,
    pub horizon: usize,
    pub gamma: f64,
    /// `[S, A, S]`, rows sum to 1.
    pub transitions: Vec<f64>,
    /// `[S, A]`
    pub rewards: Vec<f64>,
    /// `[S]`, sums to 1.
    pub start: Vec<f64>,
}

/// `J(θ)` and `∇J(θ)` (`[S, A]`, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Exact {
    pub objective: f64,
    pub gradient: Vec<f64>,
}

/// Time-indexed exact quantities under a policy: `d[t][s]`, `q[t][s * A + a]`, `v[t][s]`.
#[derive(Clone, Debug)]
pub struct Tables {
    pub d: Vec<Vec<f64>>,
    pub q: Vec<Vec<f64>>,
    pub v: Vec<Vec<f64>>,
}

/// The softmax policy of `theta` (`[S, A]`), row by row.
pub fn softmax_policy(theta: &[f64], actions: usize) -> Vec<f64> {
    theta
        .chunks(actions)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

impl TabularMdp {
    fn p(&self, s: usize, a: usize, next: usize) -> f64 {
        self.transitions[(s * self.actions + a) * self.states + next]
    }

    /// `d_t`, `Q_t`, `V_t` under `policy` (`[S, A]` probabilities).
    pub fn tables(&self, policy: &[f64]) -> Tables {
        let (ns, na, h) = (self.states, self.actions, self.horizon);
        let mut d = vec![self.start.clone()];
        for t in 1..h {
            let mut next = vec![0.0; ns];
            for s in 0..ns {
                for a in 0..na {
                    let w = d[t - 1][s] * policy[s * na + a];
                    for (s2, n) in next.iter_mut().enumerate() {
                        *n += w * self.p(s, a, s2);
                    }
                }
            }
            d.push(next);
        }
        let mut q = vec![vec![0.0; ns * na]; h];
        let mut v = vec![vec![0.0; ns]; h + 1];
        for t in (0..h).rev() {
            for s in 0..ns {
                for a in 0..na {
                    let future: f64 = (0..ns).map(|s2| self.p(s, a, s2) * v[t + 1][s2]).sum();
                    q[t][s * na + a] = self.rewards[s * na + a] + self.gamma * future;
                }
                v[t][s] = (0..na).map(|a| policy[s * na + a] * q[t][s * na + a]).sum();
            }
        }
        Tables { d, q, v }
    }

    /// `J` and `∇J` by the policy-gradient theorem with exact `d_t` and `Q_t`.
    pub fn policy_gradient_theorem(&self, theta: &[f64]) -> Exact {
        let (ns, na) = (self.states, self.actions);
        let pi = softmax_policy(theta, na);
        let tables = self.tables(&pi);
        let mut gradient = vec![0.0; ns * na];
        for t in 0..self.horizon {
            let discount = self.gamma.powi(t as i32);
            for s in 0..ns {
                let weight = discount * tables.d[t][s];
                // ∂π(a|s)/∂θ[s, b] = π(a|s)(1[a = b] − π(b|s))
                for b in 0..na {
                    let mut g = 0.0;
                    for a in 0..na {
                        let indicator = if a == b { 1.0 } else { 0.0 };
                        g +=
                            pi[s * na + a] * (indicator - pi[s * na + b]) * tables.q[t][s * na + a];
                    }
                    gradient[s * na + b] += weight * g;
                }
            }
        }
        let objective = (0..ns).map(|s| self.start[s] * tables.v[0][s]).sum();
        Exact {
            objective,
            gradient,
        }
    }

    /// `J` and `∇J` by summing over all `(S·A)^H` trajectories.
    pub fn enumerate(&self, theta: &[f64]) -> Exact {
        let pi = softmax_policy(theta, self.actions);
        let mut exact = Exact {
            objective: 0.0,
            gradient: vec![0.0; theta.len()],
        };
        // The score Σ_t ∇log π(a_t|s_t) accumulates along the path.
        let mut score = vec![0.0; theta.len()];
        for s in 0..self.states {
            if self.start[s] > 0.0 {
                self.walk(&pi, 0, s, self.start[s], 0.0, &mut score, &mut exact);
            }
        }
        exact
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        pi: &[f64],
        t: usize,
        s: usize,
        prob: f64,
        ret: f64,
        score: &mut [f64],
        out: &mut Exact,
    ) {
        let na = self.actions;
        for a in 0..na {
            let p = prob * pi[s * na + a];
            if p == 0.0 {
                continue;
            }
            let ret = ret + self.gamma.powi(t as i32) * self.rewards[s * na + a];
            // ∂log π(a|s)/∂θ[s, b] = 1[a = b] − π(b|s)
            for b in 0..na {
                score[s * na + b] += if a == b { 1.0 } else { 0.0 } - pi[s * na + b];
            }
            if t + 1 == self.horizon {
                out.objective += p * ret;
                for (g, sc) in out.gradient.iter_mut().zip(score.iter()) {
                    *g += p * ret * sc;
                }
            } else {
                for s2 in 0..self.states {
                    let p2 = p * self.p(s, a, s2);
                    if p2 > 0.0 {
                        self.walk(pi, t + 1, s2, p2, ret, score, out);
                    }
                }
            }
            for b in 0..na {
                score[s * na + b] -= if a == b { 1.0 } else { 0.0 } - pi[s * na + b];
            }
        }
    }

    /// `J(θ)` alone (policy evaluation).
    pub fn objective(&self, theta: &[f64]) -> f64 {
        let pi = softmax_policy(theta, self.actions);
        let tables = self.tables(&pi);
        (0..self.states)
            .map(|s| self.start[s] * tables.v[0][s])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-step, one-state bandit: J = Σ π(a) r(a), ∇J_b = π(b)(r(b) − J).
    #[test]
    fn bandit_gradient_by_hand() {
        let mdp = TabularMdp {
            states: 1,
            actions: 2,
            horizon: 1,
            gamma: 1.0,
            transitions: vec![1.0, 1.0],
            rewards: vec![1.0, 3.0],
            start: vec![1.0],
        };
        let theta = [0.0, (3.0f64).ln()]; // π = (0.25, 0.75)
        let j = 0.25 * 1.0 + 0.75 * 3.0;
        let expected = [0.25 * (1.0 - j), 0.75 * (3.0 - j)];
        for exact in [mdp.enumerate(&theta), mdp.policy_gradient_theorem(&theta)] {
            assert!((exact.objective - j).abs() < 1e-12);
            for (g, e) in exact.gradient.iter().zip(expected) {
                assert!((g - e).abs() < 1e-12, "{:?}", exact.gradient);
            }
        }
    }
}
