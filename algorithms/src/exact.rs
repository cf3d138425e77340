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
//!
//! [`TabularMdp::trajectories`] lists every trajectory with its probability under a policy,
//! for the exact expectations of the estimators ([`crate::study::expectation_by_enumeration`]).

use ndarray::{Array1, Array2, Array3, ArrayView1, Zip, s};

/// A finite-horizon tabular MDP.
#[derive(Clone, Debug, PartialEq)]
pub struct TabularMdp {
    pub horizon: usize,
    pub gamma: f64,
    /// `P[s, a, s']`, each `P[s, a, ·]` sums to 1.
    pub transitions: Array3<f64>,
    /// `R[s, a]`
    pub rewards: Array2<f64>,
    /// `μ[s]`, sums to 1.
    pub start: Array1<f64>,
}

/// `J(θ)` and `∇J(θ)` (`[S, A]`, the shape of θ).
#[derive(Clone, Debug, PartialEq)]
pub struct Exact {
    pub objective: f64,
    pub gradient: Array2<f64>,
}

/// Time-indexed exact quantities under a policy.
#[derive(Clone, Debug)]
pub struct Tables {
    /// `d[t, s]`, the state distribution at step t, `[H, S]`.
    pub d: Array2<f64>,
    /// `Q[t, s, a]`, `[H, S, A]`.
    pub q: Array3<f64>,
    /// `V[t, s]`, `[H + 1, S]` (`V[H, ·] = 0`).
    pub v: Array2<f64>,
}

/// One trajectory of an MDP under a policy: `s_t` and `a_t` for t < H, and its probability
/// `μ(s_0) Π_t π(a_t|s_t) Π_{t<H−1} P(s_{t+1}|s_t, a_t)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Trajectory {
    pub probability: f64,
    pub states: Vec<usize>,
    pub actions: Vec<usize>,
}

/// The softmax policy `π[s, a]` of `theta` (`[S, A]`), row by row.
pub fn softmax_policy(theta: &Array2<f64>) -> Array2<f64> {
    let mut pi = theta.clone();
    for mut row in pi.rows_mut() {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.mapv_inplace(|x| (x - max).exp());
        let sum: f64 = row.iter().sum();
        row.mapv_inplace(|e| e / sum);
    }
    pi
}

impl TabularMdp {
    /// Checks that the shapes agree (`P` is `[S, A, S]`, `R` is `[S, A]`, `μ` is `[S]`).
    pub fn new(
        horizon: usize,
        gamma: f64,
        transitions: Array3<f64>,
        rewards: Array2<f64>,
        start: Array1<f64>,
    ) -> Self {
        let (ns, na) = rewards.dim();
        assert_eq!(transitions.dim(), (ns, na, ns), "P must be [S, A, S]");
        assert_eq!(start.len(), ns, "μ must be [S]");
        assert!(horizon >= 1, "the horizon must be at least 1");
        Self {
            horizon,
            gamma,
            transitions,
            rewards,
            start,
        }
    }

    pub fn states(&self) -> usize {
        self.start.len()
    }

    pub fn actions(&self) -> usize {
        self.rewards.ncols()
    }

    /// `P[s, a, ·]`.
    pub fn next_states(&self, s: usize, a: usize) -> ArrayView1<'_, f64> {
        self.transitions.slice(s![s, a, ..])
    }

    /// `d_t`, `Q_t`, `V_t` under `policy` (`[S, A]` probabilities).
    pub fn tables(&self, policy: &Array2<f64>) -> Tables {
        let (ns, na, h) = (self.states(), self.actions(), self.horizon);
        let mut d = Array2::zeros((h, ns));
        d.row_mut(0).assign(&self.start);
        for t in 1..h {
            for s in 0..ns {
                for a in 0..na {
                    let w = d[[t - 1, s]] * policy[[s, a]];
                    for s2 in 0..ns {
                        d[[t, s2]] += w * self.transitions[[s, a, s2]];
                    }
                }
            }
        }
        let mut q = Array3::zeros((h, ns, na));
        let mut v = Array2::zeros((h + 1, ns));
        for t in (0..h).rev() {
            for s in 0..ns {
                for a in 0..na {
                    let future: f64 = self
                        .next_states(s, a)
                        .iter()
                        .zip(v.row(t + 1))
                        .map(|(p, v)| p * v)
                        .sum();
                    q[[t, s, a]] = self.rewards[[s, a]] + self.gamma * future;
                }
                v[[t, s]] = (0..na).map(|a| policy[[s, a]] * q[[t, s, a]]).sum();
            }
        }
        Tables { d, q, v }
    }

    /// `J` and `∇J` by the policy-gradient theorem with exact `d_t` and `Q_t`.
    pub fn policy_gradient_theorem(&self, theta: &Array2<f64>) -> Exact {
        let (ns, na) = (self.states(), self.actions());
        let pi = softmax_policy(theta);
        let tables = self.tables(&pi);
        let mut gradient = Array2::zeros((ns, na));
        for t in 0..self.horizon {
            let discount = self.gamma.powi(t as i32);
            for s in 0..ns {
                let weight = discount * tables.d[[t, s]];
                // ∂π(a|s)/∂θ[s, b] = π(a|s)(1[a = b] − π(b|s))
                for b in 0..na {
                    let mut g = 0.0;
                    for a in 0..na {
                        let indicator = if a == b { 1.0 } else { 0.0 };
                        g += pi[[s, a]] * (indicator - pi[[s, b]]) * tables.q[[t, s, a]];
                    }
                    gradient[[s, b]] += weight * g;
                }
            }
        }
        let objective = self
            .start
            .iter()
            .zip(tables.v.row(0))
            .map(|(m, v)| m * v)
            .sum();
        Exact {
            objective,
            gradient,
        }
    }

    /// `J` and `∇J` by summing over all `(S·A)^H` trajectories.
    pub fn enumerate(&self, theta: &Array2<f64>) -> Exact {
        let pi = softmax_policy(theta);
        let mut exact = Exact {
            objective: 0.0,
            gradient: Array2::zeros(theta.raw_dim()),
        };
        // The score Σ_t ∇log π(a_t|s_t) accumulates along the path.
        let mut score = Array2::zeros(theta.raw_dim());
        for s in 0..self.states() {
            if self.start[s] > 0.0 {
                self.walk(&pi, 0, s, self.start[s], 0.0, &mut score, &mut exact);
            }
        }
        exact
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        pi: &Array2<f64>,
        t: usize,
        s: usize,
        prob: f64,
        ret: f64,
        score: &mut Array2<f64>,
        out: &mut Exact,
    ) {
        let na = self.actions();
        for a in 0..na {
            let p = prob * pi[[s, a]];
            if p == 0.0 {
                continue;
            }
            let ret = ret + self.gamma.powi(t as i32) * self.rewards[[s, a]];
            // ∂log π(a|s)/∂θ[s, b] = 1[a = b] − π(b|s)
            for b in 0..na {
                score[[s, b]] += if a == b { 1.0 } else { 0.0 } - pi[[s, b]];
            }
            if t + 1 == self.horizon {
                out.objective += p * ret;
                Zip::from(&mut out.gradient)
                    .and(&*score)
                    .for_each(|g, sc| *g += p * ret * sc);
            } else {
                for s2 in 0..self.states() {
                    let p2 = p * self.transitions[[s, a, s2]];
                    if p2 > 0.0 {
                        self.walk(pi, t + 1, s2, p2, ret, score, out);
                    }
                }
            }
            for b in 0..na {
                score[[s, b]] -= if a == b { 1.0 } else { 0.0 } - pi[[s, b]];
            }
        }
    }

    /// `J(θ)` alone (policy evaluation).
    pub fn objective(&self, theta: &Array2<f64>) -> f64 {
        let tables = self.tables(&softmax_policy(theta));
        self.start
            .iter()
            .zip(tables.v.row(0))
            .map(|(m, v)| m * v)
            .sum()
    }

    /// Every trajectory of positive probability under `policy` (`[S, A]` probabilities), in
    /// lexicographic order of `(s_0, a_0, s_1, a_1, …)`: at most `(S·A)^H` of them.
    pub fn trajectories(&self, policy: &Array2<f64>) -> Vec<Trajectory> {
        let mut out = Vec::new();
        let mut path = Trajectory {
            probability: 1.0,
            states: Vec::with_capacity(self.horizon),
            actions: Vec::with_capacity(self.horizon),
        };
        for s in 0..self.states() {
            if self.start[s] > 0.0 {
                self.extend(policy, s, self.start[s], &mut path, &mut out);
            }
        }
        out
    }

    fn extend(
        &self,
        policy: &Array2<f64>,
        s: usize,
        prob: f64,
        path: &mut Trajectory,
        out: &mut Vec<Trajectory>,
    ) {
        path.states.push(s);
        for a in 0..self.actions() {
            let p = prob * policy[[s, a]];
            if p == 0.0 {
                continue;
            }
            path.actions.push(a);
            if path.states.len() == self.horizon {
                out.push(Trajectory {
                    probability: p,
                    ..path.clone()
                });
            } else {
                for (s2, &next) in self.next_states(s, a).iter().enumerate() {
                    if next > 0.0 {
                        self.extend(policy, s2, p * next, path, out);
                    }
                }
            }
            path.actions.pop();
        }
        path.states.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// A one-step, one-state bandit: J = Σ π(a) r(a), ∇J_b = π(b)(r(b) − J).
    #[test]
    fn bandit_gradient_by_hand() {
        let mdp = TabularMdp::new(
            1,
            1.0,
            Array3::ones((1, 2, 1)),
            array![[1.0, 3.0]],
            array![1.0],
        );
        let theta = array![[0.0, (3.0f64).ln()]]; // π = (0.25, 0.75)
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
