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
