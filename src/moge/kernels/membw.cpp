#include "moge/kernels/membw.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "moge/core/buffer.h"

namespace moge::kernels {

double measure_read_bandwidth(size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  AlignedBuffer buffer(n * sizeof(float));  // zero-filled: every page is touched before timing
  const float* p = reinterpret_cast<const float*>(buffer.data());
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    float sum = 0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < n; ++i) sum += p[i];
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + sum;
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  return best;
}

}  // namespace moge::kernels
