//! Returns and advantages over a rollout stored as `[num_steps, num_envs]` (row t holds step t
//! of every env, row-major).
//!
//! Conventions, shared by every function here:
//! - `rewards[t, i]` is the reward of the transition from step t;
//! - `dones[t, i]` is true when an episode ended on that transition (terminated *or* truncated),
//!   so nothing after it belongs to the same episode;
//! - `next_values[t, i]` is V(s_{t+1}) for the *true* next state of that transition: 0 when the
//!   episode terminated (no future), the value of the final observation when it was truncated
//!   by a time limit (the future exists, it was only cut), and the value of the next
//!   observation otherwise (including at the end of the rollout).
//!
//! Treating truncation as termination (a zero bootstrap on a time-limit cut) biases every
//! estimator here; keeping `dones` and `next_values` apart is what avoids it.
//!
//! The functions are generic over the float type ([`Real`]): training calls them with `f32`,
//! the exact-expectation tests of the estimators with `f64`.

use crate::real::Real;

/// Shape of a rollout: `num_steps` rows of `num_envs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub num_steps: usize,
    pub num_envs: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.num_steps * self.num_envs
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn check(&self, what: &str, len: usize) {
        assert_eq!(
            len,
            self.len(),
            "{what} has {len} entries for a [{} steps, {} envs] rollout",
            self.num_steps,
            self.num_envs
        );
    }
}

/// Generalised advantage estimation (Schulman, Moritz, Levine, Jordan & Abbeel 2016, eq. 16):
///
/// `δ_t = r_t + γ V(s_{t+1}) − V(s_t)`, `Â_t = Σ_l (γλ)^l δ_{t+l}`, the sum stopping at the end
/// of the episode. λ = 1 gives the Monte-Carlo return minus V (bootstrapped at the rollout's
/// end); λ = 0 gives the one-step TD residual.
///
/// Returns `(advantages, returns)` with `returns = advantages + values` (the value targets).
pub fn gae<F: Real>(
    shape: Shape,
    rewards: &[F],
    values: &[F],
    next_values: &[F],
    dones: &[bool],
    gamma: F,
    lambda: F,
) -> (Vec<F>, Vec<F>) {
    for (what, len) in [
        ("rewards", rewards.len()),
        ("values", values.len()),
        ("next_values", next_values.len()),
        ("dones", dones.len()),
    ] {
        shape.check(what, len);
    }
    let n = shape.num_envs;
    let mut advantages = vec![F::ZERO; shape.len()];
    let mut running = vec![F::ZERO; n];
    for t in (0..shape.num_steps).rev() {
        for (i, run) in running.iter_mut().enumerate() {
            let k = t * n + i;
            let delta = rewards[k] + gamma * next_values[k] - values[k];
            let carry = if dones[k] {
                F::ZERO
            } else {
                gamma * lambda * *run
            };
            *run = delta + carry;
            advantages[k] = *run;
        }
    }
    let returns = advantages
        .iter()
        .zip(values)
        .map(|(&a, &v)| a + v)
        .collect();
    (advantages, returns)
}

/// Discounted reward-to-go `G_t = Σ_{l≥0} γ^l r_{t+l}` within each episode, bootstrapped with
/// `next_values` where the rollout cuts an episode (a time limit, or the rollout's end). Pass
/// zeros as `next_values` for a pure Monte-Carlo return of complete episodes.
///
/// REINFORCE with reward-to-go (Williams 1992; the "causality" form of the policy-gradient
/// theorem, Sutton et al. 2000) weights ∇log π(a_t|s_t) by this.
pub fn reward_to_go<F: Real>(
    shape: Shape,
    rewards: &[F],
    next_values: &[F],
    dones: &[bool],
    gamma: F,
) -> Vec<F> {
    for (what, len) in [
        ("rewards", rewards.len()),
        ("next_values", next_values.len()),
        ("dones", dones.len()),
    ] {
        shape.check(what, len);
    }
    let n = shape.num_envs;
    let mut out = vec![F::ZERO; shape.len()];
    for t in (0..shape.num_steps).rev() {
        for i in 0..n {
            let k = t * n + i;
            // Within an episode the future is the next step's return; where the chain is cut
            // (a done, or the rollout's last row) it is the bootstrap value.
            let future = if dones[k] || t + 1 == shape.num_steps {
                next_values[k]
            } else {
                out[k + n]
            };
            out[k] = rewards[k] + gamma * future;
        }
    }
    out
}

/// The whole-episode return `R(τ) = Σ_t γ^t r_t`, assigned to every step of the episode (the
/// REINFORCE estimator of Williams 1992 in its original form: ∇J ≈ 1/N Σ_i R(τ_i) Σ_t ∇log π).
///
/// An episode runs from the step after a `done` (or the rollout's start) to its next `done`.
/// Only complete episodes give unbiased weights, so REINFORCE passes rollouts of complete
/// episodes; an episode that the rollout cuts (no `done` before the end) gets the bootstrapped
/// value `Σ_t γ^t r_t + γ^T next_value`, as in [`reward_to_go`].
pub fn episode_return<F: Real>(
    shape: Shape,
    rewards: &[F],
    next_values: &[F],
    dones: &[bool],
    gamma: F,
) -> Vec<F> {
    let rtg = reward_to_go(shape, rewards, next_values, dones, gamma);
    // The return of an episode is the reward-to-go at its first step.
    let n = shape.num_envs;
    let mut out = vec![F::ZERO; shape.len()];
    for i in 0..n {
        let mut start = 0;
        for t in 0..shape.num_steps {
            let k = t * n + i;
            let last = dones[k] || t + 1 == shape.num_steps;
            if last {
                let episode_return = rtg[start * n + i];
                for s in start..=t {
                    out[s * n + i] = episode_return;
                }
                start = t + 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-5, "entry {k}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    // One env, four steps, γ = 0.9, λ = 0.8, worked by hand.
    const G: f32 = 0.9;
    const L: f32 = 0.8;
    const ONE: Shape = Shape {
        num_steps: 4,
        num_envs: 1,
    };

    #[test]
    fn gae_within_one_episode_bootstraps_at_the_rollout_end() {
        let r = [1.0, 2.0, 3.0, 4.0];
        let v = [0.5, 0.6, 0.7, 0.8];
        let nv = [0.6, 0.7, 0.8, 10.0]; // V(s_4) = 10 bootstraps the cut episode
        let d = [false; 4];
        let delta: Vec<f32> = (0..4).map(|t| r[t] + G * nv[t] - v[t]).collect();
        let a3 = delta[3];
        let a2 = delta[2] + G * L * a3;
        let a1 = delta[1] + G * L * a2;
        let a0 = delta[0] + G * L * a1;
        let (adv, ret) = gae(ONE, &r, &v, &nv, &d, G, L);
        close(&adv, &[a0, a1, a2, a3]);
        close(&ret, &[a0 + 0.5, a1 + 0.6, a2 + 0.7, a3 + 0.8]);
    }

    #[test]
    fn gae_does_not_bootstrap_a_terminated_episode_nor_cross_the_boundary() {
        // Episode A = steps 0–1, terminated at 1 (next value 0); episode B = steps 2–3.
        let r = [1.0, 1.0, 1.0, 1.0];
        let v = [0.3, 0.2, 0.4, 0.5];
        let nv = [0.2, 0.0, 0.5, 2.0];
        let d = [false, true, false, false];
        let (adv, _) = gae(ONE, &r, &v, &nv, &d, G, L);
        let d1 = 1.0 - 0.2; // r + γ·0 − V(s_1)
        let d0 = 1.0 + G * 0.2 - 0.3;
        let d3 = 1.0 + G * 2.0 - 0.5;
        let d2 = 1.0 + G * 0.5 - 0.4;
        close(&adv, &[d0 + G * L * d1, d1, d2 + G * L * d3, d3]);
    }

    #[test]
    fn gae_bootstraps_a_truncated_episode_from_its_final_observation() {
        // Truncated at step 1: the value of the final observation (7.0) is the bootstrap, and
        // the advantage does not flow in from the next episode.
        let r = [1.0, 1.0, 1.0, 1.0];
        let v = [0.3, 0.2, 0.4, 0.5];
        let nv = [0.2, 7.0, 0.5, 0.6];
        let d = [false, true, false, false];
        let (adv, _) = gae(ONE, &r, &v, &nv, &d, G, L);
        let d1 = 1.0 + G * 7.0 - 0.2;
        let d0 = 1.0 + G * 0.2 - 0.3;
        assert!((adv[1] - d1).abs() < 1e-6);
        assert!((adv[0] - (d0 + G * L * d1)).abs() < 1e-6);
        // Treating the cut as termination would give a different, biased, answer.
        let nv_wrong = [0.2, 0.0, 0.5, 0.6];
        let (wrong, _) = gae(ONE, &r, &v, &nv_wrong, &d, G, L);
        assert!((wrong[1] - adv[1]).abs() > 6.0);
    }

    #[test]
    fn gae_keeps_envs_apart() {
        // Two envs interleaved row-major; env 1 terminates at step 0.
        let shape = Shape {
            num_steps: 2,
            num_envs: 2,
        };
        let r = [1.0, 5.0, 1.0, 1.0];
        let v = [0.0; 4];
        let nv = [0.0, 0.0, 0.0, 0.0];
        let d = [false, true, false, false];
        let (adv, _) = gae(shape, &r, &v, &nv, &d, G, 1.0);
        close(&adv, &[1.0 + G * 1.0, 5.0, 1.0, 1.0]);
    }

    #[test]
    fn lambda_one_is_monte_carlo_minus_value_and_lambda_zero_is_td() {
        let r = [1.0, 2.0, 3.0, 4.0];
        let v = [0.5, 0.6, 0.7, 0.8];
        let nv = [0.6, 0.7, 0.8, 0.0];
        let d = [false, false, false, true];
        let (mc, _) = gae(ONE, &r, &v, &nv, &d, G, 1.0);
        let rtg = reward_to_go(ONE, &r, &[0.0; 4], &d, G);
        close(
            &mc,
            &rtg.iter().zip(&v).map(|(g, v)| g - v).collect::<Vec<_>>(),
        );
        let (td, _) = gae(ONE, &r, &v, &nv, &d, G, 0.0);
        close(
            &td,
            &(0..4).map(|t| r[t] + G * nv[t] - v[t]).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn reward_to_go_bootstraps_only_where_the_chain_is_cut() {
        // next_values hold V(s_{t+1}) at every step (the module's convention); only the cut at
        // the rollout's end (5.0) and the truncation at step 1 (7.0) may enter the return.
        let r = [1.0, 1.0, 1.0, 1.0];
        let nv = [0.5, 7.0, 0.5, 5.0];
        let d = [false, true, false, false];
        let rtg = reward_to_go(ONE, &r, &nv, &d, G);
        close(
            &rtg,
            &[
                1.0 + G * (1.0 + G * 7.0),
                1.0 + G * 7.0,
                1.0 + G * (1.0 + G * 5.0),
                1.0 + G * 5.0,
            ],
        );
    }

    #[test]
    fn episode_return_assigns_each_episode_its_discounted_return() {
        let r = [1.0, 2.0, 3.0, 4.0];
        let d = [false, true, false, true];
        let er = episode_return(ONE, &r, &[0.0; 4], &d, G);
        let first = 1.0 + G * 2.0;
        let second = 3.0 + G * 4.0;
        close(&er, &[first, first, second, second]);
        let rtg = reward_to_go(ONE, &r, &[0.0; 4], &d, G);
        close(&rtg, &[first, 2.0, second, 4.0]);
    }
}
