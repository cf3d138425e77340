//! GELU, tanh form (GPT-2's), as the GPT's MLP applies it: on the CPU through gradgym's own
//! operator (`agents/csrc/gelu_tanh.cpp`, built on x86-64 Linux), elsewhere through libtorch's
//! `gelu(x, "tanh")`.
//!
//! The operator gives libtorch's bits, forward and backward (first-order gradients; tests/gelu.rs
//! compares them), in one pass that keeps the derivative for the backward pass: libtorch's tanh
//! form recomputes the tanh in its backward pass (docs/rlhf.md, Throughput).
use std::sync::atomic::{AtomicBool, Ordering};

use tch::Tensor;

static OURS: AtomicBool = AtomicBool::new(true);

/// Whether [`gelu_tanh`] runs gradgym's operator (`true`, the default) or libtorch's `gelu`
/// (the same bits, slower), process-wide: `gradgym rlhf bench` times PPO both ways.
pub fn use_gradgym_operator(on: bool) {
    OURS.store(on, Ordering::Relaxed);
}

/// GELU (tanh form) of `x`, differentiable, with libtorch's values and gradients.
pub fn gelu_tanh(x: &Tensor) -> Tensor {
    if x.device() != tch::Device::Cpu || !OURS.load(Ordering::Relaxed) {
        return x.gelu("tanh");
    }
    op::gelu_tanh(x)
}

/// Whether this build and CPU run the operator (AVX-512 or AVX2 as libtorch dispatches); if
/// not, [`gelu_tanh`] is libtorch's `gelu`.
pub fn gelu_tanh_fused() -> bool {
    op::fused()
}

/// Forward and backward passes that took the operator's fast paths so far (the rest went to
/// libtorch's operators): for tests.
pub fn fast_path_calls() -> (i64, i64) {
    op::calls()
}

#[cfg(gradgym_gelu_op)]
mod op {
    use std::ffi::{CStr, c_char, c_int};

    use tch::Tensor;
    use torch_sys::C_tensor;

    unsafe extern "C" {
        fn gradgym_gelu_tanh(
            x: *const C_tensor,
            error: *mut c_char,
            error_len: usize,
        ) -> *mut C_tensor;
        fn gradgym_gelu_tanh_fused() -> c_int;
        fn gradgym_gelu_tanh_calls(forward: *mut i64, backward: *mut i64);
    }

    pub fn gelu_tanh(x: &Tensor) -> Tensor {
        let mut error = [0 as c_char; 512];
        // SAFETY: `x` is a live tensor; the operator returns a new tensor that the result
        // owns, or null with a NUL-terminated message in `error`.
        let out = unsafe { gradgym_gelu_tanh(x.as_ptr(), error.as_mut_ptr(), error.len()) };
        if out.is_null() {
            // SAFETY: snprintf terminated it within the buffer.
            let msg = unsafe { CStr::from_ptr(error.as_ptr()) };
            panic!("gelu_tanh: {}", msg.to_string_lossy());
        }
        // SAFETY: a tensor allocated by the operator, handed over.
        unsafe { Tensor::from_ptr(out) }
    }

    pub fn fused() -> bool {
        // SAFETY: no arguments; reads libtorch's CPU capability.
        unsafe { gradgym_gelu_tanh_fused() != 0 }
    }

    pub fn calls() -> (i64, i64) {
        let (mut f, mut b) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { gradgym_gelu_tanh_calls(&mut f, &mut b) };
        (f, b)
    }
}

#[cfg(not(gradgym_gelu_op))]
mod op {
    use tch::Tensor;

    pub fn gelu_tanh(x: &Tensor) -> Tensor {
        x.gelu("tanh")
    }

    pub fn fused() -> bool {
        false
    }

    pub fn calls() -> (i64, i64) {
        (0, 0)
    }
}
