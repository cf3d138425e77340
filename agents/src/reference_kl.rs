//! The KL penalty toward a frozen reference policy p, paid per step (`ref_kl_coef = β > 0`):
//!
//! ```text
//! R_t = r_t − β · (log π(a_t|s_t) − log p(a_t|s_t))
//! ```
//!
//! the per-step form of Ziegler et al. 2019's `R(x, y) = r(x, y) − β log π(y|x)/p(y|x)` (eq. 2),
//! with π the policy that collected the rollout and a_t ~ π. The sampled log-ratio is the k1
//! estimator of KL(π‖p): its mean over the rollout's samples is the per-step KL logged as
//! `ref_kl`. On the classic tasks the reference is the policy at the start of training, so the
//! penalty keeps the learner near its initialisation; the text environment will use the SFT
//! model. It is not PPO-KL's `kl_coef`, which penalises the move away from the policy before
//! each update.

use crate::buffer::{Rollout, flat};
use crate::nn::{Policy, Scratch};

/// The metric columns the penalty adds.
pub const COLUMNS: [&str; 2] = ["ref_kl", "ref_kl_penalty"];

/// What one application measured, over the rollout's valid samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefKl {
    /// Mean of log π(a|s) − log p(a|s) (k1, per step).
    pub kl: f64,
    /// Mean of −β · (log π − log p): what the penalty added to the reward.
    pub penalty: f64,
}

/// Subtracts `beta · (log π − log p)` from every valid reward of `rollout`, with π = `policy`
/// (the one that collected it) and p = `reference`, both evaluated by the same head maths.
pub fn apply(rollout: &mut Rollout, policy: &Policy, reference: &Policy, beta: f64) -> RefKl {
    let n = rollout.shape.len();
    let obs = flat(&rollout.obs);
    let (discrete, continuous) = (
        flat(&rollout.actions_discrete),
        flat(&rollout.actions_continuous),
    );
    let mut scratch = Scratch::default();
    let log_pi = policy.log_probs(obs, n, discrete, continuous, &mut scratch);
    let log_p = reference.log_probs(obs, n, discrete, continuous, &mut scratch);
    let (mut kl, mut penalty, mut count) = (0.0f64, 0.0f64, 0usize);
    let valid = rollout.valid.as_slice().expect("standard layout").to_vec();
    let rewards = rollout.rewards.as_slice_mut().expect("standard layout");
    for k in 0..n {
        if !valid[k] {
            continue;
        }
        let log_ratio = (log_pi[k] - log_p[k]) as f64;
        let p = -beta * log_ratio;
        rewards[k] = (rewards[k] as f64 + p) as f32;
        kl += log_ratio;
        penalty += p;
        count += 1;
    }
    let count = count.max(1) as f64;
    RefKl {
        kl: kl / count,
        penalty: penalty / count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Head;
    use crate::nn::actor_critic::ActorCritic;

    #[test]
    fn the_penalty_is_beta_times_the_log_ratio_on_valid_samples_only() {
        // One-layer categorical "networks" with zero weights: logits are the biases, so log π
        // and log p are known in closed form.
        let net = ActorCritic::new(2, Head::Categorical { n: 2 }, &[1]);
        let policy_with = |logits: [f32; 2]| {
            let mut params = vec![0.0f32; net.len];
            // The actor's output bias is its last layer's bias.
            let last = net.actor.layers.last().unwrap();
            params[last.b..last.b + 2].copy_from_slice(&logits);
            Policy::new(&net, params)
        };
        let pi = policy_with([0.0, (3.0f32).ln()]); // π = (1/4, 3/4)
        let p = policy_with([0.0, 0.0]); // p = (1/2, 1/2)
        let mut r = Rollout::new(2, 2, 2, 1, true);
        r.actions_discrete.assign(&ndarray::arr2(&[[0, 1], [1, 0]]));
        r.rewards.fill(1.0);
        r.valid[[1, 1]] = false;
        let beta = 0.5;
        let out = apply(&mut r, &pi, &p, beta);
        let lr0 = (0.25f64 / 0.5).ln(); // action 0
        let lr1 = (0.75f64 / 0.5).ln(); // action 1
        let expect = |lr: f64| (1.0 - beta * lr) as f32;
        assert!((r.rewards[[0, 0]] - expect(lr0)).abs() < 1e-6);
        assert!((r.rewards[[0, 1]] - expect(lr1)).abs() < 1e-6);
        assert!((r.rewards[[1, 0]] - expect(lr1)).abs() < 1e-6);
        assert_eq!(r.rewards[[1, 1]], 1.0, "an invalid sample is not touched");
        let kl = (lr0 + 2.0 * lr1) / 3.0;
        assert!((out.kl - kl).abs() < 1e-6, "{out:?}");
        assert!((out.penalty + beta * kl).abs() < 1e-6, "{out:?}");
        // Against itself the log-ratio is exactly 0.
        let mut r2 = Rollout::new(2, 2, 2, 1, true);
        r2.rewards.fill(1.0);
        let same = apply(&mut r2, &pi, &pi, beta);
        assert_eq!((same.kl, same.penalty), (0.0, 0.0));
        assert!(r2.rewards.iter().all(|&x| x == 1.0));
    }
}
