#include "moge/kernels/rmsnorm.h"

#include <cmath>

namespace moge::kernels {

void rmsnorm_forward(const float* x, const float* weight, float* out, int64_t rows, int64_t cols, float eps) {
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += double(xr[c]) * xr[c];
    const float inv = float(1.0 / std::sqrt(sum / double(cols) + eps));
    for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] * inv * weight[c];
  }
}

}  // namespace moge::kernels
