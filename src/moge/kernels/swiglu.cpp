#include "moge/kernels/swiglu.h"

#include <cmath>

namespace moge::kernels {

void swiglu_forward(const float* g, const float* u, float* h, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void swiglu_backward(const float* g, const float* u, const float* dh, float* dg, float* du, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    float s = 1.0f / (1.0f + std::exp(-g[i]));
    float silu = g[i] * s;
    dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    du[i] = dh[i] * silu;
  }
}

}  // namespace moge::kernels
