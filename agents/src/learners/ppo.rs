//! Proximal Policy Optimization (Schulman, Wolski, Dhariwal, Radford & Klimov 2017).
//!
//! Per rollout: GAE(λ) advantages and value targets (Schulman et al. 2016), then
//! `update_epochs` passes over the batch in shuffled minibatches, each minimising
//! `L = L^CLIP (or L^KLPEN) − c_ent · H[π] + c_vf · L^V` with a global grad-norm clip; the
//! epochs stop early once the approximate KL passes `target_kl`. With `ppo_loss = "kl"`, β is
//! fixed, or adapted toward `kl_target` after the epochs from the KL that the update moved the
//! policy by, measured over the batch by one pass of the updated policy (Schulman et al.'s d;
//! the steps' own estimates are each taken before their step, the first always 0).
//! CleanRL's `ppo.py` runs the same steps in the same order, except that it treats time-limit
//! truncation as termination; here truncated episodes are bootstrapped.

use gradgym_algorithms::kl::KlController;
use gradgym_envs::rng::{self, Stream};

use super::{Coefficients, Learner, UpdateStats, explained_variance, minibatch};
use crate::backend::{Backend, PolicyLoss, ValueLoss};
use crate::buffer::{Rollout, flat};
use crate::config::{PpoLoss, TrainConfig};
use crate::error::NonFiniteLoss;
use crate::nn::actor_critic::Scratch;

pub struct Ppo {
    gamma: f32,
    gae_lambda: f32,
    update_epochs: usize,
    num_minibatches: usize,
    norm_adv: bool,
    clip_coef: f64,
    clip_vloss: bool,
    coefficients: Coefficients,
    target_kl: Option<f64>,
    loss: PpoLoss,
    kl: KlController,
}

impl Ppo {
    pub fn new(c: &TrainConfig) -> Self {
        Self {
            gamma: c.gamma as f32,
            gae_lambda: c.gae_lambda as f32,
            update_epochs: c.update_epochs,
            num_minibatches: c.num_minibatches,
            norm_adv: c.norm_adv,
            clip_coef: c.clip_coef,
            clip_vloss: c.clip_vloss,
            coefficients: Coefficients {
                ent_coef: c.ent_coef,
                vf_coef: c.vf_coef,
                max_grad_norm: c.max_grad_norm,
            },
            target_kl: c.target_kl,
            loss: c.ppo_loss,
            kl: c.kl_controller(),
        }
    }
}

/// The k3 estimate of KL[π_old ‖ π] over the batch's valid samples, π the policy `model` holds
/// now and π_old the one that sampled `r`: mean((ρ − 1) − log ρ), ρ = π(a|s)/π_old(a|s).
fn kl_after(model: &dyn Backend, r: &Rollout) -> f64 {
    let policy = model.snapshot();
    let n = r.shape.len();
    let new = policy.log_probs(
        flat(&r.obs),
        n,
        flat(&r.actions_discrete),
        flat(&r.actions_continuous),
        &mut Scratch::default(),
    );
    let (mut sum, mut count) = (0.0f64, 0usize);
    for ((&new, &old), &valid) in new.iter().zip(flat(&r.logprobs)).zip(flat(&r.valid)) {
        if valid {
            let log_ratio = new as f64 - old as f64;
            sum += log_ratio.exp_m1() - log_ratio;
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

/// Fisher–Yates with the run's minibatch stream.
pub(crate) fn shuffled(n: usize, rng: &mut Stream) -> Vec<i64> {
    let mut idx: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = (rng::uniform01(rng) * (i + 1) as f64) as usize;
        idx.swap(i, j.min(i));
    }
    idx
}

impl Learner for Ppo {
    fn update(
        &mut self,
        model: &mut dyn Backend,
        r: &Rollout,
        rng: &mut Stream,
    ) -> Result<UpdateStats, NonFiniteLoss> {
        let (advantages, returns) = r.gae(self.gamma, self.gae_lambda);
        let batch_size = r.shape.len();
        let minibatch_size = batch_size / self.num_minibatches;
        let value = if self.clip_vloss {
            ValueLoss::Clipped {
                clip_coef: self.clip_coef,
            }
        } else {
            ValueLoss::Squared
        };

        let mut stats = UpdateStats {
            explained_variance: explained_variance(flat(&r.values), &returns),
            ..Default::default()
        };
        let mut kl_sum = 0.0;
        let mut kl_count = 0usize;
        'epochs: for _ in 0..self.update_epochs {
            let order = shuffled(batch_size, rng);
            for chunk in order.chunks(minibatch_size) {
                let policy = match self.loss {
                    PpoLoss::Clip => PolicyLoss::Clip {
                        clip_coef: self.clip_coef,
                    },
                    PpoLoss::Kl => PolicyLoss::KlPenalty {
                        beta: self.kl.beta(),
                        clip_coef: self.clip_coef,
                    },
                };
                let objective = self
                    .coefficients
                    .objective(policy, value, false, self.norm_adv);
                let batch = minibatch(r, chunk, &advantages, &returns);
                let report = model.step(&batch, &objective, stats.gradient_steps)?;
                let ratio = report.ratio;
                stats.gradient_steps += 1;
                stats.policy_loss = report.policy_loss;
                stats.value_loss = report.value_loss;
                stats.entropy = report.entropy;
                stats.approx_kl = ratio.approx_kl;
                stats.old_approx_kl = ratio.old_approx_kl;
                stats.clipfrac = ratio.clipfrac;
                kl_sum += ratio.approx_kl;
                kl_count += 1;
            }
            if let Some(target) = self.target_kl
                && stats.approx_kl > target
            {
                break 'epochs;
            }
        }
        let measured = match self.kl {
            KlController::Adaptive { .. } if self.loss == PpoLoss::Kl => kl_after(model, r),
            _ => kl_sum / kl_count.max(1) as f64,
        };
        self.kl.update(measured);
        if self.loss == PpoLoss::Kl {
            stats.kl_beta = self.kl.beta();
        }
        Ok(stats)
    }
}
