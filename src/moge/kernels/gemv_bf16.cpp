// bf16 GEMV: the scalar reference and the AVX-512 BF16 kernel (compiled for any target: only the
// kernel carries the target attribute, and it runs only when the CPU has the feature).
#include "moge/kernels/gemv_bf16.h"

#include "moge/kernels/quant.h"  // prefetch_decode

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

// GCC 12's AVX-512 headers build reduce_add from _mm512_undefined_*() and then warn about it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define MOGE_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace moge::kernels {

namespace {

// acc += pairwise bf16 products (vdpbf16ps). Inline asm for the reason given in quant_avx512.cpp
// (the intrinsic made GCC 12 copy accumulator arrays around every instruction).
MOGE_AVX512BF16 inline __m512 dpbf16(__m512 acc, __m512i a, __m512i b) {
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// R activation rows × one weight row, U accumulators along `in` (32 weights each). One weight
// row after the other keeps the weights one sequential stream (see quant_avx512.cpp).
template <int R, int U>
MOGE_AVX512BF16 void row_dot(const bf16* x, int64_t ldx, const bf16* w, int64_t in, float* y, int64_t ldy) {
  __m512 acc[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 * U <= in; k += 32 * U)
    for (int u = 0; u < U; ++u) {
      const __m512i wv = _mm512_loadu_si512(w + k + 32 * u);
      detail::prefetch_decode(w + k + 32 * u);
      for (int r = 0; r < R; ++r) acc[r][u] = dpbf16(acc[r][u], _mm512_loadu_si512(x + r * ldx + k + 32 * u), wv);
    }
  for (; k < in; k += 32) {  // whole vectors, then a masked tail
    const __mmask32 m = in - k >= 32 ? ~__mmask32(0) : _cvtu32_mask32(~0u >> (32 - (in - k)));
    const __m512i wv = _mm512_maskz_loadu_epi16(m, w + k);
    for (int r = 0; r < R; ++r) acc[r][0] = dpbf16(acc[r][0], _mm512_maskz_loadu_epi16(m, x + r * ldx + k), wv);
  }
  for (int r = 0; r < R; ++r) {
    __m512 t = acc[r][0];
    for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[r][u]);
    y[r * ldy] = _mm512_reduce_add_ps(t);
  }
}

// One activation row × 4 weight rows side by side, each prefetched kDecodePrefetchBytes ahead.
// For rows of 4 KiB and more (in >= 2048) four streams read more than one: 94-98% of the read
// probe against 88-91% (quant_gemv_bench, [1024, 2048], 3 runs; oneDNN 98-101%); for 2 KiB
// rows one stream was better (83-84% against 80-81%).
MOGE_AVX512BF16 void dot4(const bf16* x, const bf16* w, int64_t ldw, int64_t in, float* y) {
  __m512 acc[4][2];
  for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in; k += 64)  // in % 64 == 0
    for (int u = 0; u < 2; ++u) {
      const __m512i xv = _mm512_loadu_si512(x + k + 32 * u);
      for (int o = 0; o < 4; ++o) {
        const bf16* wp = w + o * ldw + k + 32 * u;
        detail::prefetch_decode(wp);
        acc[o][u] = dpbf16(acc[o][u], xv, _mm512_loadu_si512(wp));
      }
    }
  for (int o = 0; o < 4; ++o) y[o] = _mm512_reduce_add_ps(_mm512_add_ps(acc[o][0], acc[o][1]));
}

template <int R>
MOGE_AVX512BF16 void rows_avx512(const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in, int64_t o0,
                                 int64_t o1, float* y, int64_t ldy) {
  int64_t o = o0;
  if (R == 1 && in >= 2048 && in % 64 == 0)
    for (; o + 4 <= o1; o += 4) dot4(x, w + o * ldw, ldw, in, y + o);
  for (; o < o1; ++o) row_dot<R, 4>(x, ldx, w + o * ldw, in, y + o, ldy);
}

MOGE_AVX512BF16 void gemv_avx512(int64_t rows, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in,
                                 int64_t o0, int64_t o1, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; r += 4) {
    const bf16* xr = x + r * ldx;
    float* yr = y + r * ldy;
    switch (rows - r) {
      case 1: rows_avx512<1>(xr, ldx, w, ldw, in, o0, o1, yr, ldy); break;
      case 2: rows_avx512<2>(xr, ldx, w, ldw, in, o0, o1, yr, ldy); break;
      case 3: rows_avx512<3>(xr, ldx, w, ldw, in, o0, o1, yr, ldy); break;
      default: rows_avx512<4>(xr, ldx, w, ldw, in, o0, o1, yr, ldy); break;
    }
  }
}

bool detect() {
  const char* env = std::getenv("MOGE_BF16_GEMV");
  if (env && std::strcmp(env, "onednn") == 0) return false;
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

}  // namespace

bool gemv_bf16_supported() {
  static const bool supported = detect();
  return supported;
}

void gemv_bf16(int64_t rows, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in, int64_t o_begin,
               int64_t o_end, float* y, int64_t ldy) {
  if (gemv_bf16_supported()) gemv_avx512(rows, x, ldx, w, ldw, in, o_begin, o_end, y, ldy);
  else gemv_bf16_scalar(rows, x, ldx, w, ldw, in, o_begin, o_end, y, ldy);
}

void gemv_bf16_scalar(int64_t rows, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in,
                      int64_t o_begin, int64_t o_end, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = o_begin; o < o_end; ++o) {
      float acc = 0.0f;
      for (int64_t k = 0; k < in; ++k) acc += bf16_to_f32(x[r * ldx + k]) * bf16_to_f32(w[o * ldw + k]);
      y[r * ldy + o] = acc;
    }
}

}  // namespace moge::kernels
