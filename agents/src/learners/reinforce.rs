//! REINFORCE (Williams 1992): `∇J ≈ 1/N Σ_i Σ_t Ψ_t ∇log π(a_t|s_t)` over N complete episodes,
//! with Ψ_t the whole return R(τ_i) (`reinforce_return = "total"`) or the reward-to-go
//! G_t = Σ_{l≥t} γ^{l−t} r_l (`"reward_to_go"`), minus a learned baseline V(s_t) when
//! `baseline = true` (the critic is fitted to the same returns by ½ mean((V − G)²)).
//!
//! The rollout holds one complete episode per env, started fresh for each update, so every
//! weight is an unbiased Monte-Carlo estimate of the return of the episodes the environment
//! delivers (its time limit included: an episode cut at the limit is scored as it ended, with
//! nothing bootstrapped). One gradient step per batch of episodes.

use gradgym_algorithms::advantages::{episode_return, reward_to_go};
use gradgym_envs::rng::Stream;

use super::{Coefficients, Learner, UpdateStats, explained_variance, gather, minibatch};
use crate::backend::{Backend, PolicyLoss, ValueLoss};
use crate::buffer::{Rollout, flat};
use crate::config::{ReturnKind, TrainConfig};
use crate::error::NonFiniteLoss;

pub struct Reinforce {
    gamma: f32,
    returns: ReturnKind,
    baseline: bool,
    norm_adv: bool,
    coefficients: Coefficients,
}

impl Reinforce {
    pub fn new(c: &TrainConfig) -> Self {
        Self {
            gamma: c.gamma as f32,
            returns: c.reinforce_return,
            baseline: c.baseline,
            norm_adv: c.norm_adv,
            coefficients: Coefficients {
                ent_coef: c.ent_coef,
                vf_coef: c.vf_coef,
                max_grad_norm: c.max_grad_norm,
            },
        }
    }
}

impl Learner for Reinforce {
    fn episodic(&self) -> bool {
        true
    }

    fn update(
        &mut self,
        model: &mut dyn Backend,
        r: &Rollout,
        _rng: &mut Stream,
    ) -> Result<UpdateStats, NonFiniteLoss> {
        // Pure Monte-Carlo: nothing is bootstrapped, so the next values are all zero.
        let zeros = vec![0.0f32; r.shape.len()];
        let weights_all = match self.returns {
            ReturnKind::Total => episode_return(
                r.shape,
                flat(&r.rewards),
                &zeros,
                flat(&r.dones),
                self.gamma,
            ),
            ReturnKind::RewardToGo => reward_to_go(
                r.shape,
                flat(&r.rewards),
                &zeros,
                flat(&r.dones),
                self.gamma,
            ),
        };
        let valid = r.valid_indices();
        let weights = gather(&weights_all, &valid, 1);
        // Ψ = G − V(s) with V from the step's own forward pass (a constant in the loss).
        let value = if self.baseline {
            ValueLoss::Squared
        } else {
            ValueLoss::None
        };
        let objective =
            self.coefficients
                .objective(PolicyLoss::Gradient, value, self.baseline, self.norm_adv);
        let report = model.step(
            &minibatch(r, &valid, &weights_all, &weights_all),
            &objective,
            0,
        )?;
        let values = gather(flat(&r.values), &valid, 1);
        Ok(UpdateStats {
            policy_loss: report.policy_loss,
            value_loss: report.value_loss,
            entropy: report.entropy,
            explained_variance: if self.baseline {
                explained_variance(&values, &weights)
            } else {
                0.0
            },
            gradient_steps: 1,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algo;
    use crate::learners::recorder::Recorder;
    use gradgym_envs::rng;
    use ndarray::arr2;

    /// The weights of one update on an episode of rewards (1, 2, 4) ending at t = 2, with an
    /// unused row after it (as the collector leaves it), γ = 0.5.
    fn weights(returns: ReturnKind) -> Vec<f32> {
        let mut r = Rollout::new(4, 1, 2, 1, true);
        r.rewards.assign(&arr2(&[[1.0], [2.0], [4.0], [0.0]]));
        r.dones.assign(&arr2(&[[false], [false], [true], [true]]));
        r.valid.assign(&arr2(&[[true], [true], [true], [false]]));
        let mut reinforce = Reinforce::new(&TrainConfig {
            algo: Algo::Reinforce,
            gamma: 0.5,
            reinforce_return: returns,
            ..TrainConfig::default()
        });
        let mut backend = Recorder::default();
        reinforce
            .update(&mut backend, &r, &mut rng::stream(0, "minibatch", 0))
            .unwrap();
        assert_eq!(backend.steps.len(), 1);
        let (batch, objective) = &backend.steps[0];
        assert_eq!(batch.len, 3, "only the valid samples enter the update");
        assert_eq!(
            batch.returns, batch.weights,
            "the baseline is fitted to the weights"
        );
        assert!(objective.baseline && objective.value == ValueLoss::Squared);
        batch.weights.clone()
    }

    #[test]
    fn the_weights_are_the_reward_to_go_or_the_whole_return() {
        // G_t = r_t + γ G_{t+1}: G = (1 + 0.5·4, 2 + 0.5·4, 4) = (3, 4, 4); R(τ) = G_0 = 3.
        assert_eq!(weights(ReturnKind::RewardToGo), [3.0, 4.0, 4.0]);
        assert_eq!(weights(ReturnKind::Total), [3.0, 3.0, 3.0]);
    }
}
