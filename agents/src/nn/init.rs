//! The initial weights of the actor-critic, drawn from the run's own `"init"` stream; both
//! backends start from the vector [`actor_critic`] returns (the libtorch one copies it into its
//! tensors, so tch's global generator is never used).
//!
//! CleanRL / Engstrom et al. 2020 ("Implementation matters"): orthogonal weights with gain √2
//! for hidden layers, 0.01 for the policy's output layer and 1.0 for the value's, zero biases,
//! and the Gaussian head's log σ `[dim]` set to `log_std_init`.
//!
//! Draw order (it fixes every weight of a run): the critic's layers first, input to output,
//! then the actor's; each layer's `W [outputs, inputs]` is one call to [`orthogonal`], which
//! draws `max(outputs, inputs) · min(outputs, inputs)` standard normals. Biases and log σ draw
//! nothing.

use gradgym_envs::rng::{self, Stream};

use crate::nn::actor_critic::ActorCritic;
use crate::nn::mlp::Mlp;

/// The gain of every hidden layer, √2 (tanh).
pub const HIDDEN_GAIN: f64 = std::f64::consts::SQRT_2;
/// The gain of the actor's output layer: near-uniform initial policies.
pub const ACTOR_OUTPUT_GAIN: f64 = 0.01;
/// The gain of the critic's output layer.
pub const CRITIC_OUTPUT_GAIN: f64 = 1.0;

/// An orthogonal `[rows, cols]` matrix times `gain`, row-major, as `torch.nn.init.orthogonal_`
/// builds it (QR of a standard-normal matrix, signs fixed so R has a positive diagonal), from
/// our own stream. Modified Gram–Schmidt in f64.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut Stream) -> Vec<f32> {
    let (m, k) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    // a: m × k, column-major columns of length m.
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..m).map(|_| rng::standard_normal(rng)).collect())
        .collect();
    for j in 0..k {
        let (done, rest) = q.split_at_mut(j);
        let column = &mut rest[0];
        for earlier in done.iter() {
            let dot: f64 = earlier.iter().zip(column.iter()).map(|(a, b)| a * b).sum();
            for (x, e) in column.iter_mut().zip(earlier) {
                *x -= dot * e;
            }
        }
        let norm = column.iter().map(|x| x * x).sum::<f64>().sqrt();
        for x in column.iter_mut() {
            *x /= norm;
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // Q is m × k with columns q[j]; transposed when rows < cols.
            let v = if rows < cols { q[r][c] } else { q[c][r] };
            out[r * cols + c] = (v * gain) as f32;
        }
    }
    out
}

/// Initialises the layers of `mlp` in `params`, input to output: `W [outputs, inputs]`
/// orthogonal (gain [`HIDDEN_GAIN`], `out_gain` for the last layer), stored as the layout's
/// `Wᵀ`; zero biases.
pub fn mlp(mlp: &Mlp, params: &mut [f32], out_gain: f64, rng: &mut Stream) {
    let last = mlp.layers.len() - 1;
    for (i, l) in mlp.layers.iter().enumerate() {
        let gain = if i == last { out_gain } else { HIDDEN_GAIN };
        let w = orthogonal(l.outputs, l.inputs, gain, rng);
        let m = &mut params[l.w..l.w + l.inputs * l.outputs];
        for j in 0..l.outputs {
            for k in 0..l.inputs {
                m[k * l.outputs + j] = w[j * l.inputs + k];
            }
        }
        params[l.b..l.b + l.outputs].fill(0.0);
    }
}

/// Every initial parameter of `net`, flat in its layout: the critic drawn first, then the
/// actor (see the module doc), log σ = `log_std_init`.
pub fn actor_critic(net: &ActorCritic, log_std_init: f64, rng: &mut Stream) -> Vec<f32> {
    let mut params = vec![0.0; net.len];
    mlp(&net.critic, &mut params, CRITIC_OUTPUT_GAIN, rng);
    mlp(&net.actor, &mut params, ACTOR_OUTPUT_GAIN, rng);
    if let Some(at) = net.log_std {
        params[at..at + net.head.outputs()].fill(log_std_init as f32);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::heads::Head;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal_times_gain() {
        let mut r = rng::stream(0, "init", 0);
        for (rows, cols) in [(64, 4), (4, 64), (64, 64), (2, 64)] {
            let w = orthogonal(rows, cols, 2.0, &mut r);
            // The smaller side's vectors are orthonormal (× gain²).
            let vectors: Vec<Vec<f64>> = if rows <= cols {
                (0..rows)
                    .map(|a| (0..cols).map(|k| w[a * cols + k] as f64).collect())
                    .collect()
            } else {
                (0..cols)
                    .map(|a| (0..rows).map(|k| w[k * cols + a] as f64).collect())
                    .collect()
            };
            for (a, va) in vectors.iter().enumerate() {
                for (b, vb) in vectors.iter().enumerate() {
                    let dot: f64 = va.iter().zip(vb).map(|(x, y)| x * y).sum();
                    let expected = if a == b { 4.0 } else { 0.0 };
                    assert!(
                        (dot - expected).abs() < 1e-5,
                        "{rows}x{cols}: <{a},{b}> = {dot}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_critic_is_drawn_first_and_layers_in_order() {
        let net = ActorCritic::new(3, Head::Gaussian { dim: 2 }, &[8]);
        let params = actor_critic(&net, -0.5, &mut rng::stream(9, "init", 0));
        let mut r = rng::stream(9, "init", 0);
        let expected: Vec<Vec<f32>> = [(8, 3, HIDDEN_GAIN), (1, 8, 1.0)]
            .into_iter()
            .chain([(8, 3, HIDDEN_GAIN), (2, 8, 0.01)])
            .map(|(rows, cols, gain)| orthogonal(rows, cols, gain, &mut r))
            .collect();
        let layers = net.critic.layers.iter().chain(&net.actor.layers);
        for (l, w) in layers.zip(&expected) {
            for j in 0..l.outputs {
                for k in 0..l.inputs {
                    assert_eq!(l.weight(&params)[k * l.outputs + j], w[j * l.inputs + k]);
                }
            }
            assert!(l.bias(&params).iter().all(|&b| b == 0.0));
        }
        assert_eq!(net.log_std(&params), Some(&[-0.5f32, -0.5][..]));
    }
}
