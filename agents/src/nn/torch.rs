//! The actor-critic of [`crate::nn::actor_critic`] as tch modules, for the libtorch backend
//! (CPU or CUDA, gradients by autograd).
//!
//! The same network: per MLP, `nn::Linear` layers (`weight [outputs, inputs]`, `bias
//! [outputs]`) with [`crate::nn::tanh::tanh_tensor`] between them; the heads' maths is
//! [`crate::nn::heads::categorical_tensors`] and [`crate::nn::heads::gaussian_tensors`]. The
//! initial weights are [`crate::nn::init::actor_critic`]'s vector, copied into the tensors;
//! [`TorchActorCritic::snapshot`] copies them back into that layout. The variables are created
//! critic first, then actor, then log σ (the order of the optimiser's parameter list).

use gradgym_envs::rng::Stream;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::nn::actor_critic::{ActorCritic, Policy};
use crate::nn::heads::{self, Head};
use crate::nn::mlp::Mlp;
use crate::nn::tanh::tanh_tensor;

/// An MLP as tch modules: `Linear → tanh` per hidden layer, then a linear output.
#[derive(Debug)]
pub struct TorchMlp {
    pub layers: Vec<nn::Linear>,
}

impl TorchMlp {
    /// The layers of `mlp` under `path`, holding the values of `params`.
    fn new(path: &nn::Path, mlp: &Mlp, params: &[f32]) -> Self {
        let layers = mlp
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let config = nn::LinearConfig {
                    ws_init: nn::Init::Const(0.0),
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: true,
                };
                let layer = nn::linear(
                    path / format!("{i}"),
                    l.inputs as i64,
                    l.outputs as i64,
                    config,
                );
                let device = layer.ws.device();
                tch::no_grad(|| {
                    // The layout holds Wᵀ [inputs, outputs]; torch's weight is W.
                    let w = Tensor::from_slice(l.weight(params))
                        .view([l.inputs as i64, l.outputs as i64])
                        .transpose(0, 1)
                        .to_device(device);
                    layer.ws.shallow_clone().copy_(&w);
                    let b = Tensor::from_slice(l.bias(params)).to_device(device);
                    layer.bs.as_ref().expect("bias").shallow_clone().copy_(&b);
                });
                layer
            })
            .collect();
        Self { layers }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.layers[0].forward(x);
        for layer in &self.layers[1..] {
            h = layer.forward(&tanh_tensor(&h));
        }
        h
    }

    /// Writes the layers' values into `params` at the offsets of `mlp`.
    fn write(&self, mlp: &Mlp, params: &mut [f32]) {
        for (t, l) in self.layers.iter().zip(&mlp.layers) {
            let w: Vec<f32> = Vec::try_from(
                t.ws.to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .transpose(0, 1)
                    .contiguous()
                    .view([-1]),
            )
            .expect("f32 weights");
            let b: Vec<f32> = Vec::try_from(
                t.bs.as_ref()
                    .expect("bias")
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float),
            )
            .expect("f32 bias");
            params[l.w..l.w + w.len()].copy_from_slice(&w);
            params[l.b..l.b + b.len()].copy_from_slice(&b);
        }
    }
}

/// The actor-critic in a tch `VarStore`.
pub struct TorchActorCritic {
    pub vs: nn::VarStore,
    pub actor: TorchMlp,
    pub critic: TorchMlp,
    /// `[dim]`, the Gaussian head's log standard deviation.
    pub log_std: Option<Tensor>,
    /// The flat layout that [`TorchActorCritic::snapshot`] writes.
    pub layout: ActorCritic,
}

/// What the update step needs for a batch: log π(a|s), entropy, V(s), each `[B]`.
pub struct Evaluation {
    pub logprobs: Tensor,
    pub entropy: Tensor,
    pub values: Tensor,
}

impl TorchActorCritic {
    /// The network for `obs_dim` inputs, `hidden` sizes and `head` on `device`, with the
    /// weights [`crate::nn::init::actor_critic`] draws from `rng`.
    pub fn new(
        obs_dim: usize,
        head: Head,
        hidden: &[usize],
        log_std_init: f64,
        device: Device,
        rng: &mut Stream,
    ) -> Self {
        let layout = ActorCritic::new(obs_dim, head, hidden);
        let params = crate::nn::init::actor_critic(&layout, log_std_init, rng);
        Self::from_params(layout, &params, device)
    }

    /// The network of `layout` holding `params`, on `device`.
    pub fn from_params(layout: ActorCritic, params: &[f32], device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let critic = TorchMlp::new(&(&root / "critic"), &layout.critic, params);
        let actor = TorchMlp::new(&(&root / "actor"), &layout.actor, params);
        let log_std = layout.log_std(params).map(|values| {
            let var = root.var("log_std", &[values.len() as i64], nn::Init::Const(0.0));
            tch::no_grad(|| {
                var.shallow_clone()
                    .copy_(&Tensor::from_slice(values).to_device(device))
            });
            var
        });
        Self {
            vs,
            actor,
            critic,
            log_std,
            layout,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn head(&self) -> Head {
        self.layout.head
    }

    pub fn obs_dim(&self) -> usize {
        self.layout.obs_dim()
    }

    /// V(s), `[B]`.
    pub fn value(&self, obs: &Tensor) -> Tensor {
        self.critic.forward(obs).squeeze_dim(-1)
    }

    /// log π(a|s), entropy of π(·|s) and V(s) for a batch. `actions` is `[B]` int64 for a
    /// categorical head and `[B, dim]` float for a Gaussian one.
    pub fn evaluate(&self, obs: &Tensor, actions: &Tensor) -> Evaluation {
        let out = self.actor.forward(obs);
        let values = self.value(obs);
        let (logprobs, entropy) = match self.layout.head {
            Head::Categorical { .. } => heads::categorical_tensors(&out, actions),
            Head::Gaussian { .. } => {
                let log_std = self
                    .log_std
                    .as_ref()
                    .expect("a Gaussian head has a log-std");
                heads::gaussian_tensors(&out, log_std, actions)
            }
        };
        Evaluation {
            logprobs,
            entropy,
            values,
        }
    }

    /// The current weights, flat in the layout of [`ActorCritic`].
    pub fn params(&self) -> Vec<f32> {
        let mut params = vec![0.0; self.layout.len];
        self.actor.write(&self.layout.actor, &mut params);
        self.critic.write(&self.layout.critic, &mut params);
        if let (Some(t), Some(at)) = (&self.log_std, self.layout.log_std) {
            let values: Vec<f32> =
                Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float)).expect("f32 log-std");
            params[at..at + values.len()].copy_from_slice(&values);
        }
        params
    }

    /// A CPU copy of the weights for rollouts.
    pub fn snapshot(&self) -> Policy {
        Policy::new(&self.layout, self.params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::actor_critic::Scratch;
    use gradgym_envs::rng;

    #[test]
    fn the_policy_matches_the_tch_forward() {
        let mut r = rng::stream(1, "init", 0);
        for head in [Head::Categorical { n: 3 }, Head::Gaussian { dim: 2 }] {
            let net = TorchActorCritic::new(5, head, &[16, 16], -0.5, Device::Cpu, &mut r);
            let obs: Vec<f32> = (0..15).map(|k| (k as f32 * 0.37).sin()).collect();
            let t_obs = Tensor::from_slice(&obs).view([3, 5]);
            let out = net.actor.forward(&t_obs);
            let values = net.value(&t_obs);
            let fast = net.snapshot();
            let mut scratch = Scratch::default();
            let (f_out, f_values) = fast.forward(&obs, 3, &mut scratch);
            let out: Vec<f32> = Vec::try_from(out.view([-1])).unwrap();
            let values: Vec<f32> = Vec::try_from(values).unwrap();
            for (a, b) in out.iter().zip(f_out) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            for (a, b) in values.iter().zip(f_values) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn the_tensors_hold_the_initial_vector_and_give_it_back() {
        let layout = ActorCritic::new(4, Head::Gaussian { dim: 3 }, &[8, 6]);
        let params = crate::nn::init::actor_critic(&layout, 0.25, &mut rng::stream(2, "init", 0));
        let net = TorchActorCritic::from_params(layout.clone(), &params, Device::Cpu);
        assert_eq!(net.params(), params);
        // torch's weight is W [outputs, inputs], the layout's block is Wᵀ.
        let l = layout.actor.layers[0];
        let w: Vec<f32> = Vec::try_from(net.actor.layers[0].ws.view([-1])).unwrap();
        assert_eq!(w[2 * l.inputs + 1], l.weight(&params)[l.outputs + 2]);
        // The variables in creation order (the optimiser's): critic, actor, log σ.
        let shapes: Vec<Vec<i64>> = net
            .vs
            .trainable_variables()
            .iter()
            .map(|t| t.size())
            .collect();
        // (tch's `nn::linear` creates a layer's bias before its weight.)
        let layers = |out: i64| {
            let shapes: [&[i64]; 6] = [&[8], &[8, 4], &[6], &[6, 8], &[out], &[out, 6]];
            shapes.map(<[i64]>::to_vec)
        };
        let expected: Vec<Vec<i64>> = layers(1)
            .into_iter()
            .chain(layers(3))
            .chain([vec![3]])
            .collect();
        assert_eq!(shapes, expected);
    }
}
