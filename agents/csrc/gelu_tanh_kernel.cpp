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

#if defined(__AVX512F__)
// y[i] for i < n (a multiple of 16), and d[i] = dGELU/dx(x[i]) unless d is null.
extern "C" void gradgym_gelu_tanh_avx512(const float* x, float* y, float* d, int64_t n) {
  const __m512 beta = _mm512_set1_ps(kBeta);
  const __m512 kappa = _mm512_set1_ps(kKappa);
  const __m512 three_kappa = _mm512_set1_ps(kThreeKappa);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 sq = _mm512_mul_ps(v, v);
    const __m512 cube = _mm512_mul_ps(sq, v);
    const __m512 inner = _mm512_mul_ps(beta, _mm512_fmadd_ps(kappa, cube, v));
    const __m512 t = Sleef_tanhf16_u10(inner);
    const __m512 left = _mm512_mul_ps(half, v);
    const __m512 right = _mm512_add_ps(one, t);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(left, right));
    if (d != nullptr) {
      const __m512 dtanh = _mm512_fnmadd_ps(t, t, one);
      const __m512 dinner = _mm512_mul_ps(beta, _mm512_fmadd_ps(three_kappa, sq, one));
      const __m512 dright = _mm512_mul_ps(_mm512_mul_ps(left, dtanh), dinner);
      _mm512_storeu_ps(d + i, _mm512_fmadd_ps(half, right, dright));
    }
  }
}
#elif defined(__AVX2__)
// As above, on 8-wide vectors (n a multiple of 8).
extern "C" void gradgym_gelu_tanh_avx2(const float* x, float* y, float* d, int64_t n) {
  const __m256 beta = _mm256_set1_ps(kBeta);
  const __m256 kappa = _mm256_set1_ps(kKappa);
  const __m256 three_kappa = _mm256_set1_ps(kThreeKappa);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 half = _mm256_set1_ps(0.5f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 sq = _mm256_mul_ps(v, v);
    const __m256 cube = _mm256_mul_ps(sq, v);
    const __m256 inner = _mm256_mul_ps(beta, _mm256_fmadd_ps(kappa, cube, v));
    const __m256 t = Sleef_tanhf8_u10(inner);
    const __m256 left = _mm256_mul_ps(half, v);
    const __m256 right = _mm256_add_ps(one, t);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(left, right));
    if (d != nullptr) {
      const __m256 dtanh = _mm256_fnmadd_ps(t, t, one);
      const __m256 dinner = _mm256_mul_ps(beta, _mm256_fmadd_ps(three_kappa, sq, one));
      const __m256 dright = _mm256_mul_ps(_mm256_mul_ps(left, dtanh), dinner);
      _mm256_storeu_ps(d + i, _mm256_fmadd_ps(half, right, dright));
    }
  }
}
#else
#error "compile with -mavx512f or -mavx2 -mfma"
#endif
