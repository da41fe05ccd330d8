#include "moge/kernels/softmax.h"

#include <algorithm>
#include <cmath>

namespace moge::kernels {

void softmax_forward(const float* x, float* p, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kSoftmaxTeamAbove)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* pr = p + r * cols;
    float mx = *std::max_element(xr, xr + cols);
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) sum += (pr[c] = std::exp(xr[c] - mx));
    float inv = 1.0f / sum;
    for (int64_t c = 0; c < cols; ++c) pr[c] *= inv;
  }
}

void softmax_backward(const float* p, const float* dp, float* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kSoftmaxTeamAbove)
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * cols;
    const float* dpr = dp + r * cols;
    float* dxr = dx + r * cols;
    float dot = 0.0f;
    for (int64_t c = 0; c < cols; ++c) dot += pr[c] * dpr[c];
    for (int64_t c = 0; c < cols; ++c) dxr[c] = pr[c] * (dpr[c] - dot);
  }
}

}  // namespace moge::kernels
