#pragma once
// Small f32 matrix products on the calling thread, for attention's tiles (a block of query rows of
// one head against a few hundred keys): there a oneDNN execution's fixed cost (primitive lookup,
// memory objects, ~5 µs) is as large as the arithmetic, and training runs ~1800 of them a step.
//
//   C[m, n] = A[m, k] · B[k, n]      (C += A · B when accumulate)
//
// A's element (i, p) is a[i · a_row + p · a_col], so A may be a row-major matrix (a_col = 1) or the
// transpose of one (a_row = 1); B and C are row-major with leading dimensions ldb and ldc. Every
// element of C is Σ_p a_ip · b_pj accumulated in order p = 0, 1, ... with one FMA a term, then added
// to C when accumulating: the AVX-512 and scalar versions give the same bits, on any thread count.
#include <cstdint>

namespace moge::kernels {

void tile_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate = false);

namespace detail {
// Both implementations, for tests; the AVX-512 one only where the CPU has AVX-512F.
void tile_gemm_scalar(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                      int64_t ldb, float* c, int64_t ldc, bool accumulate);
void tile_gemm_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                      int64_t ldb, float* c, int64_t ldc, bool accumulate);
bool tile_gemm_avx512_supported();
}  // namespace detail

}  // namespace moge::kernels
