//! The forward pass of a [`Gpt`] for generation on the CPU, in plain Rust: what
//! [`crate::nn::sampling::generate`] runs when the model lives on the CPU in float32.
//!
//! Generation runs one position per step on a few dozen rows, where libtorch spends more time
//! dispatching ~40 small operators per step (and waking its OpenMP pool for each) than in
//! arithmetic. Here the weights are copied once per call into row-major `Wᵀ` matrices, the
//! products go through `matrixmultiply::sgemm` single-threaded, and everything else
//! (LayerNorm, attention over the KV cache, GELU) is loops over contiguous rows. Rows are
//! independent: [`crate::nn::sampling::generate`] cuts the batch into chunks of at most
//! [`CHUNK_ROWS`] rows, which its threads (libtorch's thread count) take in turn. On the bench
//! model this was 0.8–2.5× libtorch's own forward pass, mostly 1.2–2×, in the rounds of
//! docs/rlhf.md's throughput table (`gradgym rlhf bench` prints both).
//! (A hand-written kernel over weights packed once per call was tried in place of `sgemm`,
//! whose packing costs ~10%: it was slower.)
//!
//! **The same numbers whatever the chunking or thread count.** Each output of a product is
//! one sum over the inner dimension in a fixed order (sgemm's kernel blocks the inner
//! dimension in fixed steps, whatever the number of rows), and every other loop runs per row.
//! So a row's logits depend only on its own tokens, and with per-row random streams its sample
//! does too (a test checks 1 against 2 threads and a row alone against the row in a batch).
//! They agree with libtorch's forward pass to float rounding (~1e-5 on the logits; a test
//! checks), not bit for bit: the summation orders differ.
//!
//! The operations are those of [`Gpt`]'s forward pass: token plus position embedding;
//! per block, LayerNorm (ε 1e-5, biased variance), the fused q/k/v projection, causal
//! attention with 1/√head_dim scaling over the cached keys, the output projection and
//! residual, LayerNorm, the 4× MLP with GELU's tanh form (the tanh of [`crate::nn::tanh`],
//! within 1e-6), the projection and residual; the final LayerNorm and the tied unembedding.

use crate::nn::gpt::Gpt;
use crate::nn::sampling::{exp_nonpositive, max_lanes};
use crate::nn::tanh::tanh_in_place;

/// The most rows one chunk runs (its KV cache is `rows × layers × 2 × positions × width`
/// floats).
pub const CHUNK_ROWS: usize = 64;

/// A product's right operand `M [k, n]`, row-major.
struct Matrix {
    m: Vec<f32>,
    k: usize,
    n: usize,
}

impl Matrix {
    /// `Aᵀ` of `a [rows, cols]` (row-major): PyTorch's `weight [outputs, inputs]` becomes
    /// the right operand `[inputs, outputs]`.
    fn transposed(a: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(a.len(), rows * cols);
        let mut m = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                m[c * rows + r] = a[r * cols + c];
            }
        }
        Self {
            m,
            k: cols,
            n: rows,
        }
    }

    /// `c [rows, n] += a [rows, k] · M` (row strides k and n), by `sgemm` on this thread.
    #[inline(always)]
    fn mul_add_into(&self, a: &[f32], rows: usize, c: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        assert!(a.len() >= rows * k && c.len() >= rows * n && self.m.len() == k * n);
        // SAFETY: a holds rows × k floats (row stride k), M k × n, c rows × n (row stride
        // n), checked above; c is borrowed mutably, so it aliases neither.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                self.m.as_ptr(),
                n as isize,
                1,
                1.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
}

/// `y = x Wᵀ + b`.
struct Linear {
    m: Matrix,
    b: Vec<f32>,
}

impl Linear {
    /// From PyTorch's layout: `weight [outputs, inputs]`, row-major.
    fn of(weight: &[f32], bias: &[f32]) -> Self {
        let outputs = bias.len();
        let inputs = weight.len() / outputs;
        assert_eq!(inputs * outputs, weight.len());
        Self {
            m: Matrix::transposed(weight, outputs, inputs),
            b: bias.to_vec(),
        }
    }

    /// `y [rows, outputs] = x [rows, inputs] · Wᵀ + b` (`add`: `y += …` instead).
    #[inline(always)]
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32], add: bool) {
        let n = self.m.n;
        for row in y[..rows * n].chunks_exact_mut(n) {
            if add {
                row.iter_mut().zip(&self.b).for_each(|(y, b)| *y += b);
            } else {
                row.copy_from_slice(&self.b);
            }
        }
        self.m.mul_add_into(x, rows, y);
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Norm {
    /// LayerNorm of each row of `x` (width `weight.len()`) into `y`.
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let w = self.weight.len();
        for (x, y) in x.chunks_exact(w).zip(y.chunks_exact_mut(w)) {
            let (mean, inv) = row_moments(x, 1e-5);
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
                *y = (x - mean) * inv * g + b;
            }
        }
    }
}

/// A row's mean and 1/√(biased variance + `eps`), LayerNorm's statistics, each sum over eight
/// interleaved partial sums (the same order here and in the training passes of
/// [`crate::nn::gpt_native`]).
#[inline(always)]
pub(crate) fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let w = x.len();
    let mean = sum8(x) / w as f32;
    let mut sq = [0f32; 8];
    for (c, _) in x.chunks_exact(8).zip(0..) {
        for (s, &v) in sq.iter_mut().zip(c) {
            let d = v - mean;
            *s += d * d;
        }
    }
    let mut var = fold8(sq);
    for &v in x.chunks_exact(8).remainder() {
        var += (v - mean) * (v - mean);
    }
    (mean, 1.0 / (var / w as f32 + eps).sqrt())
}

/// Σ x over eight interleaved partial sums (a fixed order that vectorises).
#[inline(always)]
pub(crate) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    rest.iter().fold(fold8(acc), |s, &v| s + v)
}

#[inline(always)]
pub(crate) fn fold8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

struct Block {
    ln_1: Norm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: Norm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A host copy of a [`Gpt`]'s weights laid out for the loops above.
pub struct CpuGpt {
    vocab: usize,
    width: usize,
    heads: usize,
    context: usize,
    /// `[vocab, width]`: the embedding rows.
    wte: Vec<f32>,
    /// `[width, vocab]`: the tied unembedding as a product's right operand.
    wte_t: Matrix,
    wpe: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: Norm,
}

impl CpuGpt {
    /// Copies `model`'s weights (from any device) to the host.
    pub fn of(model: &Gpt) -> Self {
        let c = &model.config;
        let get = |n: &str| model.host_values(n);
        let norm = |p: &str| Norm {
            weight: get(&format!("{p}.weight")),
            bias: get(&format!("{p}.bias")),
        };
        let linear = |p: &str| Linear::of(&get(&format!("{p}.weight")), &get(&format!("{p}.bias")));
        let blocks = (0..c.layers)
            .map(|i| {
                let p = format!("transformer.h.{i}");
                Block {
                    ln_1: norm(&format!("{p}.ln_1")),
                    c_attn: linear(&format!("{p}.attn.c_attn")),
                    attn_proj: linear(&format!("{p}.attn.c_proj")),
                    ln_2: norm(&format!("{p}.ln_2")),
                    c_fc: linear(&format!("{p}.mlp.c_fc")),
                    mlp_proj: linear(&format!("{p}.mlp.c_proj")),
                }
            })
            .collect();
        let wte = get("transformer.wte.weight");
        let (v, w) = (c.vocab, c.width);
        let wte_t = Matrix::transposed(&wte, v, w);
        Self {
            vocab: v,
            width: w,
            heads: c.heads,
            context: c.context,
            wte,
            wte_t,
            wpe: get("transformer.wpe.weight"),
            blocks,
            ln_f: norm("transformer.ln_f"),
        }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// Scratch space and the KV cache for a chunk of `rows` rows and up to `positions`
    /// positions (at most the context).
    pub fn state(&self, rows: usize, positions: usize) -> State {
        assert!(
            positions <= self.context,
            "{positions} positions exceed the context of {}",
            self.context
        );
        // Rounded up to whole groups of eight positions (the scores are computed eight at a
        // time).
        let capacity = positions.div_ceil(8) * 8;
        let per_layer = rows * capacity * self.width;
        State {
            rows,
            capacity,
            len: 0,
            keys: (0..self.blocks.len())
                .map(|_| vec![0f32; per_layer])
                .collect(),
            values: (0..self.blocks.len())
                .map(|_| vec![0f32; per_layer])
                .collect(),
            scratch: Vec::new(),
        }
    }

    /// Runs `tokens` (`rows × t`, row-major, every row the same length `t`) at the positions
    /// after those in `state`, appending their keys and values, and writes the logits of each
    /// row's last new position into `logits` (`rows × vocab`).
    pub fn step(&self, tokens: &[u32], t: usize, state: &mut State, logits: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2. The same operations in the same order (no FMA
            // contraction), on wider vectors: the same bits as the generic code.
            return unsafe { self.step_avx2(tokens, t, state, logits) };
        }
        self.step_generic(tokens, t, state, logits)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn step_avx2(&self, tokens: &[u32], t: usize, state: &mut State, logits: &mut [f32]) {
        self.step_generic(tokens, t, state, logits)
    }

    #[inline(always)]
    fn step_generic(&self, tokens: &[u32], t: usize, state: &mut State, logits: &mut [f32]) {
        let (r, w, h, c) = (state.rows, self.width, self.heads, state.capacity);
        let hd = w / h;
        let past = state.len;
        assert_eq!(tokens.len(), r * t);
        assert!(
            past + t <= c.min(self.context),
            "{} positions exceed the context of {} or this state's room",
            past + t,
            self.context
        );
        assert!(logits.len() >= r * self.vocab);
        let n = r * t;
        let mut s = std::mem::take(&mut state.scratch);
        s.resize(n * w * 4 + n * 3 * w + n * 4 * w + c, 0.0);
        let (x, rest) = s.split_at_mut(n * w);
        let (a, rest) = rest.split_at_mut(n * w);
        let (y, rest) = rest.split_at_mut(n * w);
        let (u, rest) = rest.split_at_mut(n * w);
        let (qkv, rest) = rest.split_at_mut(n * 3 * w);
        let (m, scores) = rest.split_at_mut(n * 4 * w);
        for (i, (&tok, x)) in tokens.iter().zip(x.chunks_exact_mut(w)).enumerate() {
            let pos = past + i % t;
            let e = &self.wte[tok as usize * w..][..w];
            let p = &self.wpe[pos * w..][..w];
            for ((x, &e), &p) in x.iter_mut().zip(e).zip(p) {
                *x = e + p;
            }
        }
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, block) in self.blocks.iter().enumerate() {
            block.ln_1.apply(x, a);
            block.c_attn.apply(a, n, qkv, false);
            // Keys and values into the cache, row i, head j: keys transposed,
            // `kc[((i·h + j)·hd + d)·c + position]` (so that a query's scores are a sum of
            // rows over d, vectorised over positions), values `vc[((i·h + j)·c + position)·hd + d]`.
            let (kc, vc) = (&mut state.keys[l], &mut state.values[l]);
            for i in 0..r {
                for p in 0..t {
                    let src = &qkv[(i * t + p) * 3 * w..][..3 * w];
                    for j in 0..h {
                        let head = i * h + j;
                        for (d, &k) in src[w + j * hd..][..hd].iter().enumerate() {
                            kc[(head * hd + d) * c + past + p] = k;
                        }
                        let at = (head * c + past + p) * hd;
                        vc[at..at + hd].copy_from_slice(&src[2 * w + j * hd..][..hd]);
                    }
                }
            }
            // Causal attention: query p (position past + p) over keys 0..=past + p.
            for i in 0..r {
                for p in 0..t {
                    let keys = past + p + 1;
                    let q_row = &qkv[(i * t + p) * 3 * w..][..w];
                    let y_row = &mut y[(i * t + p) * w..][..w];
                    for j in 0..h {
                        let head = i * h + j;
                        let q = &q_row[j * hd..][..hd];
                        // Scores eight positions at a time, in registers (positions past
                        // `keys` are computed from whatever the buffer holds and dropped).
                        let kt = &kc[head * hd * c..][..hd * c];
                        for kb in (0..keys).step_by(8) {
                            let mut acc = [0f32; 8];
                            for (d, &qd) in q.iter().enumerate() {
                                let k8: &[f32; 8] = kt[d * c + kb..][..8].try_into().unwrap();
                                for (a, &k) in acc.iter_mut().zip(k8) {
                                    *a += qd * k;
                                }
                            }
                            let n = (keys - kb).min(8);
                            scores[kb..kb + n].copy_from_slice(&acc[..n]);
                        }
                        let sc = &mut scores[..keys];
                        let max = max_lanes(sc) * scale;
                        for s in sc.iter_mut() {
                            *s = exp_nonpositive((*s * scale - max) as f64) as f32;
                        }
                        let inv = 1.0 / sum8(sc);
                        // The weighted values eight dimensions at a time, in registers.
                        let out = &mut y_row[j * hd..][..hd];
                        let values = &vc[head * c * hd..][..keys * hd];
                        for (db, out8) in out.chunks_exact_mut(8).enumerate() {
                            let mut acc = [0f32; 8];
                            for (&s, v) in sc.iter().zip(values.chunks_exact(hd)) {
                                let v8: &[f32; 8] = v[db * 8..][..8].try_into().unwrap();
                                for (a, &v) in acc.iter_mut().zip(v8) {
                                    *a += s * v;
                                }
                            }
                            for (o, a) in out8.iter_mut().zip(acc) {
                                *o = a * inv;
                            }
                        }
                        let rest = hd - hd % 8;
                        for dd in rest..hd {
                            let mut a = 0f32;
                            for (&s, v) in sc.iter().zip(values.chunks_exact(hd)) {
                                a += s * v[dd];
                            }
                            out[dd] = a * inv;
                        }
                    }
                }
            }
            block.attn_proj.apply(y, n, x, true);
            block.ln_2.apply(x, a);
            block.c_fc.apply(a, n, m, false);
            gelu_tanh(m);
            block.mlp_proj.apply(m, n, x, true);
        }
        // The last new position of each row: final LayerNorm, then the unembedding.
        for i in 0..r {
            u[i * w..][..w].copy_from_slice(&x[(i * t + t - 1) * w..][..w]);
        }
        self.ln_f.apply(&u[..r * w], &mut a[..r * w]);
        let v = self.vocab;
        logits[..r * v].fill(0.0);
        self.wte_t.mul_add_into(&a[..r * w], r, logits);
        state.len = past + t;
        state.scratch = s;
    }
}

/// GELU's tanh form, `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`, in place.
#[inline(always)]
fn gelu_tanh(xs: &mut [f32]) {
    const K: f32 = 0.797_884_6; // √(2/π)
    const BLOCK: usize = 256;
    let mut inner = [0f32; BLOCK];
    for c in xs.chunks_mut(BLOCK) {
        let inner = &mut inner[..c.len()];
        for (t, &x) in inner.iter_mut().zip(c.iter()) {
            *t = K * (x + 0.044_715 * x * x * x);
        }
        tanh_in_place(inner);
        for (x, &t) in c.iter_mut().zip(inner.iter()) {
            *x = 0.5 * *x * (1.0 + t);
        }
    }
}

/// A chunk's KV cache and scratch space.
pub struct State {
    rows: usize,
    /// Positions the cache has room for.
    capacity: usize,
    len: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    scratch: Vec<f32>,
}

impl State {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
