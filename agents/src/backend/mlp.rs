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

/// tanh over a slice, as a rational function `x·p(x²)/q(x²)` of degrees 13/6 on inputs
/// clamped to ±7.905311 (beyond which tanh rounds to ±1 in f32). The coefficients are Eigen's
/// (`generic_fast_tanh_float`, Eigen 3.3–3.4). With no branch and no libm call the loop
/// vectorises; `expf` was 13% of a PPO run. Within 1e-6 of tanh (see the test), and used by
/// both the rollout policy ([`crate::fast`]) and the update.
pub fn tanh_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2. The same operations in the same order (no FMA
        // contraction), on wider vectors: the same bits as the generic loop.
        return unsafe { tanh_avx2(xs) };
    }
    tanh_generic(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tanh_avx2(xs: &mut [f32]) {
    tanh_generic(xs)
}

#[inline(always)]
fn tanh_generic(xs: &mut [f32]) {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    for v in xs.iter_mut() {
        let x = v.clamp(-CLAMP, CLAMP);
        let x2 = x * x;
        let mut p = A[6];
        for a in A[..6].iter().rev() {
            p = p * x2 + a;
        }
        let q = ((B[3] * x2 + B[2]) * x2 + B[1]) * x2 + B[0];
        *v = x * p / q;
    }
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
                tanh_in_place(out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_tanh_is_within_1e6_of_tanh_and_saturates() {
        let xs: Vec<f32> = (-400_000..=400_000).map(|i| i as f32 * 5e-5).collect();
        let mut ys = xs.clone();
        tanh_in_place(&mut ys);
        let worst = xs
            .iter()
            .zip(&ys)
            .map(|(&x, &y)| (y as f64 - (x as f64).tanh()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "max error {worst}");
        let mut edges = [-1e30f32, -50.0, 0.0, 1e-30, 50.0, 1e30];
        tanh_in_place(&mut edges);
        assert_eq!(
            edges.map(|y| (y * 1e6).round() / 1e6),
            [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]
        );
        assert!(edges.iter().all(|y| y.abs() <= 1.0));
        // The AVX2 path (where the CPU has it) gives the generic loop's bits.
        let mut generic = xs.clone();
        tanh_generic(&mut generic);
        assert!(
            generic
                .iter()
                .zip(&ys)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let mut nan = [f32::NAN];
        tanh_in_place(&mut nan);
        assert!(
            nan[0].is_nan(),
            "a NaN stays NaN, so a diverged run is caught"
        );
    }
}
