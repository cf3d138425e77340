//! Advantage actor-critic, synchronous (A2C: Mnih et al. 2016's A3C without the asynchrony).
//!
//! Per rollout of `num_steps` × `num_envs`: advantages Â by GAE(λ) (λ = 1: n-step returns
//! bootstrapped at the window's end), then one gradient step on
//! `L = −mean(Â_t log π(a_t|s_t)) − c_ent · H[π] + c_vf · ½ mean((V(s_t) − R_t)²)`.

use gradgym_algorithms::advantages::gae;
use gradgym_algorithms::losses::{normalize_advantages, policy_gradient_loss, value_loss};
use gradgym_envs::rng::Stream;
use tch::Kind;

use super::{
    Agent, Batch, Learner, NonFiniteLoss, UpdateStats, explained_variance, finite, gradient_step,
    scalar, to_tensor,
};
use crate::buffer::Rollout;
use crate::config::TrainConfig;

pub struct A2c {
    gamma: f32,
    gae_lambda: f32,
    norm_adv: bool,
    ent_coef: f64,
    vf_coef: f64,
    max_grad_norm: f64,
}

impl A2c {
    pub fn new(c: &TrainConfig) -> Self {
        Self {
            gamma: c.gamma as f32,
            gae_lambda: c.gae_lambda as f32,
            norm_adv: c.norm_adv,
            ent_coef: c.ent_coef,
            vf_coef: c.vf_coef,
            max_grad_norm: c.max_grad_norm,
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
        let (advantages, returns) = gae(
            r.shape,
            &r.rewards,
            &r.values,
            &r.next_values,
            &r.dones,
            self.gamma,
            self.gae_lambda,
        );
        let all: Vec<i64> = (0..r.shape.len() as i64).collect();
        let batch = Batch::new(r, &all, device);
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
        let entropy = ev.entropy.mean(Kind::Float);
        let loss = &pg_loss - &entropy * self.ent_coef + &v_loss * self.vf_coef;
        finite("loss", scalar(&loss), 0)?;
        gradient_step(agent, &loss, self.max_grad_norm);
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
