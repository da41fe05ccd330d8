#include "moge/kernels/transpose.h"

#include <algorithm>

namespace moge::kernels {
namespace {

constexpr int64_t kTile = 16;

// One tile of ni × nj elements through an L1 buffer. The full tiles get constant trip counts, so
// that each row of the buffer moves as one vector (a variable count of 16 became `rep movsq`).
template <int64_t kRows, int64_t kCols>
inline void tile(const float* in, int64_t ni, int64_t nj, int64_t ldi, float* out, int64_t ldo, bool accumulate) {
  if constexpr (kRows > 0) ni = kRows;
  if constexpr (kCols > 0) nj = kCols;
  float t[kTile][kTile];  // t[j][i]: the tile transposed
  for (int64_t i = 0; i < ni; ++i)
    for (int64_t j = 0; j < nj; ++j) t[j][i] = in[i * ldi + j];
  for (int64_t j = 0; j < nj; ++j) {
    float* dst = out + j * ldo;
    if (accumulate)
      for (int64_t i = 0; i < ni; ++i) dst[i] += t[j][i];
    else
      for (int64_t i = 0; i < ni; ++i) dst[i] = t[j][i];
  }
}

}  // namespace

void transpose(const float* in, int64_t rows, int64_t cols, int64_t ldi, float* out, int64_t ldo, bool accumulate) {
  for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
    const int64_t ni = std::min(kTile, rows - i0);
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t nj = std::min(kTile, cols - j0);
      const float* src = in + i0 * ldi + j0;
      float* dst = out + j0 * ldo + i0;
      if (ni == kTile && nj == kTile) tile<kTile, kTile>(src, ni, nj, ldi, dst, ldo, accumulate);
      else tile<0, 0>(src, ni, nj, ldi, dst, ldo, accumulate);
    }
  }
}

}  // namespace moge::kernels
