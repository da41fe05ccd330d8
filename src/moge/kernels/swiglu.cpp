#include "moge/kernels/swiglu.h"

#include <algorithm>

#include "moge/kernels/vmath.h"

namespace moge::kernels {
namespace {

// Chunks small enough for exp(−g) to stay in L1 between the vectorized exp and the loop that
// uses it (the arithmetic loops vectorize on their own; exp is the one call that would not).
constexpr int64_t kChunk = 1024;

// Calls fn(i0, len, e) for the chunks [i0, i0 + len) of [0, n), in parallel when n is large,
// with e[k] = exp(−g[i0 + k]).
template <class Fn>
void for_each_chunk(const float* g, int64_t n, Fn&& fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > kSwigluTeamAbove)
  for (int64_t c = 0; c < chunks; ++c) {
    float e[kChunk];
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    vmath::exp_affine_no_sum(g + i0, -1.0f, 0.0f, e, len);
    fn(i0, len, e);
  }
}

}  // namespace

void swiglu_forward(const float* g, const float* u, float* h, int64_t n) {
  for_each_chunk(g, n, [&](int64_t i0, int64_t len, const float* e) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) h[i0 + i] = g[i0 + i] / (1.0f + e[i]) * u[i0 + i];
  });
}

void swiglu_backward(const float* g, const float* u, const float* dh, float* dg, float* du, int64_t n) {
  for_each_chunk(g, n, [&](int64_t i0, int64_t len, const float* e) {
    // simd: callers pass dg = g and du = u (every lane reads its g, u before writing them), which
    // would otherwise send GCC's run-time overlap check to the scalar loop.
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      const int64_t i = i0 + k;
      const float s = 1.0f / (1.0f + e[k]);
      const float silu = g[i] * s;
      dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
      du[i] = dh[i] * silu;
    }
  });
}

}  // namespace moge::kernels
