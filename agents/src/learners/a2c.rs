//! Advantage actor-critic, synchronous (A2C: Mnih et al. 2016's A3C without the asynchrony).
//!
//! Per rollout of `num_steps` × `num_envs`: advantages Â by GAE(λ) (λ = 1: n-step returns
//! bootstrapped at the window's end), then one gradient step on
//! `L = −mean(Â_t log π(a_t|s_t)) − c_ent · H[π] + c_vf · ½ mean((V(s_t) − R_t)²)`.

use gradgym_envs::rng::Stream;

use super::{Coefficients, Learner, UpdateStats, explained_variance, minibatch};
use crate::backend::{Backend, PolicyLoss, ValueLoss};
use crate::buffer::{Rollout, flat};
use crate::config::TrainConfig;
use crate::error::NonFiniteLoss;

pub struct A2c {
    gamma: f32,
    gae_lambda: f32,
    norm_adv: bool,
    coefficients: Coefficients,
}

impl A2c {
    pub fn new(c: &TrainConfig) -> Self {
        Self {
            gamma: c.gamma as f32,
            gae_lambda: c.gae_lambda as f32,
            norm_adv: c.norm_adv,
            coefficients: Coefficients {
                ent_coef: c.ent_coef,
                vf_coef: c.vf_coef,
                max_grad_norm: c.max_grad_norm,
            },
        }
    }
}

impl Learner for A2c {
    fn update(
        &mut self,
        model: &mut dyn Backend,
        r: &Rollout,
        _rng: &mut Stream,
    ) -> Result<UpdateStats, NonFiniteLoss> {
        let (advantages, returns) = r.gae(self.gamma, self.gae_lambda);
        let all: Vec<i64> = (0..r.shape.len() as i64).collect();
        let objective = self.coefficients.objective(
            PolicyLoss::Gradient,
            ValueLoss::Squared,
            false,
            self.norm_adv,
        );
        let report = model.step(&minibatch(r, &all, &advantages, &returns), &objective, 0)?;
        Ok(UpdateStats {
            policy_loss: report.policy_loss,
            value_loss: report.value_loss,
            entropy: report.entropy,
            explained_variance: explained_variance(flat(&r.values), &returns),
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

    #[test]
    fn one_step_on_every_sample_weighted_by_the_advantages_with_the_returns_as_targets() {
        // One env, three steps cut by the window (bootstrapped from V = 3), γ = 0.5, λ = 1:
        // n-step returns G = (3.375, 4.75, 5.5), advantages G − V = (2.875, 3.75, 3.5).
        let mut r = Rollout::new(3, 1, 2, 1, true);
        r.rewards.assign(&arr2(&[[1.0], [2.0], [4.0]]));
        r.values.assign(&arr2(&[[0.5], [1.0], [2.0]]));
        r.next_values.assign(&arr2(&[[1.0], [2.0], [3.0]]));
        let mut a2c = A2c::new(&TrainConfig {
            algo: Algo::A2c,
            gamma: 0.5,
            gae_lambda: 1.0,
            ..TrainConfig::default()
        });
        let mut backend = Recorder::default();
        let stats = a2c
            .update(&mut backend, &r, &mut rng::stream(0, "minibatch", 0))
            .unwrap();
        assert_eq!(stats.gradient_steps, 1);
        assert_eq!(backend.steps.len(), 1, "one gradient step per rollout");
        let (batch, objective) = &backend.steps[0];
        assert_eq!(batch.len, 3);
        assert_eq!(
            batch.weights,
            [2.875, 3.75, 3.5],
            "the weights are the advantages"
        );
        assert_eq!(
            batch.returns,
            [3.375, 4.75, 5.5],
            "the value targets are the returns"
        );
        assert_eq!(batch.old_values, [0.5, 1.0, 2.0]);
        assert_eq!(objective.policy, PolicyLoss::Gradient);
        assert_eq!(objective.value, ValueLoss::Squared);
        assert!(!objective.baseline);
    }
}
