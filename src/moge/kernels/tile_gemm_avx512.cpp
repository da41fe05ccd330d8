// The AVX-512 twin of tile_gemm_scalar (tile_gemm.cpp). Only these functions carry the AVX-512
// target attribute, and tile_gemm() calls them only when the CPU has AVX-512F.
//
// Register blocking: up to 8 rows of C by 32 columns (two vectors) in 16 accumulators; each step
// of p loads two vectors of B's row p and broadcasts one element of A per row. Columns beyond a
// multiple of 16 are masked.
#include <immintrin.h>

#include "moge/kernels/tile_gemm.h"

#define MOGE_AVX512 __attribute__((target("avx512f,fma")))

namespace moge::kernels::detail {
namespace {

constexpr int kMaxRows = 8;

// C rows [0, ROWS) x columns [j0, j0 + 32) (lanes outside m0/m1 masked off).
// The loops over r carry `GCC unroll` so that they are unrolled before GCC decides where acc0 and
// acc1 live: left to its later unrolling, it kept the arrays in memory and stored all 16
// accumulators to the stack on every step of p (16 stores against 16 FMAs: store-bound, half the
// FMA rate).
template <int ROWS>
MOGE_AVX512 inline void block(int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                              float* c, int64_t ldc, bool accumulate, __mmask16 m0, __mmask16 m1) {
  __m512 acc0[ROWS], acc1[ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) acc0[r] = _mm512_setzero_ps(), acc1[r] = _mm512_setzero_ps();
  if (m1 != 0) {
    for (int64_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
      const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
      const float* ap = a + p * a_col;
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) {
        const __m512 av = _mm512_set1_ps(ap[r * a_row]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
    }
  } else {
    for (int64_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
      const float* ap = a + p * a_col;
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(ap[r * a_row]), b0, acc0[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      acc0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), acc0[r]);
      acc1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), acc1[r]);
    }
    _mm512_mask_storeu_ps(cr, m0, acc0[r]);
    if (m1 != 0) _mm512_mask_storeu_ps(cr + 16, m1, acc1[r]);
  }
}

MOGE_AVX512 inline __mmask16 lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

}  // namespace

MOGE_AVX512 void tile_gemm_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col,
                                  const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t j0 = 0; j0 < n; j0 += 32) {
    const __mmask16 m0 = lanes(n - j0), m1 = lanes(n - j0 - 16);
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const float* ai = a + i0 * a_row;
      const float* bj = b + j0;
      float* cij = c + i0 * ldc + j0;
      switch (m - i0 >= kMaxRows ? kMaxRows : int(m - i0)) {
        case 8: block<8>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 7: block<7>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 6: block<6>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 5: block<5>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 4: block<4>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 3: block<3>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        case 2: block<2>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
        default: block<1>(k, ai, a_row, a_col, bj, ldb, cij, ldc, accumulate, m0, m1); break;
      }
    }
  }
}

}  // namespace moge::kernels::detail
