// The scalar implementation of vmath and the run-time choice between it and vmath_avx512.cpp.
#include "moge/kernels/vmath.h"

#include <cmath>
#include <limits>

namespace moge::kernels::vmath {
namespace detail {

bool avx512_supported() { return __builtin_cpu_supports("avx512f"); }

double exp_affine_scalar(const float* x, float a, float b, float* y, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(std::fma(a, x[i], b));
    if (y) y[i] = e;
    sum += e;
  }
  return sum;
}

// The fallback's sum costs little: one loop serves both, so their y is the same by construction.
void exp_affine_no_sum_scalar(const float* x, float a, float b, float* y, int64_t n) { exp_affine_scalar(x, a, b, y, n); }

float max_scalar(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace detail

namespace {

// Chosen once: the CPU does not change under a running process.
struct Impl {
  Isa isa;
  double (*exp_affine)(const float*, float, float, float*, int64_t);
  void (*exp_affine_no_sum)(const float*, float, float, float*, int64_t);
  float (*max)(const float*, int64_t);
};

const Impl& impl() {
  static const Impl chosen = detail::avx512_supported()
                                 ? Impl{Isa::avx512, detail::exp_affine_avx512, detail::exp_affine_no_sum_avx512,
                                        detail::max_avx512}
                                 : Impl{Isa::scalar, detail::exp_affine_scalar, detail::exp_affine_no_sum_scalar,
                                        detail::max_scalar};
  return chosen;
}

}  // namespace

double exp_affine(const float* x, float a, float b, float* y, int64_t n) { return impl().exp_affine(x, a, b, y, n); }

void exp_affine_no_sum(const float* x, float a, float b, float* y, int64_t n) {
  impl().exp_affine_no_sum(x, a, b, y, n);
}

float max(const float* x, int64_t n) { return impl().max(x, n); }

Isa active_isa() { return impl().isa; }

const char* isa_name(Isa isa) { return isa == Isa::avx512 ? "avx512" : "scalar"; }

}  // namespace moge::kernels::vmath
