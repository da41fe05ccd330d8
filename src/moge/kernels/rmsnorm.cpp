#include "moge/kernels/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moge::kernels {
namespace {

// 1 / sqrt(mean(x^2) + eps) of one row, the sum in double: forward and backward must agree on it.
float inverse_rms(const float* xr, int64_t cols, float eps) {
  double sum = 0;
  // simd: the double sum in vector lanes, added in a fixed (build-determined) order.
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < cols; ++c) sum += double(xr[c]) * xr[c];
  return float(1.0 / std::sqrt(sum / double(cols) + eps));
}

// Rows a dweight partial covers. Fixed (not derived from the thread count) so the reduction
// order, hence every bit of dweight, is the same on any number of threads.
constexpr int64_t kRowsPerChunk = 32;

}  // namespace

void rmsnorm_forward(const float* x, const float* weight, float* out, int64_t rows, int64_t cols, float eps) {
#pragma omp parallel for schedule(static) if (rows * cols > kRmsnormTeamAbove)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    const float inv = inverse_rms(xr, cols, eps);
    for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] * inv * weight[c];
  }
}

// With n = x·inv (the normalized row) and g = dout ⊙ weight:
//   dx = inv · (g − n · mean(g ⊙ n)),   dweight += Σ_rows dout ⊙ n.
void rmsnorm_backward(const float* x, const float* weight, const float* dout, float* dx, float* dweight_accum,
                      int64_t rows, int64_t cols, float eps) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  std::vector<float> partial(size_t(chunks * cols), 0.0f);  // dweight of each chunk of rows
#pragma omp parallel for schedule(static) if (rows * cols > kRmsnormTeamAbove)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    float* dw = partial.data() + chunk * cols;
    const int64_t end = std::min(rows, (chunk + 1) * kRowsPerChunk);
    for (int64_t r = chunk * kRowsPerChunk; r < end; ++r) {
      const float* xr = x + r * cols;
      const float* dy = dout + r * cols;
      const float inv = inverse_rms(xr, cols, eps);
      double dot = 0;  // Σ g ⊙ n
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < cols; ++c) {
        const float n = xr[c] * inv;
        dot += double(dy[c] * weight[c]) * n;
        dw[c] += dy[c] * n;
      }
      const float mean_gn = float(dot / double(cols));
      float* dxr = dx + r * cols;
      for (int64_t c = 0; c < cols; ++c) dxr[c] = inv * (dy[c] * weight[c] - xr[c] * inv * mean_gn);
    }
  }
  // Chunks in order, each column on its own: no two threads touch one element.
#pragma omp parallel for schedule(static) if (chunks * cols > kRmsnormTeamAbove)
  for (int64_t c = 0; c < cols; ++c) {
    float sum = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[size_t(chunk * cols + c)];
    dweight_accum[c] += sum;
  }
}

}  // namespace moge::kernels
