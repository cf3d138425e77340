//! GELU, tanh form (GPT-2's), as the GPT's MLP applies it: on the CPU through gradgym's own
//! operator (`agents/csrc/gelu_tanh.cpp`), elsewhere through libtorch's `gelu(x, "tanh")`.
//!
//! The operator gives libtorch's bits, forward and backward (tests/gelu.rs compares them), in
//! one pass that keeps the derivative for the backward pass: libtorch's tanh form costs 4–5
//! times its erf form on the RLHF bench's activations and recomputes the tanh in its backward
//! pass (docs/rlhf.md, Throughput).
use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn gradgym_gelu_tanh(x: *const C_tensor, error: *mut c_char, error_len: usize)
    -> *mut C_tensor;
    fn gradgym_gelu_tanh_fused() -> c_int;
}

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
    let mut error = [0 as c_char; 512];
    // SAFETY: `x` is a live tensor; the operator returns a new tensor that the result owns, or
    // null with a NUL-terminated message in `error`.
    let out = unsafe { gradgym_gelu_tanh(x.as_ptr(), error.as_mut_ptr(), error.len()) };
    if out.is_null() {
        // SAFETY: snprintf terminated it within the buffer.
        let msg = unsafe { CStr::from_ptr(error.as_ptr()) };
        panic!("gelu_tanh: {}", msg.to_string_lossy());
    }
    // SAFETY: a tensor allocated by the operator, handed over.
    unsafe { Tensor::from_ptr(out) }
}

/// Whether this CPU runs the fused operator (AVX-512 or AVX2 as libtorch dispatches); if not,
/// [`gelu_tanh`] is libtorch's `gelu`.
pub fn gelu_tanh_fused() -> bool {
    // SAFETY: no arguments; reads libtorch's CPU capability.
    unsafe { gradgym_gelu_tanh_fused() != 0 }
}
