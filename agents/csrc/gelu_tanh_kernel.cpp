// The vector body of gradgym's GELU (tanh form): compiled once for AVX-512 and once for AVX2
// (agents/build.rs), with -ffp-contract=off so that the compiler fuses nothing on its own.
//
// libtorch's CPU kernels (aten/src/ATen/native/cpu/Activation.cpp, GeluKernelImpl and
// GeluBackwardKernelImpl, PyTorch 2.11.0) compute, per vector of x,
//   y  = (0.5·x)·(1 + tanh(β·(x + κ·x³)))
//   dx = dy·(0.5·(1 + t) + ((0.5·x)·(1 − t²))·(β·(1 + 3κ·x²)))
// with Sleef's 1-ulp tanh, and the wheel's compiler fused four of the products into FMAs. The
// operations below are those, in that order, the fusions written out: the forward value and the
// derivative come out bit for bit as libtorch's (checked across magnitudes and lengths in
// agents/tests/gelu.rs). One pass gives both, so the backward pass is a single product.
#define _USE_MATH_DEFINES
#include <immintrin.h>
#include <sleef.h>

#include <cmath>
#include <cstdint>

namespace {
constexpr float kBeta = float(M_SQRT2 * M_2_SQRTPI * 0.5);
constexpr float kKappa = float(0.044715);
constexpr float kThreeKappa = float(3) * float(0.044715);
}  // namespace

// One body for both widths: `V` names the vector type and its operations.
template <typename V>
void gelu_tanh_body(const float* x, float* y, float* d, int64_t n) {
  using T = typename V::T;
  const T beta = V::set1(kBeta);
  const T kappa = V::set1(kKappa);
  const T three_kappa = V::set1(kThreeKappa);
  const T one = V::set1(1.0f);
  const T half = V::set1(0.5f);
  for (int64_t i = 0; i < n; i += V::width) {
    const T v = V::load(x + i);
    const T sq = V::mul(v, v);
    const T cube = V::mul(sq, v);
    const T inner = V::mul(beta, V::fmadd(kappa, cube, v));
    const T t = V::tanh(inner);
    const T left = V::mul(half, v);
    const T right = V::add(one, t);
    V::store(y + i, V::mul(left, right));
    if (d != nullptr) {
      const T dtanh = V::fnmadd(t, t, one);
      const T dinner = V::mul(beta, V::fmadd(three_kappa, sq, one));
      const T dright = V::mul(V::mul(left, dtanh), dinner);
      V::store(d + i, V::fmadd(half, right, dright));
    }
  }
}

#if defined(__AVX512F__)
struct Avx512 {
  using T = __m512;
  static constexpr int64_t width = 16;
  static T set1(float a) { return _mm512_set1_ps(a); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T a) { _mm512_storeu_ps(p, a); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  // a·b + c and c − a·b, each rounded once.
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }
  static T tanh(T a) { return Sleef_tanhf16_u10(a); }
};

// y[i] for i < n (a multiple of 16), and d[i] = dGELU/dx(x[i]) unless d is null.
extern "C" void gradgym_gelu_tanh_avx512(const float* x, float* y, float* d, int64_t n) {
  gelu_tanh_body<Avx512>(x, y, d, n);
}
#elif defined(__AVX2__)
struct Avx2 {
  using T = __m256;
  static constexpr int64_t width = 8;
  static T set1(float a) { return _mm256_set1_ps(a); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T a) { _mm256_storeu_ps(p, a); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
  static T tanh(T a) { return Sleef_tanhf8_u10(a); }
};

// As above, on 8-wide vectors (n a multiple of 8).
extern "C" void gradgym_gelu_tanh_avx2(const float* x, float* y, float* d, int64_t n) {
  gelu_tanh_body<Avx2>(x, y, d, n);
}
#else
#error "compile with -mavx512f or -mavx2 -mfma"
#endif
