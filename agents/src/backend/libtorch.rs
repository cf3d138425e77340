//! The libtorch backend: [`TorchActorCritic`] on a tch device, the losses of
//! `gradgym_algorithms::losses`, autograd, tch's global grad-norm clip and Adam.

use gradgym_algorithms::losses::{
    RatioStats, normalize_advantages, policy_gradient_loss, ppo_clip_loss, ppo_kl_loss, value_loss,
};
use gradgym_envs::rng::Stream;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

use super::{Backend, Minibatch, Objective, PolicyLoss, StepReport, ValueLoss};
use crate::config::TrainConfig;
use crate::error::{NonFiniteLoss, finite};
use crate::nn::Policy;
use crate::nn::heads::Head;
use crate::nn::torch::TorchActorCritic;

pub struct Libtorch {
    pub net: TorchActorCritic,
    pub opt: nn::Optimizer,
}

fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

impl Libtorch {
    pub fn new(
        config: &TrainConfig,
        obs_dim: usize,
        head: Head,
        device: Device,
        rng: &mut Stream,
    ) -> anyhow::Result<Self> {
        let net = TorchActorCritic::new(
            obs_dim,
            head,
            &config.hidden_sizes,
            config.log_std_init,
            device,
            rng,
        );
        let opt = nn::Adam {
            eps: config.adam_eps,
            ..Default::default()
        }
        .build(&net.vs, config.learning_rate)?;
        Ok(Self { net, opt })
    }

    fn tensor(&self, values: &[f32]) -> Tensor {
        Tensor::from_slice(values).to_device(self.net.device())
    }
}

impl Backend for Libtorch {
    fn step(
        &mut self,
        b: &Minibatch,
        objective: &Objective,
        step: usize,
    ) -> Result<StepReport, NonFiniteLoss> {
        let device = self.net.device();
        let n = b.len as i64;
        let obs = self.tensor(&b.obs).view([n, self.net.obs_dim() as i64]);
        let actions = if b.actions_discrete.is_empty() {
            self.tensor(&b.actions_continuous).view([n, -1])
        } else {
            Tensor::from_slice(&b.actions_discrete).to_device(device)
        };
        let ev = self.net.evaluate(&obs, &actions);
        let mut weights = self.tensor(&b.weights);
        if objective.baseline {
            weights = &weights - ev.values.detach();
        }
        if objective.normalize {
            weights = normalize_advantages(&weights);
        }
        let (pg_loss, ratio) = match objective.policy {
            PolicyLoss::Gradient => (
                policy_gradient_loss(&ev.logprobs, &weights),
                RatioStats::default(),
            ),
            PolicyLoss::Clip { clip_coef } => ppo_clip_loss(
                &ev.logprobs,
                &self.tensor(&b.old_logprobs),
                &weights,
                clip_coef,
            ),
            PolicyLoss::KlPenalty { beta, clip_coef } => ppo_kl_loss(
                &ev.logprobs,
                &self.tensor(&b.old_logprobs),
                &weights,
                beta,
                clip_coef,
            ),
        };
        let returns = || self.tensor(&b.returns);
        let old_values = || self.tensor(&b.old_values);
        let v_loss = match objective.value {
            ValueLoss::None => Tensor::zeros([], (Kind::Float, device)),
            ValueLoss::Squared => value_loss(&ev.values, &returns(), &old_values(), None),
            ValueLoss::Clipped { clip_coef } => {
                value_loss(&ev.values, &returns(), &old_values(), Some(clip_coef))
            }
        };
        let entropy = ev.entropy.mean(Kind::Float);
        let loss = &pg_loss - &entropy * objective.ent_coef + &v_loss * objective.vf_coef;
        finite("loss", scalar(&loss), step)?;
        self.opt.zero_grad();
        loss.backward();
        if objective.max_grad_norm > 0.0 {
            self.opt.clip_grad_norm(objective.max_grad_norm);
        }
        self.opt.step();
        Ok(StepReport {
            policy_loss: scalar(&pg_loss),
            value_loss: scalar(&v_loss),
            entropy: scalar(&entropy),
            ratio,
        })
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.opt.set_lr(lr);
    }

    fn snapshot(&self) -> Policy {
        self.net.snapshot()
    }

    fn name(&self) -> &'static str {
        "libtorch"
    }
}
