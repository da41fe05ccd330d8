#pragma once
// Helpers shared by the tests.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <omp.h>

#include <string>
#include <vector>

#include "moge/core/rng.h"
#include "moge/core/tensor.h"

namespace moge::test {

// max |a - b| / max |b|: an error relative to the reference's scale, so tiny reference entries
// do not make a correct result look wrong.
inline double rel_error(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

inline double rel_error(const Tensor& a, const Tensor& b) { return rel_error(a.f32(), b.f32(), b.numel()); }

// n values drawn N(0, 1).
inline std::vector<float> random_vector(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// Restores OpenMP's thread count when the scope ends (tests that set it).
struct ThreadGuard {
  int saved = omp_get_max_threads();
  ~ThreadGuard() { omp_set_num_threads(saved); }
};

inline std::string source_path(const std::string& rel) { return std::string(MOGE_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(MOGE_BINARY_DIR) + "/" + rel; }

}  // namespace moge::test
