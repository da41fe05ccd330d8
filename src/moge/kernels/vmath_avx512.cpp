// AVX-512 twins of the scalar functions in vmath.cpp. As in quant_avx512.cpp, only these functions
// carry the AVX-512 target attribute, and vmath.cpp calls them only when the CPU has AVX-512F.
#include <immintrin.h>

// GCC 12's _mm512_reduce_* build their results from _mm512_undefined_*() and then warn.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <limits>

#include "moge/kernels/vmath.h"

#define MOGE_AVX512 __attribute__((target("avx512f,fma")))

namespace moge::kernels::vmath::detail {
namespace {

// exp of 16 lanes. exp(x) = 2^n · exp(r) with n = round(x / ln 2) and r = x − n · ln 2 in
// [−ln2/2, ln2/2], where Cephes' expf polynomial (relative error 4e-9 in exact arithmetic) gives
// exp(r) ∈ [0.7, 1.42]; vscalefps then multiplies by 2^n with one rounding, so large |n| overflows
// to inf and small n rounds into the denormals or to 0 correctly, with no exponent-bit tricks.
MOGE_AVX512 inline __m512 exp16(__m512 x) {
  // Clamp so that n stays finite: exp(−104) < 2^−150 already rounds to 0 and exp(89) > FLT_MAX
  // already overflows. min/max return their second operand when either is NaN: a NaN x passes.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // Cody-Waite: ln 2 = C1 + C2 with C1 = 355/512 short enough that n · C1 is exact.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);  // r + r² · P(r)
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// sum += the 16 lanes of e, widened to double (a float sum over 1e5 terms loses ~1e-3).
MOGE_AVX512 inline void add_wide(__m512d& lo, __m512d& hi, __m512 e) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
  // The upper 8 lanes moved down by a shuffle: GCC 12's _mm512_extractf64x4_pd warns about its
  // own undefined placeholder.
  const __m512d upper = _mm512_shuffle_f64x2(_mm512_castps_pd(e), _mm512_castps_pd(e), _MM_SHUFFLE(3, 2, 3, 2));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_castpd512_pd256(upper))));
}

template <bool kStore, bool kSum>
MOGE_AVX512 double exp_affine_impl(const float* x, float a, float b, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), vb));
    if constexpr (kStore) _mm512_storeu_ps(y + i, e);
    if constexpr (kSum) add_wide(lo, hi, e);
  }
  if (i < n) {  // the tail: masked-off lanes read nothing and add 0
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), vb)));
    if constexpr (kStore) _mm512_mask_storeu_ps(y + i, m, e);
    if constexpr (kSum) add_wide(lo, hi, e);
  }
  if constexpr (!kSum) return 0.0;
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

}  // namespace

MOGE_AVX512 double exp_affine_avx512(const float* x, float a, float b, float* y, int64_t n) {
  return y ? exp_affine_impl<true, true>(x, a, b, y, n) : exp_affine_impl<false, true>(x, a, b, y, n);
}

MOGE_AVX512 void exp_affine_no_sum_avx512(const float* x, float a, float b, float* y, int64_t n) {
  exp_affine_impl<true, false>(x, a, b, y, n);
}

MOGE_AVX512 float max_avx512(const float* x, int64_t n) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m0 = neg_inf, m1 = neg_inf;  // two chains: max has a latency of 4 cycles
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);  // NaN in the first operand: m0 is kept
    m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
  }
  for (; i + 16 <= n; i += 16) m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    m1 = _mm512_max_ps(_mm512_mask_loadu_ps(neg_inf, m, x + i), m1);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

}  // namespace moge::kernels::vmath::detail
