//! CleanRL's actor-critic (separate actor and critic MLPs, `Agent` in `ppo.py`) over one flat
//! parameter vector, and its CPU copy for rollouts.
//!
//! - [`ActorCritic`]: the layout. The actor maps `obs [n, obs_dim]` to `[n, head.outputs()]`
//!   (logits or Gaussian means), the critic maps them to `V(s) [n]`, both through the hidden
//!   sizes of the config; the Gaussian head adds `log σ [dim]`. In the vector: the actor's
//!   layers, then the critic's (each laid out by [`crate::nn::mlp::Mlp`]), then log σ. The
//!   native backend trains this vector; [`crate::nn::init::actor_critic`] fills it.
//! - [`Policy`]: a copy of the vector with its layout, taken after every update (a backend's
//!   `snapshot`), with which the rollout acts: a rollout calls the policy once per env step on a
//!   handful of observations, and through libtorch each call would cost tens of µs of dispatch
//!   for microseconds of arithmetic. The forward is [`crate::nn::mlp::Mlp::forward_rows`]; the
//!   actions are sampled by [`crate::nn::heads`] from the run's own stream.

use crate::nn::heads::Head;
use crate::nn::mlp::Mlp;

/// Where the actor, the critic and log σ live in the flat parameter vector `[len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorCritic {
    pub head: Head,
    pub actor: Mlp,
    pub critic: Mlp,
    /// Offset of the Gaussian head's log σ `[dim]`.
    pub log_std: Option<usize>,
    /// Parameters in all.
    pub len: usize,
}

impl ActorCritic {
    /// The layout for `obs_dim` inputs, `hidden` sizes (the same for actor and critic) and
    /// `head`.
    pub fn new(obs_dim: usize, head: Head, hidden: &[usize]) -> Self {
        let mut sizes = vec![obs_dim];
        sizes.extend_from_slice(hidden);
        let mut actor_sizes = sizes.clone();
        actor_sizes.push(head.outputs());
        let mut critic_sizes = sizes;
        critic_sizes.push(1);
        let mut len = 0;
        let actor = Mlp::new(&actor_sizes, &mut len);
        let critic = Mlp::new(&critic_sizes, &mut len);
        let log_std = match head {
            Head::Gaussian { dim } => {
                len += dim;
                Some(len - dim)
            }
            Head::Categorical { .. } => None,
        };
        Self {
            head,
            actor,
            critic,
            log_std,
            len,
        }
    }

    pub fn obs_dim(&self) -> usize {
        self.actor.inputs()
    }

    /// log σ `[dim]` in `params`, for a Gaussian head.
    pub fn log_std<'p>(&self, params: &'p [f32]) -> Option<&'p [f32]> {
        self.log_std.map(|at| &params[at..at + self.head.outputs()])
    }
}

/// Reusable buffers for [`Policy::forward`].
#[derive(Default, Debug)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    actor_out: Vec<f32>,
    values: Vec<f32>,
}

/// The actor-critic's weights on the CPU, for rollouts and evaluation.
#[derive(Clone, Debug)]
pub struct Policy {
    pub head: Head,
    /// The layers of the actor and the critic in `params`.
    pub actor: Mlp,
    pub critic: Mlp,
    /// Every parameter, in the layout of [`ActorCritic`].
    pub params: Vec<f32>,
    /// The Gaussian head's log σ `[dim]` (copied out of `params` for the sampler).
    pub log_std: Option<Vec<f32>>,
}

impl Policy {
    /// The policy with parameters `params` laid out by `net`.
    pub fn new(net: &ActorCritic, params: Vec<f32>) -> Self {
        assert_eq!(params.len(), net.len, "parameters for another layout");
        Self {
            head: net.head,
            actor: net.actor.clone(),
            critic: net.critic.clone(),
            log_std: net.log_std(&params).map(<[f32]>::to_vec),
            params,
        }
    }

    pub fn obs_dim(&self) -> usize {
        self.actor.inputs()
    }

    /// Actor outputs `[n, outputs]` (logits or means) and values `[n]` for `n` observations.
    pub fn forward<'s>(
        &self,
        obs: &[f32],
        n: usize,
        scratch: &'s mut Scratch,
    ) -> (&'s [f32], &'s [f32]) {
        let Scratch {
            a,
            b,
            actor_out,
            values,
        } = scratch;
        self.actor
            .forward_rows(&self.params, obs, n, a, b, actor_out);
        self.critic.forward_rows(&self.params, obs, n, a, b, values);
        (&scratch.actor_out, &scratch.values)
    }

    /// log π(a|s) `[n]` of the actions `actions_discrete [n]` (categorical head) or
    /// `actions_continuous [n, dim]` (Gaussian head) at `n` observations, in f32 through the
    /// same head maths as the native backend's update.
    pub fn log_probs(
        &self,
        obs: &[f32],
        n: usize,
        actions_discrete: &[i64],
        actions_continuous: &[f32],
        scratch: &mut Scratch,
    ) -> Vec<f32> {
        let Scratch {
            a, b, actor_out, ..
        } = scratch;
        self.actor
            .forward_rows(&self.params, obs, n, a, b, actor_out);
        let (mut logprobs, mut entropy) = (vec![0.0f32; n], vec![0.0f32; n]);
        match self.head {
            Head::Categorical { n: k } => {
                let mut log_p = vec![0.0f32; n * k];
                super::heads::categorical_log_probs(
                    actor_out,
                    k,
                    &actions_discrete[..n],
                    &mut log_p,
                    &mut logprobs,
                    &mut entropy,
                );
            }
            Head::Gaussian { .. } => super::heads::gaussian_log_probs(
                actor_out,
                self.log_std
                    .as_deref()
                    .expect("a Gaussian head has a log-std"),
                actions_continuous,
                &mut logprobs,
                &mut entropy,
            ),
        }
        logprobs
    }

    /// Values only, `[n]`.
    pub fn values<'s>(&self, obs: &[f32], n: usize, scratch: &'s mut Scratch) -> &'s [f32] {
        let Scratch { a, b, values, .. } = scratch;
        self.critic.forward_rows(&self.params, obs, n, a, b, values);
        &scratch.values
    }
}
