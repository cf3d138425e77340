//! The MLP of [`crate::network::Mlp`] (`Linear → tanh` per hidden layer, linear output) over a
//! flat parameter vector, with its backward pass written out, for the native backend.
//!
//! Layer `l` maps activations `X_l [n, in]` to `Y = X_l Wᵀ + b` with `W [out, in]` row-major,
//! as torch stores it; hidden layers apply tanh. Given `D = ∂L/∂Y`:
//! `∂L/∂W = Dᵀ X_l`, `∂L/∂b = Σ_rows D`, `∂L/∂X_l = D W`, and through the tanh that made
//! `X_l`, `∂L/∂(pre-activation) = ∂L/∂X_l ⊙ (1 − X_l²)`. Matrix products go through
//! `matrixmultiply::sgemm` (single-threaded, deterministic for a given CPU).

use gradgym_envs::rng::Stream;

use crate::network::orthogonal;

/// Where one layer's weight and bias live in the flat parameter vector.
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub inputs: usize,
    pub outputs: usize,
    /// Offset of `W [outputs, inputs]`.
    pub w: usize,
    /// Offset of `b [outputs]`.
    pub b: usize,
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Layer>,
}

/// `C [m, n] = A [m, k] · B [k, n] + beta · C`, A and B given by row and column strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        assert!(a.len() > (m - 1) * rsa + (k - 1) * csa, "gemm: A too short");
        assert!(b.len() > (k - 1) * rsb + (n - 1) * csb, "gemm: B too short");
    }
    assert!(c.len() >= m * n, "gemm: C too short");
    // SAFETY: the asserts above keep every strided access of A, B and C inside the slices,
    // and C does not alias A or B (it is borrowed mutably).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// tanh as `2 / (1 + e^{−2x}) − 1`, as the rollout policy computes it
/// (see [`crate::fast`]); within ~1e-7 of `tanh`.
#[inline]
pub(crate) fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + (-2.0 * x).exp()) - 1.0
}

impl Mlp {
    /// Lays out an MLP of `sizes` (inputs, hidden…, outputs) from `offset` on, advancing it.
    pub fn new(sizes: &[usize], offset: &mut usize) -> Self {
        let layers = sizes
            .windows(2)
            .map(|io| {
                let layer = Layer {
                    inputs: io[0],
                    outputs: io[1],
                    w: *offset,
                    b: *offset + io[0] * io[1],
                };
                *offset += io[0] * io[1] + io[1];
                layer
            })
            .collect();
        Self { layers }
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().expect("an MLP has layers").outputs
    }

    /// CleanRL's initialisation, drawing from `rng` exactly as [`crate::network::Mlp`] does:
    /// orthogonal weights, gain √2 for hidden layers and `out_gain` for the last, zero biases.
    pub fn init(&self, params: &mut [f32], out_gain: f64, rng: &mut Stream) {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let gain = if i == last {
                out_gain
            } else {
                std::f64::consts::SQRT_2
            };
            let w = orthogonal(l.outputs, l.inputs, gain, rng);
            params[l.w..l.w + w.len()].copy_from_slice(&w);
            params[l.b..l.b + l.outputs].fill(0.0);
        }
    }

    /// Forward pass over `n` rows of `x`; `acts[0]` is `x`, `acts[l]` the output of layer
    /// `l − 1` (after tanh for hidden layers), the last one the MLP's output `[n, outputs]`.
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, acts: &mut Vec<Vec<f32>>) {
        acts.resize_with(self.layers.len() + 1, Vec::new);
        acts[0].clear();
        acts[0].extend_from_slice(&x[..n * self.layers[0].inputs]);
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let (done, rest) = acts.split_at_mut(i + 1);
            let (input, out) = (&done[i], &mut rest[0]);
            let bias = &params[l.b..l.b + l.outputs];
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(bias);
            }
            gemm(
                (n, l.inputs, l.outputs),
                input,
                (l.inputs, 1),
                &params[l.w..l.w + l.inputs * l.outputs],
                (1, l.inputs),
                1.0,
                out,
            );
            if i != last {
                for v in out.iter_mut() {
                    *v = tanh(*v);
                }
            }
        }
    }

    /// Backward pass: given `d = ∂L/∂output [n, outputs]` and the activations of the last
    /// [`Mlp::forward`], writes ∂L/∂W and ∂L/∂b of every layer into `grads` (same offsets as
    /// `params`). `d` and `scratch` are overwritten.
    pub fn backward(
        &self,
        params: &[f32],
        acts: &[Vec<f32>],
        n: usize,
        d: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        grads: &mut [f32],
    ) {
        for (i, l) in self.layers.iter().enumerate().rev() {
            let input = &acts[i];
            gemm(
                (l.outputs, n, l.inputs),
                d,
                (1, l.outputs),
                input,
                (l.inputs, 1),
                0.0,
                &mut grads[l.w..l.w + l.inputs * l.outputs],
            );
            let db = &mut grads[l.b..l.b + l.outputs];
            db.fill(0.0);
            for row in d.chunks_exact(l.outputs) {
                for (g, v) in db.iter_mut().zip(row) {
                    *g += v;
                }
            }
            if i == 0 {
                break;
            }
            scratch.resize(n * l.inputs, 0.0);
            gemm(
                (n, l.outputs, l.inputs),
                d,
                (l.outputs, 1),
                &params[l.w..l.w + l.inputs * l.outputs],
                (l.inputs, 1),
                0.0,
                scratch,
            );
            // `input` is tanh of the previous layer's pre-activation.
            for (g, h) in scratch.iter_mut().zip(input) {
                *g *= 1.0 - h * h;
            }
            std::mem::swap(d, scratch);
        }
    }
}
