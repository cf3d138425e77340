//! The MLP: `Linear → tanh` per hidden layer, then a linear output, over a flat parameter
//! vector. One layout, two forward passes and a backward pass.
//!
//! Layer `l` maps activations `X [n, inputs]` to `Y = X·M + b [n, outputs]`, where
//! `M = Wᵀ [inputs, outputs]` is stored row-major (`M[k, j]` at `w + k·outputs + j`, i.e. torch's
//! `weight [outputs, inputs]` transposed) and `b [outputs]` follows it; hidden layers apply
//! tanh ([`crate::nn::tanh`]).
//!
//! - [`Mlp::forward_rows`] (rollouts: a handful of rows per call): each row of `Y` starts as
//!   `b` and adds `x_k · M[k, ·]` for k = 0, 1, … (row-wise axpy loops over contiguous rows of
//!   `M`, compiled twice, once for AVX2; the same bits either way). At 4 rows, `sgemm`'s packing
//!   of the weights costs more than the product.
//! - [`Mlp::forward`] (the native backend's update: minibatches of 100s of rows): the same
//!   product through `matrixmultiply::sgemm`, keeping every layer's activations for the
//!   backward pass. Both forwards agree to float rounding (~1e-6; a test checks).
//! - [`Mlp::backward`]: given `D = ∂L/∂Y [n, outputs]`: `∂L/∂M = Xᵀ D`, `∂L/∂b = Σ_rows D`,
//!   `∂L/∂X = D Mᵀ`, and through the tanh that made `X`,
//!   `∂L/∂(pre-activation) = ∂L/∂X ⊙ (1 − X²)`.
//!
//! `sgemm` runs single-threaded and is deterministic for a given CPU.

/// Where one layer's weight and bias live in the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub inputs: usize,
    pub outputs: usize,
    /// Offset of `M = Wᵀ [inputs, outputs]`, row-major.
    pub w: usize,
    /// Offset of `b [outputs]`.
    pub b: usize,
}

impl Layer {
    /// `M = Wᵀ [inputs, outputs]`, row-major.
    pub fn weight<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.w..self.w + self.inputs * self.outputs]
    }

    /// `b [outputs]`.
    pub fn bias<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.b..self.b + self.outputs]
    }
}

/// The layers of one MLP: offsets into a flat parameter vector that holds its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    pub layers: Vec<Layer>,
}

/// Checks that every strided access of [`gemm`]'s operands lies inside its slice (panics if
/// not), and says whether there is a product to take (`m` and `n` not 0).
pub(crate) fn gemm_in_bounds(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &[f32],
) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    if k > 0 {
        assert!(a.len() > (m - 1) * rsa + (k - 1) * csa, "gemm: A too short");
        assert!(b.len() > (k - 1) * rsb + (n - 1) * csb, "gemm: B too short");
    }
    assert!(c.len() >= m * n, "gemm: C too short");
    true
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
    if !gemm_in_bounds((m, k, n), a, (rsa, csa), b, (rsb, csb), c) {
        return;
    }
    // SAFETY: `gemm_in_bounds` keeps every strided access of A, B and C inside the slices,
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

/// `target [rows, outputs] += x [rows, inputs] · m [inputs, outputs]`, row by row, adding
/// `x_k · m[k, ·]` for k in order.
#[inline(always)]
fn dense_rows_generic(m: &[f32], inputs: usize, outputs: usize, x: &[f32], target: &mut [f32]) {
    for (r, row) in target.chunks_exact_mut(outputs).enumerate() {
        for (k, &xk) in x[r * inputs..(r + 1) * inputs].iter().enumerate() {
            let w = &m[k * outputs..(k + 1) * outputs];
            for (o, wv) in row.iter_mut().zip(w) {
                *o += wv * xk;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dense_rows_avx2(m: &[f32], inputs: usize, outputs: usize, x: &[f32], target: &mut [f32]) {
    dense_rows_generic(m, inputs, outputs, x, target)
}

fn dense_rows(m: &[f32], inputs: usize, outputs: usize, x: &[f32], target: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { dense_rows_avx2(m, inputs, outputs, x, target) };
    }
    dense_rows_generic(m, inputs, outputs, x, target)
}

impl Mlp {
    /// Lays out an MLP of `sizes` (inputs, hidden…, outputs) from `offset` on, advancing it
    /// past its parameters: per layer `M [inputs, outputs]`, then `b [outputs]`.
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

    pub fn inputs(&self) -> usize {
        self.layers.first().expect("an MLP has layers").inputs
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().expect("an MLP has layers").outputs
    }

    /// The output `[n, outputs]` for `n` rows of `x`, into `out`, by row-wise axpy loops (the
    /// rollout's forward, see the module doc); `a` and `b` are scratch.
    pub fn forward_rows(
        &self,
        params: &[f32],
        x: &[f32],
        n: usize,
        a: &mut Vec<f32>,
        b: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) {
        let last = self.layers.len() - 1;
        a.clear();
        a.extend_from_slice(&x[..n * self.inputs()]);
        for (i, l) in self.layers.iter().enumerate() {
            let target = if i == last { &mut *out } else { &mut *b };
            target.clear();
            for _ in 0..n {
                target.extend_from_slice(l.bias(params));
            }
            dense_rows(l.weight(params), l.inputs, l.outputs, a, target);
            if i != last {
                crate::nn::tanh::tanh_in_place(b);
                std::mem::swap(a, b);
            }
        }
    }

    /// Forward pass over `n` rows of `x` by `sgemm`; `acts[0]` is `x`, `acts[l]` the output of
    /// layer `l − 1` (after tanh for hidden layers), the last one the MLP's output
    /// `[n, outputs]`.
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, acts: &mut Vec<Vec<f32>>) {
        acts.resize_with(self.layers.len() + 1, Vec::new);
        acts[0].clear();
        acts[0].extend_from_slice(&x[..n * self.inputs()]);
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let (done, rest) = acts.split_at_mut(i + 1);
            let (input, out) = (&done[i], &mut rest[0]);
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(l.bias(params));
            }
            // Y [n, outputs] = X [n, inputs] · M [inputs, outputs] + b.
            gemm(
                (n, l.inputs, l.outputs),
                input,
                (l.inputs, 1),
                l.weight(params),
                (l.outputs, 1),
                1.0,
                out,
            );
            if i != last {
                crate::nn::tanh::tanh_in_place(out);
            }
        }
    }

    /// Backward pass: given `d = ∂L/∂output [n, outputs]` and the activations of the last
    /// [`Mlp::forward`], writes ∂L/∂M and ∂L/∂b of every layer into `grads` (same offsets as
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
            // ∂L/∂M [inputs, outputs] = Xᵀ · D.
            gemm(
                (l.inputs, n, l.outputs),
                input,
                (1, l.inputs),
                d,
                (l.outputs, 1),
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
            // ∂L/∂X [n, inputs] = D · Mᵀ.
            scratch.resize(n * l.inputs, 0.0);
            gemm(
                (n, l.outputs, l.inputs),
                d,
                (l.outputs, 1),
                l.weight(params),
                (1, l.outputs),
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

    fn example() -> (Mlp, Vec<f32>) {
        let mut len = 0;
        let mlp = Mlp::new(&[7, 19, 5], &mut len);
        let params = (0..len)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.037)
            .collect();
        (mlp, params)
    }

    #[test]
    fn the_avx2_layer_gives_the_generic_bits() {
        let m: Vec<f32> = (0..7 * 19)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.137)
            .collect();
        let x: Vec<f32> = (0..5 * 7).map(|i| (i as f32 * 0.77).sin()).collect();
        let (mut a, mut b) = (vec![0.1f32; 5 * 19], vec![0.1f32; 5 * 19]);
        dense_rows(&m, 7, 19, &x, &mut a);
        dense_rows_generic(&m, 7, 19, &x, &mut b);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }

    #[test]
    fn both_forwards_agree_and_the_layout_is_x_times_w_transposed() {
        let (mlp, params) = example();
        let n = 6;
        let x: Vec<f32> = (0..n * 7).map(|i| (i as f32 * 0.53).cos()).collect();
        let mut acts = Vec::new();
        mlp.forward(&params, &x, n, &mut acts);
        let (mut a, mut b, mut out) = (Vec::new(), Vec::new(), Vec::new());
        mlp.forward_rows(&params, &x, n, &mut a, &mut b, &mut out);
        // By hand, in f64 with tanh itself: h = tanh(x M₀ + b₀), y = h M₁ + b₁.
        let layer = |l: &Layer, x: &[f64], tanh: bool| -> Vec<f64> {
            (0..l.outputs)
                .map(|j| {
                    let y = l.bias(&params)[j] as f64
                        + (0..l.inputs)
                            .map(|k| x[k] * l.weight(&params)[k * l.outputs + j] as f64)
                            .sum::<f64>();
                    if tanh { y.tanh() } else { y }
                })
                .collect()
        };
        for r in 0..n {
            let row: Vec<f64> = x[r * 7..(r + 1) * 7].iter().map(|&v| v as f64).collect();
            let y = layer(&mlp.layers[1], &layer(&mlp.layers[0], &row, true), false);
            for j in 0..5 {
                let (batched, rows) = (acts[2][r * 5 + j], out[r * 5 + j]);
                assert!(
                    (batched as f64 - y[j]).abs() < 1e-5,
                    "{batched} vs {}",
                    y[j]
                );
                assert!((rows - batched).abs() < 1e-5, "{rows} vs {batched}");
            }
        }
    }

    #[test]
    fn backward_is_the_derivative_of_forward() {
        // L = Σ c ⊙ y with fixed c: ∂L/∂y = c; compare with central differences in f64-ish
        // steps of the f32 forward.
        let (mlp, params) = example();
        let n = 3;
        let x: Vec<f32> = (0..n * 7).map(|i| (i as f32 * 0.29).sin()).collect();
        let c: Vec<f32> = (0..n * 5).map(|i| (i as f32 * 0.41).cos()).collect();
        let loss = |p: &[f32]| {
            let mut acts = Vec::new();
            mlp.forward(p, &x, n, &mut acts);
            acts[2]
                .iter()
                .zip(&c)
                .map(|(y, c)| (y * c) as f64)
                .sum::<f64>()
        };
        let mut acts = Vec::new();
        mlp.forward(&params, &x, n, &mut acts);
        let mut grads = vec![0.0; params.len()];
        let (mut d, mut scratch) = (c.clone(), Vec::new());
        mlp.backward(&params, &acts, n, &mut d, &mut scratch, &mut grads);
        for i in (0..params.len()).step_by(7) {
            let h = 1e-2f32;
            let (mut up, mut down) = (params.clone(), params.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (loss(&up) - loss(&down)) / (2.0 * h as f64);
            assert!(
                (numeric - grads[i] as f64).abs() < 2e-3,
                "∂L/∂θ[{i}]: numeric {numeric}, backward {}",
                grads[i]
            );
        }
    }
}
