#pragma once
// Vectorized elementwise math over f32 arrays: exp (with an affine argument and its sum, the shape
// every softmax-like kernel needs) and max. AVX-512 when the CPU has it (chosen at run time, so
// the library still runs elsewhere), std::exp otherwise.
//
// Accuracy of the AVX-512 exp: within 1.02 ulp of exp(x) for every f32 input (measured
// exhaustively; tests/kernels_vmath_test.cpp asserts 2 ulp on a dense sample). Results below
// 2^-126 are denormals rounded once, below ~7e-46 they are 0; exp(x > 88.73) and exp(+inf) are
// +inf, exp(-inf) is 0, NaN stays NaN. The two implementations do not give the same bits: a
// result depends on the machine (as with any libm), never on the thread count.
#include <cstdint>

namespace moge::kernels::vmath {

// y[i] = exp(a · x[i] + b) for i < n, with a · x + b rounded once (an FMA). Returns Σ y[i], summed
// in double. y may alias x, or be null to compute the sum alone.
double exp_affine(const float* x, float a, float b, float* y, int64_t n);

// The same y[i] as exp_affine, bit for bit, without the sum (whose widening to double costs about
// a quarter of the AVX-512 loop). y may alias x.
void exp_affine_no_sum(const float* x, float a, float b, float* y, int64_t n);

// y[i] = exp(x[i]); y may alias x.
inline void exp(const float* x, float* y, int64_t n) { exp_affine_no_sum(x, 1.0f, 0.0f, y, n); }

// max_i x[i]; -inf for n = 0. NaNs are skipped by the AVX-512 version, not necessarily by the
// scalar one: callers that must see a NaN find it in the exp sum.
float max(const float* x, int64_t n);

// Which implementation the functions above use.
enum class Isa { scalar, avx512 };
Isa active_isa();
const char* isa_name(Isa isa);

namespace detail {
// Both implementations, for tests and benchmarks; the avx512 ones only where
// avx512_supported().
bool avx512_supported();
double exp_affine_scalar(const float* x, float a, float b, float* y, int64_t n);
double exp_affine_avx512(const float* x, float a, float b, float* y, int64_t n);
void exp_affine_no_sum_scalar(const float* x, float a, float b, float* y, int64_t n);
void exp_affine_no_sum_avx512(const float* x, float a, float b, float* y, int64_t n);
float max_scalar(const float* x, int64_t n);
float max_avx512(const float* x, int64_t n);
}  // namespace detail

}  // namespace moge::kernels::vmath
