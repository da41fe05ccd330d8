#include "moge/kernels/embedding.h"

#include <algorithm>
#include <cstring>

namespace moge::kernels {
namespace {

// Columns one thread takes at a time in backward: whole cache lines, so threads do not share them.
constexpr int64_t kColumnBlock = 64;

}  // namespace

void embedding_forward(const float* table, const int32_t* tokens, int64_t n, int64_t d, float* out) {
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * d, table + int64_t(tokens[i]) * d, size_t(d) * sizeof(float));
}

void embedding_backward(const int32_t* tokens, int64_t n, const float* dx, int64_t d, float* dtable_accum) {
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(d, c0 + kColumnBlock);
    for (int64_t i = 0; i < n; ++i) {
      const float* g = dx + i * d;
      float* row = dtable_accum + int64_t(tokens[i]) * d;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace moge::kernels
