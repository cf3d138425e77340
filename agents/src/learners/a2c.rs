//! Advantage actor-critic, synchronous (A2C: Mnih et al. 2016's A3C without the asynchrony).
//!
//! Per rollout of `num_steps` × `num_envs`: advantages Â by GAE(λ) (λ = 1: n-step returns
//! bootstrapped at the window's end), then one gradient step on
//! `L = −mean(Â_t log π(a_t|s_t)) − c_ent · H[π] + c_vf · ½ mean((V(s_t) − R_t)²)`.

use gradgym_algorithms::losses::{normalize_advantages, policy_gradient_loss, value_loss};
use gradgym_envs::rng::Stream;

use super::{
    Agent, Batch, Coefficients, Learner, NonFiniteLoss, UpdateStats, actor_critic_step,
    explained_variance, scalar, to_tensor,
};
use crate::buffer::Rollout;
use crate::config::TrainConfig;

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
        agent: &mut Agent,
        r: &Rollout,
        _rng: &mut Stream,
    ) -> Result<UpdateStats, NonFiniteLoss> {
        let device = agent.net.device();
        let (advantages, returns) = r.gae(self.gamma, self.gae_lambda);
        let batch = Batch::whole(r, device);
        let mut adv = to_tensor(&advantages, device);
        if self.norm_adv {
            adv = normalize_advantages(&adv);
        }
        let ev = agent.net.evaluate(&batch.obs, &batch.actions);
        let pg_loss = policy_gradient_loss(&ev.logprobs, &adv);
        let v_loss = value_loss(
            &ev.values,
            &to_tensor(&returns, device),
            &batch.values,
            None,
        );
        let entropy =
            actor_critic_step(agent, &pg_loss, &v_loss, &ev.entropy, self.coefficients, 0)?;
        Ok(UpdateStats {
            policy_loss: scalar(&pg_loss),
            value_loss: scalar(&v_loss),
            entropy: scalar(&entropy),
            explained_variance: explained_variance(&r.values, &returns),
            gradient_steps: 1,
            ..Default::default()
        })
    }
}
