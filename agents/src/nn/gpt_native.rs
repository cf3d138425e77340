//! The training passes of a [`Gpt`] on the CPU in plain Rust: forward with its activations kept,
//! and backward to the gradient of every parameter, for RL at token level (the native backend of
//! [`crate::rlhf::learner::TokenLearner`]).
//!
//! **Why.** Through libtorch one gradient step of the bench model is ~60 operators forward and
//! ~120 backward on small tensors, each dispatched, allocated and spread over OpenMP's threads
//! with a barrier; about half of a PPO update's time went outside the matrix products. Here the
//! batch is cut into chunks ([`chunk_rows`]: at most [`CHUNK`] sequences, at least four chunks
//! where the batch allows); each thread takes whole chunks and runs the forward and backward
//! pass of its chunk alone (products by `sgemm` on that thread, the rest loops over rows), so
//! the threads meet once per pass, where the chunks' gradients are summed. On the bench it is
//! −3% to +8% against libtorch end to end on an Intel CPU, and on an AMD EPYC 4.5–15.4% faster
//! (median 10%) in rounds 41–48 and −2% to +45% (median 15%) in rounds 49–64: its own loops
//! (attention, GELU, LayerNorm, the log-softmax) take back part of what it saves (docs/rlhf.md,
//! Throughput). It is the RL stage's default on the CPU (`rl.backend = "auto"`).
//!
//! **The same numbers whatever the thread count.** A chunk's outputs and gradients depend only on
//! its own rows, and the chunks' gradients are summed in chunk order, so a run gives the same
//! bits on 1 thread or 16 (a test checks). They agree with libtorch's autograd to float rounding
//! (tests check the outputs and every parameter's gradient), not bit for bit.
//!
//! The operations are [`Gpt`]'s: token plus position embedding; per block LayerNorm (ε 1e-5,
//! biased variance), the fused q/k/v projection, causal attention with 1/√head_dim scaling, the
//! output projection and residual, LayerNorm, the 4× MLP with GELU's tanh form (the tanh of
//! [`crate::nn::tanh`], within 1e-6), the projection and residual; the final LayerNorm; then one
//! of two heads: the tied unembedding's log-softmax (the log-probability of given target tokens
//! and the entropy over the vocabulary), or the scalar head (`score`). Only the positions from
//! `from` on are read, so the last block runs its projection and MLP at those positions only.

use crate::nn::gpt::{Gpt, GptConfig};
use crate::nn::gpt_cpu::{fold8, row_moments, sum8};
use crate::nn::sampling::max_lanes;
use crate::nn::tanh::tanh_scalar;

/// The most sequences in a chunk: the unit a thread takes, and of the gradient's summation
/// order.
pub const CHUNK: usize = 16;

/// Sequences per chunk for a batch of `b`: at least four chunks where the batch allows (so
/// that a minibatch of 16 still spreads over the threads, and a batch of 64 over four), at most
/// [`CHUNK`] sequences each (larger chunks make the products more efficient). It depends on the
/// batch alone, never on the thread count, so neither do the bits. Chunks of 32 (two for a
/// batch of 64) were measured too: a few percent faster on two cores in some alternated pairs
/// and slower in others, and they would have kept a batch of 64 on two threads on any machine.
pub fn chunk_rows(b: usize) -> usize {
    b.div_ceil(4).clamp(1, CHUNK)
}

const LN_EPS: f32 = 1e-5;

/// Offsets of one block's parameters in the flat vector.
#[derive(Clone, Debug)]
struct BlockAt {
    ln1_w: usize,
    ln1_b: usize,
    attn_w: usize,
    attn_b: usize,
    proj_w: usize,
    proj_b: usize,
    ln2_w: usize,
    ln2_b: usize,
    fc_w: usize,
    fc_b: usize,
    mproj_w: usize,
    mproj_b: usize,
}

/// Where each parameter sits in the flat vector ([`GptConfig::parameters`]' order).
#[derive(Clone, Debug)]
struct Layout {
    wte: usize,
    wpe: usize,
    blocks: Vec<BlockAt>,
    lnf_w: usize,
    lnf_b: usize,
    score_w: Option<usize>,
    score_b: Option<usize>,
    len: usize,
}

impl Layout {
    fn of(config: &GptConfig) -> Self {
        let mut at = std::collections::HashMap::new();
        let mut len = 0usize;
        for (name, shape) in config.parameters() {
            at.insert(name, len);
            len += shape.iter().product::<i64>() as usize;
        }
        let get = |n: &str| at[n];
        let blocks = (0..config.layers)
            .map(|i| {
                let p = |s: &str| get(&format!("transformer.h.{i}.{s}"));
                BlockAt {
                    ln1_w: p("ln_1.weight"),
                    ln1_b: p("ln_1.bias"),
                    attn_w: p("attn.c_attn.weight"),
                    attn_b: p("attn.c_attn.bias"),
                    proj_w: p("attn.c_proj.weight"),
                    proj_b: p("attn.c_proj.bias"),
                    ln2_w: p("ln_2.weight"),
                    ln2_b: p("ln_2.bias"),
                    fc_w: p("mlp.c_fc.weight"),
                    fc_b: p("mlp.c_fc.bias"),
                    mproj_w: p("mlp.c_proj.weight"),
                    mproj_b: p("mlp.c_proj.bias"),
                }
            })
            .collect();
        Self {
            wte: get("transformer.wte.weight"),
            wpe: get("transformer.wpe.weight"),
            blocks,
            lnf_w: get("transformer.ln_f.weight"),
            lnf_b: get("transformer.ln_f.bias"),
            score_w: at.get("score.weight").copied(),
            score_b: at.get("score.bias").copied(),
            len,
        }
    }
}

/// A host copy of a [`Gpt`]'s parameters as one flat vector, in [`GptConfig::parameters`]'
/// order, and the passes over it.
#[derive(Clone, Debug)]
pub struct NativeGpt {
    pub config: GptConfig,
    /// Every parameter, flat.
    params: Vec<f32>,
    layout: Layout,
    /// Which weights these are: a new number at every change (a tape holds the number of the
    /// weights it ran).
    version: u64,
}

/// The next weights' number ([`NativeGpt::version`]).
fn next_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What the passes read at each position from `from` on.
#[derive(Clone, Copy, Debug)]
pub enum Head<'a> {
    /// The tied unembedding: the log-probability of `targets[i, j]` (`[B, L − from]`) and the
    /// entropy of the distribution, at position `from + j` of row i.
    Lm { targets: &'a [i64] },
    /// The scalar head.
    Scalar,
}

/// A batch for the passes: `tokens` `[b, l]` row-major; the positions `from..l` are read.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub tokens: &'a [i64],
    pub b: usize,
    pub l: usize,
    pub from: usize,
}

impl Batch<'_> {
    /// Positions read per row.
    pub fn read(&self) -> usize {
        self.l - self.from
    }
}

/// The outputs of a forward pass, `[B, L − from]` each: log-probabilities and entropies for
/// [`Head::Lm`], values (in `main`) for [`Head::Scalar`] (`entropy` empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub main: Vec<f32>,
    pub entropy: Vec<f32>,
}

/// One block's kept activations for a chunk of `n` rows (`nk` of them after the attention:
/// the last block keeps only the positions read).
#[derive(Debug, Default)]
struct BlockTape {
    /// The block's input (the residual stream), `[n, w]`.
    x: Vec<f32>,
    mean1: Vec<f32>,
    rstd1: Vec<f32>,
    /// LayerNorm 1's output, `[n, w]`.
    a: Vec<f32>,
    /// `[n, 3w]`.
    qkv: Vec<f32>,
    /// Attention probabilities `[rows, heads, l, l]` (zero above the diagonal).
    p: Vec<f32>,
    /// The attention's output before its projection, `[nk, w]`.
    y: Vec<f32>,
    /// The residual stream after the attention, `[nk, w]`.
    x2: Vec<f32>,
    mean2: Vec<f32>,
    rstd2: Vec<f32>,
    /// LayerNorm 2's output, `[nk, w]`.
    m: Vec<f32>,
    /// GELU's derivative at the MLP's pre-activation, `[nk, 4w]`.
    dgelu: Vec<f32>,
    /// GELU's output, `[nk, 4w]`.
    g: Vec<f32>,
}

/// A chunk's kept activations.
#[derive(Debug, Default)]
struct ChunkTape {
    rows: usize,
    blocks: Vec<BlockTape>,
    /// The final residual stream at the positions read, `[nr, w]`.
    xf: Vec<f32>,
    meanf: Vec<f32>,
    rstdf: Vec<f32>,
    /// The final LayerNorm's output, `[nr, w]`.
    hf: Vec<f32>,
    /// The logits, the probabilities and log Σ exp of each row, `[nr, vocab]`, `[nr, vocab]`
    /// and `[nr]` ([`Head::Lm`] only).
    logits: Vec<f32>,
    probs: Vec<f32>,
    lse: Vec<f32>,
    /// The outputs `[nr]`: the targets' log-probabilities, or the values.
    out: Vec<f32>,
    /// The entropies `[nr]` ([`Head::Lm`] only).
    entropy: Vec<f32>,
}

/// A forward pass's activations, for [`NativeGpt::backward`].
#[derive(Debug)]
pub struct Tape {
    chunks: Vec<ChunkTape>,
    b: usize,
    l: usize,
    from: usize,
    lm: bool,
    tokens: Vec<i64>,
    targets: Vec<i64>,
    /// `params` of the model that ran it, to refuse a backward pass through other weights.
    version: u64,
}

impl Tape {
    /// The version of the parameters it was recorded with ([`NativeGpt::version`]).
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// Float buffers kept between passes for the next ones: a pass's activations are tens of
/// megabytes, which fresh allocations would take from the kernel again as zeroed pages on
/// every pass. The pool holds what the largest set of passes alive at once used (the bench's
/// PPO update: about 430 buffers, 149 MiB, while the rollout keeps two passes for the first
/// gradient step and scores with two more), up to [`POOL_MAX`] buffers and
/// [`POOL_MAX_FLOATS`] floats; a buffer given back beyond either is freed.
static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool {
    buffers: Vec::new(),
    floats: 0,
});
const POOL_MAX: usize = 4096;
const POOL_MAX_FLOATS: usize = 256 << 20;

struct Pool {
    buffers: Vec<Vec<f32>>,
    /// The buffers' capacities, summed.
    floats: usize,
}

/// A buffer of `n` floats from the pool (the smallest that holds them) or new. Its contents
/// are whatever an earlier pass left: the caller writes every element before reading it.
fn buffer(n: usize) -> Vec<f32> {
    let found = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        best.map(|i| {
            let v = pool.buffers.swap_remove(i);
            pool.floats -= v.capacity();
            v
        })
    };
    match found {
        Some(mut v) => {
            if v.len() >= n {
                v.truncate(n);
            } else {
                v.resize(n, 0.0);
            }
            v
        }
        None => {
            MISSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            vec![0.0; n]
        }
    }
}

/// Buffers the pool could not serve, so far in this process.
static MISSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many buffers the passes have allocated afresh so far in this process, the pool having
/// none large enough: passes that repeat earlier ones (the same shapes, as many alive at once)
/// should add none.
pub fn pool_misses() -> usize {
    MISSES.load(std::sync::atomic::Ordering::Relaxed)
}

/// [`buffer`] filled with zeros.
fn zeros(n: usize) -> Vec<f32> {
    let mut v = buffer(n);
    v.fill(0.0);
    v
}

/// A copy of `x` in a pooled buffer.
fn copy_of(x: &[f32]) -> Vec<f32> {
    let mut v = buffer(x.len());
    v.copy_from_slice(x);
    v
}

/// Gives `v` back to the pool: the passes' own buffers, and those a pass returned (a gradient
/// from [`NativeGpt::backward`]) once the caller is done with them, which the next pass would
/// otherwise allocate again.
pub fn recycle(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.buffers.len() < POOL_MAX && pool.floats + v.capacity() <= POOL_MAX_FLOATS {
        pool.floats += v.capacity();
        pool.buffers.push(v);
    }
}

impl Drop for BlockTape {
    fn drop(&mut self) {
        for v in [
            &mut self.x,
            &mut self.mean1,
            &mut self.rstd1,
            &mut self.a,
            &mut self.qkv,
            &mut self.p,
            &mut self.y,
            &mut self.x2,
            &mut self.mean2,
            &mut self.rstd2,
            &mut self.m,
            &mut self.dgelu,
            &mut self.g,
        ] {
            recycle(std::mem::take(v));
        }
    }
}

impl Drop for ChunkTape {
    fn drop(&mut self) {
        for v in [
            &mut self.xf,
            &mut self.meanf,
            &mut self.rstdf,
            &mut self.hf,
            &mut self.logits,
            &mut self.probs,
            &mut self.lse,
            &mut self.out,
            &mut self.entropy,
        ] {
            recycle(std::mem::take(v));
        }
    }
}

/// Runs `f` on every chunk index `0..n` on up to `threads` threads (each takes the next
/// chunk in turn) and returns the results in chunk order.
fn for_chunks<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return mkl_sequential(|| (0..n).map(f).collect());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    mkl_sequential(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= n {
                                break mine;
                            }
                            mine.push((i, f(i)));
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a chunk's pass panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// LayerNorm (weight `w`, bias `b`) of each row of `x`, in fresh buffers: the output, and each
/// row's mean and 1/σ for the backward pass.
#[inline(always)]
fn layer_norm(x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = w.len();
    let n = x.len() / c;
    let (mut y, mut mean, mut rstd) = (buffer(n * c), buffer(n), buffer(n));
    for (((x, y), mu), rs) in x
        .chunks_exact(c)
        .zip(y.chunks_exact_mut(c))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let (m, r) = row_moments(x, LN_EPS);
        for (((y, &x), &g), &bb) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - m) * r * g + bb;
        }
        *mu = m;
        *rs = r;
    }
    (y, mean, rstd)
}

/// LayerNorm's backward pass, its weight at `w_at` in `p` and bias at `b_at`: adds the
/// gradient of the input to `dx` and of the weight and bias to theirs in `grad`, from the
/// output's gradient `dy`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn layer_norm_backward(
    p: &[f32],
    grad: &mut [f32],
    (w_at, b_at, c): (usize, usize, usize),
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let w = &p[w_at..][..c];
    let (dw, db) = two(grad, w_at, b_at, c);
    let mut dxhat = vec![0f32; c];
    let c8 = c - c % 8;
    for ((((x, dy), dx), &m), &r) in x
        .chunks_exact(c)
        .zip(dy.chunks_exact(c))
        .zip(dx.chunks_exact_mut(c))
        .zip(mean)
        .zip(rstd)
    {
        // Eight columns at a time, lane k summing columns k, k + 8, … and then the rest in
        // lanes 0, 1, …: the order of a column-by-column loop into lane j mod 8, vectorised.
        let (mut s1, mut s2) = ([0f32; 8], [0f32; 8]);
        for (((((x8, dy8), d8), w8), dw8), db8) in x[..c8]
            .chunks_exact(8)
            .zip(dy[..c8].chunks_exact(8))
            .zip(dxhat[..c8].chunks_exact_mut(8))
            .zip(w[..c8].chunks_exact(8))
            .zip(dw[..c8].chunks_exact_mut(8))
            .zip(db[..c8].chunks_exact_mut(8))
        {
            for k in 0..8 {
                let xh = (x8[k] - m) * r;
                let d = dy8[k] * w8[k];
                d8[k] = d;
                dw8[k] += dy8[k] * xh;
                db8[k] += dy8[k];
                s1[k] += d;
                s2[k] += d * xh;
            }
        }
        for j in c8..c {
            let xh = (x[j] - m) * r;
            let d = dy[j] * w[j];
            dxhat[j] = d;
            dw[j] += dy[j] * xh;
            db[j] += dy[j];
            s1[j - c8] += d;
            s2[j - c8] += d * xh;
        }
        let mean_d = fold8(s1) / c as f32;
        let mean_dx = fold8(s2) / c as f32;
        for ((dx, &x), &d) in dx.iter_mut().zip(x).zip(&dxhat) {
            let xh = (x - m) * r;
            *dx += r * (d - mean_d - xh * mean_dx);
        }
    }
}

type SgemmFn = unsafe extern "C" fn(
    *const u8,
    *const u8,
    *const i32,
    *const i32,
    *const i32,
    *const f32,
    *const f32,
    *const i32,
    *const f32,
    *const i32,
    *const f32,
    *mut f32,
    *const i32,
);

type SetLocalFn = unsafe extern "C" fn(i32) -> i32;

/// MKL's `sgemm_` and its per-thread thread count, both from the process's libraries.
#[derive(Clone, Copy)]
struct Mkl {
    sgemm: SgemmFn,
    set_local_threads: SetLocalFn,
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    fn dlsym(
        handle: *mut std::ffi::c_void,
        symbol: *const std::ffi::c_char,
    ) -> *mut std::ffi::c_void;
}

/// The environment variable that chooses the native passes' products: `mkl` (the default) or
/// `matrixmultiply`.
pub const SGEMM_VARIABLE: &str = "GRADGYM_SGEMM";

/// [`SGEMM_VARIABLE`]'s value, checked: `Err` names a value that is neither `mkl` nor
/// `matrixmultiply` (a misspelling would otherwise change nothing, silently).
pub fn sgemm_choice() -> Result<(), String> {
    match std::env::var(SGEMM_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(()),
        Ok(v) if v == "mkl" || v == "matrixmultiply" => Ok(()),
        Ok(v) => Err(format!(
            "{SGEMM_VARIABLE}={v}: not `mkl` (the default) or `matrixmultiply`"
        )),
        Err(e) => Err(format!("{SGEMM_VARIABLE}: {e}")),
    }
}

/// Which library computes the native passes' products: `mkl` or `matrixmultiply` (no MKL in
/// the process, or `GRADGYM_SGEMM=matrixmultiply`). They round differently, so a run's
/// manifest records it.
pub fn sgemm_name() -> &'static str {
    if mkl().is_some() {
        "mkl"
    } else {
        "matrixmultiply"
    }
}

/// MKL, if the process has it (libtorch's x86-64 CPU library carries it) and `GRADGYM_SGEMM`
/// is not `matrixmultiply`. Another library's `sgemm_` is not taken: its thread count could
/// not be held to the calling thread.
fn mkl() -> Option<Mkl> {
    static F: std::sync::OnceLock<Option<Mkl>> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        if std::env::var("GRADGYM_SGEMM").as_deref() == Ok("matrixmultiply") {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a null handle is glibc's RTLD_DEFAULT: the symbol is looked up in the
            // process's libraries.
            let find =
                |name: &std::ffi::CStr| unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
            let (g, t) = (find(c"sgemm_"), find(c"MKL_Set_Num_Threads_Local"));
            if g.is_null() || t.is_null() {
                return None;
            }
            // SAFETY: MKL's Fortran `sgemm_` and its C `int MKL_Set_Num_Threads_Local(int)`
            // (the lower-case `mkl_set_num_threads_local` is the Fortran one, by reference)
            // have these signatures.
            unsafe {
                Some(Mkl {
                    sgemm: std::mem::transmute::<*mut std::ffi::c_void, SgemmFn>(g),
                    set_local_threads: std::mem::transmute::<*mut std::ffi::c_void, SetLocalFn>(t),
                })
            }
        }
        #[cfg(not(target_os = "linux"))]
        None
    })
}

/// Runs `f` with MKL's products on this thread alone (`MKL_Set_Num_Threads_Local(1)`, undone
/// after): each chunk's products run on the thread that took it, whatever libtorch's thread
/// count, so the bits do not depend on it.
fn mkl_sequential<T>(f: impl FnOnce() -> T) -> T {
    match mkl() {
        None => f(),
        Some(m) => {
            // SAFETY: sets this thread's MKL thread count; returns the previous setting.
            let before = unsafe { (m.set_local_threads)(1) };
            let out = f();
            // SAFETY: as above.
            unsafe { (m.set_local_threads)(before) };
            out
        }
    }
}

/// `C [m, n] = A [m, k] · B [k, n] + beta · C` (C row-major), A and B given by row and column
/// strides, one of which is 1.
fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    let Some(f) = mkl().map(|m| m.sgemm) else {
        return crate::nn::mlp::gemm((m, k, n), a, (rsa, csa), b, (rsb, csb), beta, c);
    };
    if !crate::nn::mlp::gemm_in_bounds((m, k, n), a, (rsa, csa), b, (rsb, csb), c) {
        return;
    }
    if k == 0 {
        let c = &mut c[..m * n];
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|x| *x *= beta);
        }
        return;
    }
    // Column-major: Cᵀ [n, m] = Bᵀ · Aᵀ. A row-major operand (column stride 1) is its
    // transpose in column-major order ('N'); a column-major one (row stride 1) is 'T'.
    let (tb, ldb) = if csb == 1 { (b'N', rsb) } else { (b'T', csb) };
    let (ta, lda) = if csa == 1 { (b'N', rsa) } else { (b'T', csa) };
    assert!(
        (csb == 1 || rsb == 1) && (csa == 1 || rsa == 1),
        "gemm: one stride must be 1"
    );
    let (mm, nn, kk) = (n as i32, m as i32, k as i32);
    let (lda, ldb, ldc) = (ldb.max(1) as i32, lda.max(1) as i32, n as i32);
    let alpha = 1f32;
    // SAFETY: `gemm_in_bounds` and the stride assert keep every access inside the slices; C
    // aliases neither.
    unsafe {
        f(
            &tb,
            &ta,
            &mm,
            &nn,
            &kk,
            &alpha,
            b.as_ptr(),
            &lda,
            a.as_ptr(),
            &ldb,
            &beta,
            c.as_mut_ptr(),
            &ldc,
        );
    }
}

/// `y [n, out] = x [n, in] · Wᵀ + b` with `w` in PyTorch's layout `[out, in]`; `add`: `y += …`.
#[inline(always)]
fn linear(x: &[f32], n: usize, w: &[f32], b: &[f32], y: &mut [f32], add: bool) {
    let out = b.len();
    let inp = w.len() / out;
    let y = &mut y[..n * out];
    if !add {
        for row in y.chunks_exact_mut(out) {
            row.copy_from_slice(b);
        }
    } else {
        for row in y.chunks_exact_mut(out) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    // B[k = input, n = output] = W[output, input]: row stride 1, column stride `inp`.
    gemm((n, inp, out), x, (inp, 1), w, (1, inp), 1.0, y);
}

/// The backward pass of the linear layer whose weight `[out, inp]` sits at `w_at` in `p` and
/// bias at `b_at`, on input `x` `[n, inp]` and output gradient `dy` `[n, out]`: adds
/// `dyᵀ · x` and `Σ_rows dy` to the parameters' gradients in `grad` and returns the input's
/// gradient `dy · W` in a fresh buffer.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn linear_backward(
    p: &[f32],
    grad: &mut [f32],
    (w_at, b_at): (usize, usize),
    (out, inp): (usize, usize),
    x: &[f32],
    n: usize,
    dy: &[f32],
) -> Vec<f32> {
    let w = &p[w_at..][..out * inp];
    let mut dx = buffer(n * inp);
    gemm((n, out, inp), dy, (out, 1), w, (inp, 1), 0.0, &mut dx);
    let (dw, db) = two(grad, w_at, b_at, out * inp);
    gemm((out, n, inp), dy, (1, out), x, (inp, 1), 1.0, dw);
    for row in dy[..n * out].chunks_exact(out) {
        db[..out].iter_mut().zip(row).for_each(|(d, &g)| *d += g);
    }
    dx
}

/// GELU's tanh form into `g` and its derivative into `d`, from the pre-activation `h`, in one
/// pass that vectorises whole (the tanh is [`crate::nn::tanh`]'s, element by element).
#[inline(always)]
fn gelu_forward(h: &[f32], g: &mut [f32], d: &mut [f32]) {
    const K: f32 = 0.797_884_6; // √(2/π)
    const C: f32 = 0.044_715;
    for ((g, d), &x) in g.iter_mut().zip(d.iter_mut()).zip(h) {
        let t = tanh_scalar(K * (x + C * x * x * x));
        *d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x);
        *g = 0.5 * x * (1.0 + t);
    }
}

impl NativeGpt {
    /// Copies `model`'s parameters to the host.
    pub fn of(model: &Gpt) -> Self {
        let config = model.config.clone();
        let layout = Layout::of(&config);
        let mut params = Vec::with_capacity(layout.len);
        for (name, _) in config.parameters() {
            params.extend(model.host_values(&name));
        }
        assert_eq!(params.len(), layout.len);
        Self {
            config,
            params,
            layout,
            version: next_version(),
        }
    }

    /// Copies `model`'s parameters in again (same architecture).
    pub fn read_from(&mut self, model: &Gpt) {
        assert_eq!(model.config, self.config, "another architecture");
        self.version = next_version();
        let mut at = 0;
        for (name, _) in self.config.parameters() {
            let v = model.host_values(&name);
            self.params[at..at + v.len()].copy_from_slice(&v);
            at += v.len();
        }
    }

    /// Writes the parameters into `model`'s tensors (same architecture).
    pub fn write_to(&self, model: &Gpt) {
        assert_eq!(model.config, self.config, "another architecture");
        let mut at = 0;
        for (name, shape) in self.config.parameters() {
            let n = shape.iter().product::<i64>() as usize;
            model.set_host_values(&name, &self.params[at..at + n]);
            at += n;
        }
    }

    /// Parameters in all.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The parameters, flat, in [`GptConfig::parameters`]' order.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The parameters to change (tapes of the weights before no longer apply).
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.version = next_version();
        &mut self.params
    }

    /// Which weights these are: a number that changes whenever they may have.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The forward pass over `batch` on `threads` threads; with `keep`, the activations for
    /// [`NativeGpt::backward`].
    pub fn forward(
        &self,
        batch: Batch<'_>,
        head: Head<'_>,
        keep: bool,
        threads: usize,
    ) -> (Outputs, Option<Tape>) {
        let Batch { tokens, b, l, from } = batch;
        assert_eq!(tokens.len(), b * l, "tokens [b, l]");
        assert!(from < l, "from {from} of {l} positions");
        assert!(
            l <= self.config.context,
            "{l} positions exceed the context of {}",
            self.config.context
        );
        let r = l - from;
        let lm = matches!(head, Head::Lm { .. });
        if let Head::Lm { targets } = head {
            assert_eq!(targets.len(), b * r, "targets [b, l − from]");
        } else {
            assert!(
                self.layout.score_w.is_some(),
                "this model has no scalar head"
            );
        }
        let size = chunk_rows(b);
        let chunks = b.div_ceil(size);
        let tapes = for_chunks(chunks, threads, |c| {
            let lo = c * size;
            let rows = size.min(b - lo);
            let targets = match head {
                Head::Lm { targets } => Some(&targets[lo * r..(lo + rows) * r]),
                Head::Scalar => None,
            };
            self.forward_chunk(&tokens[lo * l..(lo + rows) * l], rows, l, from, targets)
        });
        let mut out = Outputs::default();
        for t in &tapes {
            out.main.extend_from_slice(&t.out);
            out.entropy.extend_from_slice(&t.entropy);
        }
        let tape = keep.then(|| Tape {
            chunks: tapes,
            b,
            l,
            from,
            lm,
            tokens: tokens.to_vec(),
            targets: match head {
                Head::Lm { targets } => targets.to_vec(),
                Head::Scalar => Vec::new(),
            },
            version: self.version,
        });
        (out, tape)
    }

    /// The forward pass of one chunk of `rows` rows (`tokens` `[rows, l]`).
    fn forward_chunk(
        &self,
        tokens: &[i64],
        rows: usize,
        l: usize,
        from: usize,
        targets: Option<&[i64]>,
    ) -> ChunkTape {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA. The same operations in the same order (Rust
            // contracts no multiply-add), on wider vectors: the same bits as the generic code.
            return unsafe { self.forward_chunk_avx2(tokens, rows, l, from, targets) };
        }
        self.forward_chunk_generic(tokens, rows, l, from, targets)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn forward_chunk_avx2(
        &self,
        tokens: &[i64],
        rows: usize,
        l: usize,
        from: usize,
        targets: Option<&[i64]>,
    ) -> ChunkTape {
        self.forward_chunk_generic(tokens, rows, l, from, targets)
    }

    #[inline(always)]
    fn forward_chunk_generic(
        &self,
        tokens: &[i64],
        rows: usize,
        l: usize,
        from: usize,
        targets: Option<&[i64]>,
    ) -> ChunkTape {
        let c = &self.config;
        let p = &self.params;
        let lay = &self.layout;
        let (w, h) = (c.width, c.heads);
        let hd = w / h;
        let n = rows * l;
        let r = l - from;
        let nr = rows * r;
        // The embeddings.
        let mut x = buffer(n * w);
        for (i, (&tok, x)) in tokens.iter().zip(x.chunks_exact_mut(w)).enumerate() {
            let pos = i % l;
            assert!(
                (0..c.vocab as i64).contains(&tok),
                "token {tok} outside the vocabulary of {}",
                c.vocab
            );
            let e = &p[lay.wte + tok as usize * w..][..w];
            let q = &p[lay.wpe + pos * w..][..w];
            for ((x, &e), &q) in x.iter_mut().zip(e).zip(q) {
                *x = e + q;
            }
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let last = lay.blocks.len() - 1;
        let mut blocks = Vec::with_capacity(lay.blocks.len());
        for (li, at) in lay.blocks.iter().enumerate() {
            let mut t = BlockTape::default();
            (t.a, t.mean1, t.rstd1) = layer_norm(&x, &p[at.ln1_w..][..w], &p[at.ln1_b..][..w]);
            t.qkv = buffer(n * 3 * w);
            t.p = buffer(rows * h * l * l);
            linear(
                &t.a,
                n,
                &p[at.attn_w..][..3 * w * w],
                &p[at.attn_b..][..3 * w],
                &mut t.qkv,
                false,
            );
            // Causal attention, per row and head.
            let mut y = buffer(n * w);
            let mut scratch = AttentionScratch::new(l, hd);
            for i in 0..rows {
                for j in 0..h {
                    attention_forward(
                        &t.qkv,
                        i,
                        j,
                        (l, w, hd),
                        scale,
                        &mut t.p[(i * h + j) * l * l..][..l * l],
                        &mut y,
                        &mut scratch,
                    );
                }
            }
            // The last block: only the positions read go on.
            let (nk, keep_rows) = if li == last && from > 0 {
                (nr, true)
            } else {
                (n, false)
            };
            t.x = x;
            let (yk, mut x2) = if keep_rows {
                let yk = select_positions(&y, rows, l, from, w);
                recycle(y);
                (yk, select_positions(&t.x, rows, l, from, w))
            } else {
                (y, copy_of(&t.x))
            };
            linear(
                &yk,
                nk,
                &p[at.proj_w..][..w * w],
                &p[at.proj_b..][..w],
                &mut x2,
                true,
            );
            t.y = yk;
            (t.m, t.mean2, t.rstd2) = layer_norm(&x2, &p[at.ln2_w..][..w], &p[at.ln2_b..][..w]);
            let mut hpre = buffer(nk * 4 * w);
            linear(
                &t.m,
                nk,
                &p[at.fc_w..][..4 * w * w],
                &p[at.fc_b..][..4 * w],
                &mut hpre,
                false,
            );
            t.g = buffer(nk * 4 * w);
            t.dgelu = buffer(nk * 4 * w);
            gelu_forward(&hpre, &mut t.g, &mut t.dgelu);
            recycle(hpre);
            let mut xn = copy_of(&x2);
            linear(
                &t.g,
                nk,
                &p[at.mproj_w..][..4 * w * w],
                &p[at.mproj_b..][..w],
                &mut xn,
                true,
            );
            t.x2 = x2;
            x = xn;
            blocks.push(t);
        }
        // The positions read (all of them already, unless the last block ran everything).
        let xf = if x.len() == nr * w {
            x
        } else {
            let xf = select_positions(&x, rows, l, from, w);
            recycle(x);
            xf
        };
        let mut tape = ChunkTape::default();
        tape.rows = rows;
        tape.blocks = blocks;
        (tape.hf, tape.meanf, tape.rstdf) =
            layer_norm(&xf, &p[lay.lnf_w..][..w], &p[lay.lnf_b..][..w]);
        tape.xf = xf;
        match targets {
            Some(_) => {
                let v = c.vocab;
                let mut logits = buffer(nr * v);
                // logits = hf · wteᵀ: B[k = width, n = vocab] = wte[vocab, width].
                gemm(
                    (nr, w, v),
                    &tape.hf,
                    (w, 1),
                    &p[lay.wte..][..v * w],
                    (1, w),
                    0.0,
                    &mut logits,
                );
                tape.entropy = buffer(nr);
                tape.probs = buffer(nr * v);
                tape.lse = buffer(nr);
                for (((row, pr), ent), lse_out) in logits
                    .chunks_exact(v)
                    .zip(tape.probs.chunks_exact_mut(v))
                    .zip(tape.entropy.iter_mut())
                    .zip(tape.lse.iter_mut())
                {
                    let max = max_lanes(row);
                    for (p, &z) in pr.iter_mut().zip(row) {
                        *p = exp_nonpositive(z - max);
                    }
                    let sum = sum8(pr);
                    let inv = 1.0 / sum;
                    // H = lse − Σ p z, element k in lane k mod 8 (vectorised by blocks of 8).
                    let v8 = v - v % 8;
                    let mut pz = [0f32; 8];
                    for (p8, z8) in pr[..v8].chunks_exact_mut(8).zip(row[..v8].chunks_exact(8)) {
                        for ((a, p), &z) in pz.iter_mut().zip(p8).zip(z8) {
                            *p *= inv;
                            *a += *p * z;
                        }
                    }
                    for ((a, p), &z) in pz.iter_mut().zip(&mut pr[v8..]).zip(&row[v8..]) {
                        *p *= inv;
                        *a += *p * z;
                    }
                    let lse = max + sum.ln();
                    *lse_out = lse;
                    *ent = lse - fold8(pz);
                }
                let targets = targets.expect("LM head");
                tape.out = buffer(nr);
                for (((o, row), &t), &lse) in tape
                    .out
                    .iter_mut()
                    .zip(logits.chunks_exact(v))
                    .zip(targets)
                    .zip(&tape.lse)
                {
                    *o = row[t as usize] - lse;
                }
                tape.logits = logits;
            }
            None => {
                let sw = &p[self.layout.score_w.expect("scalar head")..][..w];
                let sb = p[self.layout.score_b.expect("scalar head")];
                tape.out = buffer(nr);
                for (o, h) in tape.out.iter_mut().zip(tape.hf.chunks_exact(w)) {
                    *o = dot(h, sw) + sb;
                }
            }
        }
        tape
    }

    /// The backward pass of `tape` (a forward pass of these very parameters): the gradient of
    /// every parameter, flat, given the gradients of the outputs (`d_main` `[B, L − from]`:
    /// of the log-probabilities or the values; `d_entropy` the same for the entropies, LM head
    /// only).
    pub fn backward(
        &self,
        tape: &Tape,
        d_main: &[f32],
        d_entropy: Option<&[f32]>,
        threads: usize,
    ) -> Vec<f32> {
        assert_eq!(
            tape.version, self.version,
            "a tape of other parameters than these"
        );
        let r = tape.l - tape.from;
        assert_eq!(d_main.len(), tape.b * r);
        if let Some(d) = d_entropy {
            assert!(tape.lm, "entropies are the LM head's");
            assert_eq!(d.len(), tape.b * r);
        }
        let grads = for_chunks(tape.chunks.len(), threads, |ci| {
            let lo = ci * chunk_rows(tape.b);
            let ct = &tape.chunks[ci];
            let rows = ct.rows;
            self.backward_chunk(
                tape,
                ct,
                &tape.tokens[lo * tape.l..(lo + rows) * tape.l],
                &d_main[lo * r..(lo + rows) * r],
                d_entropy.map(|d| &d[lo * r..(lo + rows) * r]),
                if tape.lm {
                    &tape.targets[lo * r..(lo + rows) * r]
                } else {
                    &[]
                },
            )
        });
        // The chunks' sum, in chunk order, each parameter range on a thread of its own.
        let mut it = grads.into_iter();
        let mut total = it.next().unwrap_or_else(|| vec![0.0; self.params.len()]);
        let rest: Vec<Vec<f32>> = it.collect();
        if !rest.is_empty() {
            let span = total.len().div_ceil(threads.max(1));
            std::thread::scope(|s| {
                for (k, out) in total.chunks_mut(span).enumerate() {
                    let rest = &rest;
                    s.spawn(move || {
                        for g in rest {
                            for (o, &v) in out.iter_mut().zip(&g[k * span..]) {
                                *o += v;
                            }
                        }
                    });
                }
            });
        }
        rest.into_iter().for_each(recycle);
        total
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        tape: &Tape,
        ct: &ChunkTape,
        tokens: &[i64],
        d_main: &[f32],
        d_entropy: Option<&[f32]>,
        targets: &[i64],
    ) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as in `forward_chunk`.
            return unsafe {
                self.backward_chunk_avx2(tape, ct, tokens, d_main, d_entropy, targets)
            };
        }
        self.backward_chunk_generic(tape, ct, tokens, d_main, d_entropy, targets)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk_avx2(
        &self,
        tape: &Tape,
        ct: &ChunkTape,
        tokens: &[i64],
        d_main: &[f32],
        d_entropy: Option<&[f32]>,
        targets: &[i64],
    ) -> Vec<f32> {
        self.backward_chunk_generic(tape, ct, tokens, d_main, d_entropy, targets)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk_generic(
        &self,
        tape: &Tape,
        ct: &ChunkTape,
        tokens: &[i64],
        d_main: &[f32],
        d_entropy: Option<&[f32]>,
        targets: &[i64],
    ) -> Vec<f32> {
        let c = &self.config;
        let p = &self.params;
        let lay = &self.layout;
        let (w, h) = (c.width, c.heads);
        let hd = w / h;
        let (rows, l, from) = (ct.rows, tape.l, tape.from);
        let n = rows * l;
        let r = l - from;
        let nr = rows * r;
        let mut grad = zeros(self.params.len());
        // The head.
        let mut dhf = zeros(nr * w);
        if tape.lm {
            let v = c.vocab;
            let mut dz = buffer(nr * v);
            for (i, ((dz, pr), z)) in dz
                .chunks_exact_mut(v)
                .zip(ct.probs.chunks_exact(v))
                .zip(ct.logits.chunks_exact(v))
                .enumerate()
            {
                let g = d_main[i];
                let ge = d_entropy.map_or(0.0, |d| d[i]);
                // log p_j + H = z_j − lse + H.
                let shift = ct.entropy[i] - ct.lse[i];
                for ((dz, &p), &z) in dz.iter_mut().zip(pr).zip(z) {
                    // d log p_t / dz_j = δ_tj − p_j; d H / dz_j = −p_j (log p_j + H).
                    *dz = -g * p - ge * p * (z + shift);
                }
                dz[targets[i] as usize] += g;
            }
            // dhf = dz · wte; d wte += dzᵀ · hf.
            gemm(
                (nr, v, w),
                &dz,
                (v, 1),
                &p[lay.wte..][..v * w],
                (w, 1),
                1.0,
                &mut dhf,
            );
            gemm(
                (v, nr, w),
                &dz,
                (1, v),
                &ct.hf,
                (w, 1),
                1.0,
                &mut grad[lay.wte..][..v * w],
            );
            recycle(dz);
        } else {
            let sw_at = lay.score_w.expect("scalar head");
            let sb_at = lay.score_b.expect("scalar head");
            let sw = &p[sw_at..][..w];
            for (i, (dh, hf)) in dhf
                .chunks_exact_mut(w)
                .zip(ct.hf.chunks_exact(w))
                .enumerate()
            {
                let g = d_main[i];
                for ((d, &s), (gw, &hv)) in dh
                    .iter_mut()
                    .zip(sw)
                    .zip(grad[sw_at..sw_at + w].iter_mut().zip(hf))
                {
                    *d = g * s;
                    *gw += g * hv;
                }
                grad[sb_at] += g;
            }
        }
        // The final LayerNorm.
        let mut dx = zeros(nr * w);
        layer_norm_backward(
            p,
            &mut grad,
            (lay.lnf_w, lay.lnf_b, w),
            &ct.xf,
            &ct.meanf,
            &ct.rstdf,
            &dhf,
            &mut dx,
        );
        recycle(dhf);
        let scale = 1.0 / (hd as f32).sqrt();
        let last = lay.blocks.len() - 1;
        for (li, at) in lay.blocks.iter().enumerate().rev() {
            let t = &ct.blocks[li];
            let keep_rows = li == last && from > 0;
            let nk = if keep_rows { nr } else { n };
            // dx: the gradient of the block's output, [nk, w].
            // The MLP.
            let mut dg = linear_backward(
                p,
                &mut grad,
                (at.mproj_w, at.mproj_b),
                (w, 4 * w),
                &t.g,
                nk,
                &dx,
            );
            for (d, &dd) in dg.iter_mut().zip(&t.dgelu) {
                *d *= dd;
            }
            let dm = linear_backward(p, &mut grad, (at.fc_w, at.fc_b), (4 * w, w), &t.m, nk, &dg);
            recycle(dg);
            // dx2 = dx (the residual) + LayerNorm 2's input gradient.
            let mut dx2 = dx;
            layer_norm_backward(
                p,
                &mut grad,
                (at.ln2_w, at.ln2_b, w),
                &t.x2,
                &t.mean2,
                &t.rstd2,
                &dm,
                &mut dx2,
            );
            recycle(dm);
            // The attention's output projection.
            let dyk = linear_backward(p, &mut grad, (at.proj_w, at.proj_b), (w, w), &t.y, nk, &dx2);
            // Back to every position: the residual, and the attention's output.
            let (mut dxin, dy) = if keep_rows {
                let out = (
                    scatter_positions(&dx2, rows, l, from, w),
                    scatter_positions(&dyk, rows, l, from, w),
                );
                recycle(dx2);
                recycle(dyk);
                out
            } else {
                (dx2, dyk)
            };
            // The attention, per row and head (every entry of dqkv is written).
            let mut dqkv = buffer(n * 3 * w);
            let mut scratch = AttentionGradScratch::new(l, hd);
            for i in 0..rows {
                for j in 0..h {
                    attention_backward(
                        &t.qkv,
                        &t.p[(i * h + j) * l * l..][..l * l],
                        &dy,
                        &mut dqkv,
                        (i, j),
                        (l, w, hd),
                        scale,
                        &mut scratch,
                    );
                }
            }
            let da = linear_backward(
                p,
                &mut grad,
                (at.attn_w, at.attn_b),
                (3 * w, w),
                &t.a,
                n,
                &dqkv,
            );
            recycle(dqkv);
            recycle(dy);
            layer_norm_backward(
                p,
                &mut grad,
                (at.ln1_w, at.ln1_b, w),
                &t.x,
                &t.mean1,
                &t.rstd1,
                &da,
                &mut dxin,
            );
            recycle(da);
            dx = dxin;
        }
        // The embeddings.
        for (i, (&tok, d)) in tokens.iter().zip(dx.chunks_exact(w)).enumerate() {
            let pos = i % l;
            for (g, &v) in grad[lay.wte + tok as usize * w..][..w].iter_mut().zip(d) {
                *g += v;
            }
            for (g, &v) in grad[lay.wpe + pos * w..][..w].iter_mut().zip(d) {
                *g += v;
            }
        }
        recycle(dx);
        grad
    }
}

/// Scratch space of [`attention_forward`] for `l` positions and heads of `hd` dimensions.
struct AttentionScratch {
    /// The keys transposed, `[hd, lp]`, lp = l rounded up to 8.
    kt: Vec<f32>,
    /// Four queries' scores, `[4, lp]`.
    scores: Vec<f32>,
    /// A query of zeros, for the rows of a last block of fewer than four.
    zero_q: Vec<f32>,
    /// Probabilities of zero, likewise.
    zero_p: Vec<f32>,
    lp: usize,
}

impl AttentionScratch {
    fn new(l: usize, hd: usize) -> Self {
        let lp = l.div_ceil(8) * 8;
        Self {
            kt: vec![0.0; hd * lp],
            scores: vec![0.0; 4 * lp],
            zero_q: vec![0.0; hd],
            zero_p: vec![0.0; l],
            lp,
        }
    }
}

/// Causal softmax attention of head `j` of row `i`: probabilities into `probs` `[l, l]` (zero
/// above the diagonal) and the weighted values into `y` (`[rows·l, w]`, the head's columns).
/// Four queries at a time share every load of the keys and of the values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_forward(
    qkv: &[f32],
    i: usize,
    j: usize,
    (l, w, hd): (usize, usize, usize),
    scale: f32,
    probs: &mut [f32],
    y: &mut [f32],
    s: &mut AttentionScratch,
) {
    let lp = s.lp;
    let at = |pos: usize, part: usize| (i * l + pos) * 3 * w + part * w + j * hd;
    transpose_rows(qkv, |k| at(k, 1), (l, hd, lp), &mut s.kt);
    for qb in (0..l).step_by(4) {
        let nq = (l - qb).min(4);
        let kmax = qb + nq;
        let kp = kmax.div_ceil(8) * 8;
        let q: [&[f32]; 4] = std::array::from_fn(|r| {
            if r < nq {
                &qkv[at(qb + r, 0)..][..hd]
            } else {
                &s.zero_q
            }
        });
        // Scores, eight keys at a time in registers, for the four queries together.
        rows_times_transposed(&q, nq, &s.kt, (hd, lp, kp), &mut s.scores);
        // Softmax over each query's keys; zeros after them.
        for r in 0..nq {
            let qi = qb + r;
            let keys = qi + 1;
            let sc = &mut s.scores[r * lp..][..keys];
            sc.iter_mut().for_each(|v| *v *= scale);
            let max = max_lanes(sc);
            for v in sc.iter_mut() {
                *v = exp_nonpositive(*v - max);
            }
            let inv = 1.0 / sum8(sc);
            let prow = &mut probs[qi * l..][..l];
            for (p, &e) in prow[..keys].iter_mut().zip(sc.iter()) {
                *p = e * inv;
            }
            prow[keys..].fill(0.0);
        }
        // The weighted values, eight dimensions at a time in registers.
        let p: [&[f32]; 4] = std::array::from_fn(|r| {
            if r < nq {
                &probs[(qb + r) * l..][..l]
            } else {
                &s.zero_p[..l]
            }
        });
        weighted_rows(
            (&p, nq, kmax),
            (qkv, |k| at(k, 2)),
            hd,
            (y, |r| (i * l + qb + r) * w + j * hd),
        );
    }
}

/// Scratch space of [`attention_backward`] for `l` positions and heads of `hd` dimensions.
struct AttentionGradScratch {
    /// The values transposed, `[hd, lp]`, lp = l rounded up to 8 (zeros past `l`).
    vt: Vec<f32>,
    /// The scores' gradient dS, `[l, lp]`, zero past each query's keys.
    ds: Vec<f32>,
    /// A row of zeros (`max(hd, lp)`), for the rows of a last block of fewer than four.
    zero: Vec<f32>,
    lp: usize,
}

impl AttentionGradScratch {
    fn new(l: usize, hd: usize) -> Self {
        let lp = l.div_ceil(8) * 8;
        Self {
            vt: vec![0.0; hd * lp],
            ds: vec![0.0; l * lp],
            zero: vec![0.0; hd.max(lp)],
            lp,
        }
    }
}

/// The backward pass of [`attention_forward`] for head `j` of row `i`: from the output's
/// gradient `dy` (`[rows·l, w]`) and the kept probabilities `probs` (`[l, l]`), the gradients
/// of the head's queries, keys and values, written into `dqkv` (`[rows·l, 3w]`). With
/// S = q·kᵀ/√hd and P = softmax(S): dP = dy·vᵀ, dS = P ⊙ (dP − Σ_k P dP)/√hd, dq = dS·k,
/// dk = dSᵀ·q, dv = Pᵀ·dy. Each product runs on blocks of four queries (or keys) by eight
/// columns held in registers, and each gradient row is written once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    dy: &[f32],
    dqkv: &mut [f32],
    (i, j): (usize, usize),
    (l, w, hd): (usize, usize, usize),
    scale: f32,
    s: &mut AttentionGradScratch,
) {
    let lp = s.lp;
    let at = |pos: usize, part: usize| (i * l + pos) * 3 * w + part * w + j * hd;
    let yat = |pos: usize| (i * l + pos) * w + j * hd;
    transpose_rows(qkv, |k| at(k, 2), (l, hd, lp), &mut s.vt);
    // dP = dy·vᵀ, four queries by eight keys at a time; then dS in place.
    for qb in (0..l).step_by(4) {
        let nq = (l - qb).min(4);
        let kp = (qb + nq).div_ceil(8) * 8;
        let g: [&[f32]; 4] = std::array::from_fn(|r| {
            if r < nq {
                &dy[yat(qb + r)..][..hd]
            } else {
                &s.zero[..hd]
            }
        });
        rows_times_transposed(&g, nq, &s.vt, (hd, lp, kp), &mut s.ds[qb * lp..]);
        for qi in qb..qb + nq {
            let keys = qi + 1;
            let prow = &probs[qi * l..][..keys];
            let row = &mut s.ds[qi * lp..][..lp];
            let mut acc = [0f32; 8];
            for (k, (&pk, &d)) in prow.iter().zip(row.iter()).enumerate() {
                acc[k % 8] += pk * d;
            }
            let sum = fold8(acc);
            for (d, &pk) in row[..keys].iter_mut().zip(prow) {
                *d = pk * (*d - sum) * scale;
            }
            row[keys..].fill(0.0);
        }
    }
    // dq = dS·k, four queries by eight dimensions at a time.
    for qb in (0..l).step_by(4) {
        let nq = (l - qb).min(4);
        let kmax = qb + nq;
        let dsr: [&[f32]; 4] = std::array::from_fn(|r| {
            if r < nq {
                &s.ds[(qb + r) * lp..][..lp]
            } else {
                &s.zero[..lp]
            }
        });
        weighted_rows(
            (&dsr, nq, kmax),
            (qkv, |k| at(k, 1)),
            hd,
            (dqkv, |r| at(qb + r, 0)),
        );
    }
    // dk = dSᵀ·q and dv = Pᵀ·dy, four keys at a time (dS and P are zero above the diagonal).
    let mut kb = 0;
    while kb < l {
        if l - kb >= 4 {
            key_block::<4>(qkv, probs, dy, dqkv, &s.ds, kb, (i, j), (l, w, hd, lp));
            kb += 4;
        } else {
            key_block::<1>(qkv, probs, dy, dqkv, &s.ds, kb, (i, j), (l, w, hd, lp));
            kb += 1;
        }
    }
}

/// Rows `at(0) … at(l − 1)` of `src` (`hd` values each) as the columns of `dst` `[hd, lp]`.
#[inline(always)]
fn transpose_rows(
    src: &[f32],
    at: impl Fn(usize) -> usize,
    (l, hd, lp): (usize, usize, usize),
    dst: &mut [f32],
) {
    for k in 0..l {
        for (d, &v) in src[at(k)..][..hd].iter().enumerate() {
            dst[d * lp + k] = v;
        }
    }
}

/// `out[r·lp + c] = Σ_d rows[r][d] · t[d·lp + c]` for the first `nq` of four rows and the
/// columns c < `kp` (a multiple of 8): four rows by eight columns at a time in registers, each
/// load of `t` shared by the four (the scores q·kᵀ forward, dP = dy·vᵀ backward).
#[inline(always)]
fn rows_times_transposed(
    rows: &[&[f32]; 4],
    nq: usize,
    t: &[f32],
    (hd, lp, kp): (usize, usize, usize),
    out: &mut [f32],
) {
    for kb in (0..kp).step_by(8) {
        let mut acc = [[0f32; 8]; 4];
        for d in 0..hd {
            let t8: &[f32; 8] = t[d * lp + kb..][..8].try_into().unwrap();
            for (acc, row) in acc.iter_mut().zip(rows) {
                let rd = row[d];
                for (a, &tv) in acc.iter_mut().zip(t8) {
                    *a += rd * tv;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(nq) {
            out[r * lp + kb..][..8].copy_from_slice(acc);
        }
    }
}

/// `out[out_at(r) + e] = Σ_{k < kmax} weights[r][k] · src[src_at(k) + e]` for the first `nq`
/// of four rows and e < `hd`: eight columns at a time in registers, each load of `src` shared
/// by the four rows (P·v forward, dq = dS·k backward).
#[inline(always)]
fn weighted_rows(
    (weights, nq, kmax): (&[&[f32]; 4], usize, usize),
    (src, src_at): (&[f32], impl Fn(usize) -> usize),
    hd: usize,
    (out, out_at): (&mut [f32], impl Fn(usize) -> usize),
) {
    let full = hd - hd % 8;
    for e in (0..full).step_by(8) {
        let mut acc = [[0f32; 8]; 4];
        for k in 0..kmax {
            let s8: &[f32; 8] = src[src_at(k) + e..][..8].try_into().unwrap();
            for (acc, wr) in acc.iter_mut().zip(weights) {
                let wk = wr[k];
                for (a, &sv) in acc.iter_mut().zip(s8) {
                    *a += wk * sv;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(nq) {
            out[out_at(r) + e..][..8].copy_from_slice(acc);
        }
    }
    for e in full..hd {
        for (r, wr) in weights.iter().enumerate().take(nq) {
            let mut a = 0f32;
            for (k, &wk) in wr[..kmax].iter().enumerate() {
                a += wk * src[src_at(k) + e];
            }
            out[out_at(r) + e] = a;
        }
    }
}

/// Keys `kb..kb + N` of [`attention_backward`]: their rows of dk = dSᵀ·q and dv = Pᵀ·dy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn key_block<const N: usize>(
    qkv: &[f32],
    probs: &[f32],
    dy: &[f32],
    dqkv: &mut [f32],
    ds: &[f32],
    kb: usize,
    (i, j): (usize, usize),
    (l, w, hd, lp): (usize, usize, usize, usize),
) {
    let at = |pos: usize, part: usize| (i * l + pos) * 3 * w + part * w + j * hd;
    let yat = |pos: usize| (i * l + pos) * w + j * hd;
    let full = hd - hd % 8;
    for e in (0..full).step_by(8) {
        let mut ak = [[0f32; 8]; N];
        let mut av = [[0f32; 8]; N];
        for q in kb..l {
            let q8: &[f32; 8] = qkv[at(q, 0) + e..][..8].try_into().unwrap();
            let g8: &[f32; 8] = dy[yat(q) + e..][..8].try_into().unwrap();
            let dsq: &[f32; N] = ds[q * lp + kb..][..N].try_into().unwrap();
            let pq: &[f32; N] = probs[q * l + kb..][..N].try_into().unwrap();
            for (ak, &d) in ak.iter_mut().zip(dsq) {
                for (a, &x) in ak.iter_mut().zip(q8) {
                    *a += d * x;
                }
            }
            for (av, &p) in av.iter_mut().zip(pq) {
                for (a, &y) in av.iter_mut().zip(g8) {
                    *a += p * y;
                }
            }
        }
        for r in 0..N {
            dqkv[at(kb + r, 1) + e..][..8].copy_from_slice(&ak[r]);
            dqkv[at(kb + r, 2) + e..][..8].copy_from_slice(&av[r]);
        }
    }
    for e in full..hd {
        for r in 0..N {
            let (mut a, mut b) = (0f32, 0f32);
            for q in kb + r..l {
                a += ds[q * lp + kb + r] * qkv[at(q, 0) + e];
                b += probs[q * l + kb + r] * dy[yat(q) + e];
            }
            dqkv[at(kb + r, 1) + e] = a;
            dqkv[at(kb + r, 2) + e] = b;
        }
    }
}

/// Two disjoint parameter gradients: `[a, a + len_a)` and `[b, …)` with `a < b`.
fn two(grad: &mut [f32], a: usize, b: usize, len_a: usize) -> (&mut [f32], &mut [f32]) {
    assert!(a + len_a <= b);
    let (lo, hi) = grad.split_at_mut(b);
    (&mut lo[a..a + len_a], hi)
}

/// Rows of positions `from..l` of each of `rows` rows of `x` `[rows·l, w]`.
fn select_positions(x: &[f32], rows: usize, l: usize, from: usize, w: usize) -> Vec<f32> {
    let r = l - from;
    let mut out = buffer(rows * r * w);
    for (i, o) in out.chunks_exact_mut(r * w).enumerate() {
        o.copy_from_slice(&x[(i * l + from) * w..(i * l + l) * w]);
    }
    out
}

/// The inverse of [`select_positions`]: zeros at the positions before `from`.
fn scatter_positions(x: &[f32], rows: usize, l: usize, from: usize, w: usize) -> Vec<f32> {
    let r = l - from;
    let mut out = zeros(rows * l * w);
    for i in 0..rows {
        out[(i * l + from) * w..(i * l + l) * w].copy_from_slice(&x[i * r * w..(i + 1) * r * w]);
    }
    out
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = fold8(acc);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// e^x for x ≤ 0 in float32, within two ulp: Cephes' `expf` (x = k ln 2 + r, a degree-6
/// polynomial in r, then 2^k in the exponent bits) without branches, so that loops over it
/// vectorise. Below −87.3 it gives 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer.
    const SHIFTER: f32 = 12_582_912.0;
    let flush = x < -87.3;
    let x = if flush { 0.0 } else { x };
    let kf = x * LOG2E + SHIFTER;
    let k = (kf.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let kf = kf - SHIFTER;
    let r = x - kf * LN2_HI - kf * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    if flush { 0.0 } else { y * scale }
}
