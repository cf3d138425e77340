// gradgym's GELU (tanh form) on the CPU: libtorch's bits, in less time.
//
// libtorch's `gelu(x, "tanh")` takes 4–5 times its erf form on the RLHF bench's activations,
// and its backward pass recomputes the tanh. Here one pass over x gives the value and the
// derivative (gelu_tanh_kernel.cpp), the derivative is saved for the backward pass, and the
// backward pass is one product per element.
//
// Bit-identity with libtorch rests on doing what its kernels do, element by element:
// - the vector body performs libtorch's vector operations (gelu_tanh_kernel.cpp);
// - libtorch's elementwise loop runs its vector body over whole pairs of vectors of each
//   thread's chunk and its scalar code (std::tanh) over the rest, so each chunk's remainder here
//   is handed to libtorch's own `gelu` / `gelu_backward`, which take their scalar path on it;
// - the chunks are libtorch's: at::parallel_for over the same range and grain (GeluKernelImpl
//   sets grain = numel / threads above 16,384 elements; the backward kernel keeps GRAIN_SIZE).
// Anything else (not float, not contiguous, not the CPU, a CPU capability other than AVX-512 or
// AVX2, an upstream gradient of another layout or shape, a backward pass that builds a graph
// for second-order gradients) goes to libtorch's operators unchanged.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <atomic>

#include <cstdio>
#include <cstring>
#include <string>

// The kernels below reproduce PyTorch 2.11.0's (see gelu_tanh_kernel.cpp); another version may
// compute otherwise.
static_assert(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11,
              "gradgym's GELU reproduces libtorch 2.11's kernels");

extern "C" void gradgym_gelu_tanh_avx512(const float* x, float* y, float* d, int64_t n);
extern "C" void gradgym_gelu_tanh_avx2(const float* x, float* y, float* d, int64_t n);

namespace {

// Calls that took the fast paths (forward, backward), for the tests.
std::atomic<int64_t> fast_forward{0};
std::atomic<int64_t> fast_backward{0};

using Kernel = void (*)(const float*, float*, float*, int64_t);

struct Body {
  Kernel kernel;
  // Elements per iteration of libtorch's vectorised loop: two vectors.
  int64_t step;
};

// The kernel for the capability libtorch dispatches to (ATEN_CPU_CAPABILITY included).
Body body() {
  static const Body b = [] {
    const std::string cap = at::get_cpu_capability();
    if (cap == "AVX512") return Body{gradgym_gelu_tanh_avx512, 32};
    if (cap == "AVX2") return Body{gradgym_gelu_tanh_avx2, 16};
    return Body{nullptr, 0};
  }();
  return b;
}

// f over [0, n) in the chunks TensorIterator::for_each gives libtorch's kernels.
// The remainders call libtorch's operators on views, from libtorch's worker threads too, where
// grad mode is on: they run below autograd, as plain kernels.
template <typename F>
void for_chunks(int64_t n, int64_t grain, const F& f) {
  auto plain = [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    f(begin, end);
  };
  if (n < grain || at::get_num_threads() == 1) {
    plain(0, n);
  } else {
    at::parallel_for(0, n, grain, plain);
  }
}

// y = GELU(x) and, if d is defined, d = GELU'(x); x, y, d contiguous float of one size. y takes
// libtorch's forward chunks; d comes from the vector body everywhere (the remainders through a
// padded block), so the backward pass may chunk the range its own way (it does: another grain).
void forward_into(const at::Tensor& x, const at::Tensor& y, const at::Tensor& d) {
  const Body b = body();
  const int64_t n = x.numel();
  int64_t grain = at::internal::GRAIN_SIZE;
  if (n > 16384) grain = n / at::get_num_threads();
  const float* xp = x.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  float* dp = d.defined() ? d.mutable_data_ptr<float>() : nullptr;
  const at::Tensor xf = x.view(-1);
  const at::Tensor yf = y.view(-1);
  for_chunks(n, grain, [&](int64_t begin, int64_t end) {
    const int64_t whole = (end - begin) / b.step * b.step;
    b.kernel(xp + begin, yp + begin, dp == nullptr ? nullptr : dp + begin, whole);
    const int64_t rest = end - begin - whole;
    if (rest == 0) return;
    yf.slice(0, begin + whole, end).copy_(at::gelu(xf.slice(0, begin + whole, end), "tanh"));
    if (dp != nullptr) {
      float xs[32] = {0}, ys[32], ds[32];
      std::memcpy(xs, xp + begin + whole, rest * sizeof(float));
      b.kernel(xs, ys, ds, b.step);
      std::memcpy(dp + begin + whole, ds, rest * sizeof(float));
    }
  });
}

bool eligible(const at::Tensor& x) {
  return body().kernel != nullptr && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.is_contiguous() && x.numel() > 0 && x.layout() == at::kStrided;
}

struct GeluTanh : public torch::autograd::Function<GeluTanh> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    fast_forward.fetch_add(1, std::memory_order_relaxed);
    at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
    at::Tensor d = at::empty_like(x, at::MemoryFormat::Contiguous);
    forward_into(x, y, d);
    ctx->save_for_backward({x, d});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& d = saved[1];
    const at::Tensor& dy = grads[0];
    if (!dy.defined()) return {at::Tensor()};
    // With create_graph the gradient must itself be differentiable: libtorch's operator.
    if (at::GradMode::is_enabled() ||
        !(dy.device().is_cpu() && dy.scalar_type() == at::kFloat && dy.is_contiguous() &&
          dy.sizes() == x.sizes())) {
      return {at::gelu_backward(dy, x, "tanh")};
    }
    fast_backward.fetch_add(1, std::memory_order_relaxed);
    const Body b = body();
    at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
    const int64_t n = x.numel();
    const float* g = dy.const_data_ptr<float>();
    const float* dp = d.const_data_ptr<float>();
    float* out = dx.mutable_data_ptr<float>();
    const at::Tensor dyf = dy.view(-1);
    const at::Tensor xf = x.view(-1);
    const at::Tensor dxf = dx.view(-1);
    for_chunks(n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      const int64_t whole = (end - begin) / b.step * b.step;
      for (int64_t i = begin; i < begin + whole; ++i) out[i] = g[i] * dp[i];
      if (begin + whole < end) {
        dxf.slice(0, begin + whole, end)
            .copy_(at::gelu_backward(dyf.slice(0, begin + whole, end),
                                     xf.slice(0, begin + whole, end), "tanh"));
      }
    });
    return {dx};
  }
};

at::Tensor gelu_tanh(const at::Tensor& x) {
  if (!eligible(x)) return at::gelu(x, "tanh");
  if (at::GradMode::is_enabled() && x.requires_grad()) return GeluTanh::apply(x);
  fast_forward.fetch_add(1, std::memory_order_relaxed);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  forward_into(x, y, at::Tensor());
  return y;
}

}  // namespace

// GELU (tanh form) of *x, differentiable; on failure null, with the message in error.
extern "C" at::Tensor* gradgym_gelu_tanh(const at::Tensor* x, char* error, size_t error_len) {
  try {
    return new at::Tensor(gelu_tanh(*x));
  } catch (const std::exception& e) {
    std::snprintf(error, error_len, "%s", e.what());
    return nullptr;
  } catch (...) {
    std::snprintf(error, error_len, "an exception that is not a std::exception");
    return nullptr;
  }
}

// Whether gradgym_gelu_tanh has a kernel for this CPU (else it calls libtorch's gelu).
extern "C" int gradgym_gelu_tanh_fused() {
  try {
    return body().kernel != nullptr ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// How many forward and backward passes took the fast paths so far.
extern "C" void gradgym_gelu_tanh_calls(int64_t* forward, int64_t* backward) {
  *forward = fast_forward.load();
  *backward = fast_backward.load();
}
