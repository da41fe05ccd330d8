// The scalar tile product and the run-time choice between it and tile_gemm_avx512.cpp.
#include "moge/kernels/tile_gemm.h"

#include <cmath>

namespace moge::kernels {
namespace detail {

bool tile_gemm_avx512_supported() { return __builtin_cpu_supports("avx512f"); }

void tile_gemm_scalar(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                      int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; ++p) s = std::fma(a[i * a_row + p * a_col], b[p * ldb + j], s);
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
    }
}

}  // namespace detail

void tile_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  static const bool avx512 = detail::tile_gemm_avx512_supported();
  if (avx512) detail::tile_gemm_avx512(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate);
  else detail::tile_gemm_scalar(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate);
}

}  // namespace moge::kernels
