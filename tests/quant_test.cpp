// Quantized weights (kernels/quant.h): formats by hand (round-trip bounds, nibble order, f16),
// every SIMD path against the scalar reference (Q8 bit-identical, Q4 within f32 summation
// order), the reference against a naive f32 GEMM on the dequantized operands, the accuracy of
// W8A8 / W4A8 against the unquantized product, and the errors for bad shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/kernels/quant.h"

namespace moge::kernels {
namespace {

// Restores the automatic kernel choice when a test leaves (even by a failed assertion).
struct KernelGuard {
  ~KernelGuard() { reset_quant_kernel(); }
};

const auto gemm_q8_f = [](int64_t rows, const float* x, int64_t ldx, const Q8Ref& w, float* y, int64_t ldy) {
  gemm_q8(rows, x, ldx, w, y, ldy);
};
const auto gemm_q4_f = [](int64_t rows, const float* x, int64_t ldx, const Q4Ref& w, float* y, int64_t ldy) {
  gemm_q4(rows, x, ldx, w, y, ldy);
};

std::vector<QuantKernel> simd_kernels() {
  std::vector<QuantKernel> ks;
  for (QuantKernel k : {QuantKernel::avx2, QuantKernel::avx512_vnni})
    if (quant_kernel_supported(k)) ks.push_back(k);
  return ks;
}

// Weights like a trained layer's: N(0, 0.02²) with a few outliers ×8 (about 1 in 200).
std::vector<float> random_weights(Rng& rng, int64_t n) {
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = 0.02f * rng.normal() * (rng.below(200) == 0 ? 8.0f : 1.0f);
  return w;
}

std::vector<float> random_normal(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = rng.normal();
  return v;
}

// The activations exactly as the kernels see them: quantized then dequantized, [rows, in].
std::vector<float> dequantized_activations(const float* x, int64_t rows, int64_t in, int64_t ldx) {
  std::vector<float> out(size_t(rows * in));
  std::vector<int8_t> q(static_cast<size_t>(in));
  for (int64_t r = 0; r < rows; ++r) {
    const float s = quantize_activation_row(x + r * ldx, in, q.data());
    for (int64_t k = 0; k < in; ++k) out[r * in + k] = float(q[k]) * s;
  }
  return out;
}

// Naive loops in double: y[r, o] = Σ_k a[r, k]·b[o, k], and Σ_k |a[r, k]·b[o, k]| (the scale of
// f32 rounding errors in any summation order).
void naive_gemm(const std::vector<float>& a, const std::vector<float>& b, int64_t rows, int64_t out, int64_t in,
                std::vector<double>& y, std::vector<double>& abs_sum) {
  y.assign(size_t(rows * out), 0.0);
  abs_sum.assign(size_t(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0, t = 0;
      for (int64_t k = 0; k < in; ++k) {
        const double p = double(a[r * in + k]) * double(b[o * in + k]);
        s += p;
        t += std::abs(p);
      }
      y[r * out + o] = s;
      abs_sum[r * out + o] = t;
    }
}

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / double(v.size()));
}

// ---------------------------------------------------------------------------------------------
// f16

TEST(QuantF16, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_EQ(h & 0x7c00u, 0x7c00u);
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "half 0x" << std::hex << h << " = " << f;
  }
}

TEST(QuantF16, HandPickedValuesAndRounding) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);  // smallest normal
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);           // tie → even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);       // tie → even (up)
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);  // above the tie
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);            // tie between 0 and 2^-24 → even (0)
  EXPECT_EQ(f32_to_f16(0x1p-25f + 0x1p-30f), 0x0001);
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);        // tie 1.5 ulp → 2
  EXPECT_EQ(f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400); // rounds up into the normals
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

// Random floats across the f16 range: the conversion equals rounding in double arithmetic.
TEST(QuantF16, MatchesRoundingInDouble) {
  Rng rng(7);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::ldexp(rng.uniform(-1.0f, 1.0f), int(rng.below(44)) - 28);
    const float back = f16_to_f32(f32_to_f16(f));
    // Reference: the exponent of f, clamped at the subnormal floor, fixes the f16 grid step.
    int e;
    std::frexp(double(f), &e);
    const double step = std::ldexp(1.0, std::max(e, -13) - 11);
    const double want = std::nearbyint(double(f) / step) * step;
    ASSERT_EQ(double(back), want) << f;
  }
}

// ---------------------------------------------------------------------------------------------
// Formats

TEST(QuantFormat, Q8RoundTripWithinHalfAStep) {
  Rng rng(1);
  for (auto [out, in] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 64}, {5, 300}, {64, 2048}}) {
    std::vector<float> w = random_weights(rng, out * in);
    for (int64_t k = 0; k < in; ++k) w[k] = 0.0f;  // an all-zero row
    const Q8Weight q = quantize_q8(w.data(), out, in);
    const Q8Ref r = q.ref();
    ASSERT_EQ(q.bytes(), size_t(out * in + 8 * out));
    std::vector<float> deq(size_t(out * in));
    dequantize_q8(r, deq.data());
    EXPECT_EQ(r.scale[0], 0.0f);
    for (int64_t o = 0; o < out; ++o) {
      float amax = 0;
      int32_t sum = 0;
      for (int64_t k = 0; k < in; ++k) {
        amax = std::max(amax, std::abs(w[o * in + k]));
        sum += r.q[o * in + k];
        ASSERT_GE(r.q[o * in + k], -127);
      }
      EXPECT_EQ(r.scale[o], amax / 127.0f);
      EXPECT_EQ(r.row_sum[o], sum);
      for (int64_t k = 0; k < in; ++k)
        ASSERT_LE(std::abs(w[o * in + k] - deq[o * in + k]), r.scale[o] * (0.5f + 1e-5f))
            << "[" << o << ", " << k << "] of " << out << "x" << in;
    }
  }
}

TEST(QuantFormat, Q4RoundTripWithinHalfAStep) {
  Rng rng(2);
  for (auto [out, in] : {std::pair<int64_t, int64_t>{1, 32}, {3, 96}, {17, 128}, {64, 2048}}) {
    std::vector<float> w = random_weights(rng, out * in);
    if (in > 32)
      for (int k = 0; k < 32; ++k) w[32 + k] = 0.0f;              // an all-zero block
    for (int k = 0; k < 32; ++k) w[k] = 1e-6f * float(k - 16);    // a block with a subnormal scale
    const Q4Weight q = quantize_q4(w.data(), out, in);
    const Q4Ref r = q.ref();
    ASSERT_EQ(q.bytes(), size_t(out * in / 2 + out * in / 16));
    std::vector<float> deq(size_t(out * in));
    dequantize_q4(r, deq.data());
    const int64_t nb = in / 32;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t b = 0; b < nb; ++b) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(w[o * in + b * 32 + j]));
        const float d = f16_to_f32(r.scale[o * nb + b]);
        if (amax == 0.0f) {
          EXPECT_EQ(r.scale[o * nb + b], 0);
        } else {
          EXPECT_GE(d, amax / 7.5f);                                    // rounded up ...
          EXPECT_LT(f16_to_f32(r.scale[o * nb + b] - 1), amax / 7.5f);  // ... to the next f16
        }
        for (int j = 0; j < 32; ++j) {
          const int64_t i = o * in + b * 32 + j;
          ASSERT_LE(std::abs(w[i] - deq[i]), d * (0.5f + 1e-6f)) << "[" << o << ", " << b * 32 + j << "]";
        }
      }
  }
}

// Blocks built by hand. Block 0: max |w| = 7.5, so d = 1 exactly (f16 0x3c00); element j in
// the low nibble of byte j, element j + 16 in the high nibble, stored as q + 8.
// Block 1: element k = (k - 16) · 0.5, max 8: d = 8 / 7.5 rounded up to f16 = 1.0673828125.
TEST(QuantFormat, Q4LayoutByHand) {
  std::vector<float> w(64, 0.0f);
  w[0] = -7.5f;   // q = -8 (ties to even) → nibble 0x0, low nibble of byte 0
  w[16] = 7.5f;   // 8 clamped to 7         → nibble 0xf, high nibble of byte 0
  w[1] = 3.0f;    // q = 3                  → nibble 0xb, low nibble of byte 1
  w[17] = -0.49f; // q = 0                  → nibble 0x8, high nibble of byte 1
  w[15] = -1.5f;  // q = -2 (ties to even)  → nibble 0x6, low nibble of byte 15
  w[31] = 2.5f;   // q = 2 (ties to even)   → nibble 0xa, high nibble of byte 15
  for (int k = 0; k < 32; ++k) w[32 + k] = 0.5f * float(k - 16);
  const Q4Weight q = quantize_q4(w.data(), 1, 64);
  const Q4Ref r = q.ref();
  EXPECT_EQ(r.scale[0], 0x3c00);
  const uint8_t want0[16] = {0xf0, 0x8b, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88,
                             0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0xa6};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(r.qs[j], want0[j]) << "byte " << j;
  EXPECT_EQ(f16_to_f32(r.scale[1]), 1.0673828125f);
  const float d = 1.0673828125f;
  for (int j = 0; j < 16; ++j) {
    const int lo = int(std::nearbyint(0.5f * float(j - 16) / d)), hi = int(std::nearbyint(0.5f * float(j) / d));
    EXPECT_EQ(r.qs[16 + j], uint8_t((lo + 8) | ((hi + 8) << 4))) << "block 1 byte " << j;
  }
  EXPECT_EQ(r.qs[16] & 0x0f, 1);  // -8 / d = -7.495 → -7: with d rounded up, ±max maps to ±7
  std::vector<float> deq(64);
  dequantize_q4(r, deq.data());
  EXPECT_EQ(deq[0], -8.0f);
  EXPECT_EQ(deq[16], 7.0f);
  EXPECT_EQ(deq[17], 0.0f);
  EXPECT_EQ(deq[32], -7.0f * d);
}

TEST(QuantFormat, ActivationRowWithinHalfAStep) {
  Rng rng(3);
  std::vector<float> x = random_normal(rng, 1000);
  std::vector<int8_t> q(1000);
  const float s = quantize_activation_row(x.data(), 1000, q.data());
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::abs(v));
  EXPECT_EQ(s, amax / 127.0f);
  for (int k = 0; k < 1000; ++k) {
    ASSERT_GE(q[k], -127);
    ASSERT_LE(std::abs(x[k] - float(q[k]) * s), s * (0.5f + 1e-5f));
  }
  std::vector<float> zeros(10, 0.0f);
  EXPECT_EQ(quantize_activation_row(zeros.data(), 10, q.data()), 0.0f);
  for (int k = 0; k < 10; ++k) EXPECT_EQ(q[k], 0);
}

// ---------------------------------------------------------------------------------------------
// Kernels: SIMD paths == scalar reference, and reference == naive GEMM on dequantized operands

struct Case {
  int64_t rows, out, in;
};

std::vector<Case> q8_cases() {
  std::vector<Case> cs;
  for (int64_t in : {1, 7, 31, 32, 33, 63, 64, 65, 100, 128, 200, 320, 1000, 2048})
    for (int64_t out : {1, 3, 4, 5, 17, 33})
      for (int64_t rows = 1; rows <= 16; ++rows) cs.push_back({rows, out, in});
  for (int64_t rows : {17, 37}) cs.push_back({rows, 9, 200});  // beyond small batches: still right
  return cs;
}

std::vector<Case> q4_cases() {
  std::vector<Case> cs;
  for (int64_t in : {32, 64, 96, 128, 160, 192, 224, 256, 416, 2048})
    for (int64_t out : {1, 2, 3, 5, 17, 33})
      for (int64_t rows = 1; rows <= 16; ++rows) cs.push_back({rows, out, in});
  for (int64_t rows : {17, 37}) cs.push_back({rows, 9, 224});
  return cs;
}

// Runs gemm with padded strides (x and y rows longer than needed, the padding must stay as is).
template <class W, class Gemm>
std::vector<float> run_gemm(Gemm gemm, const Case& c, const std::vector<float>& x, int64_t ldx, const W& w) {
  const int64_t ldy = c.out + 3;
  std::vector<float> y(size_t(c.rows * ldy), -7.0f);
  gemm(c.rows, x.data(), ldx, w, y.data(), ldy);
  std::vector<float> packed(size_t(c.rows * c.out));
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t o = 0; o < c.out; ++o) packed[r * c.out + o] = y[r * ldy + o];
    for (int64_t o = c.out; o < ldy; ++o) EXPECT_EQ(y[r * ldy + o], -7.0f);
  }
  return packed;
}

TEST(QuantKernel, Q8SimdEqualsScalarBitForBit) {
  KernelGuard guard;
  Rng rng(11);
  for (const Case& c : q8_cases()) {
    const int64_t ldx = c.in + 5;
    std::vector<float> x = random_normal(rng, c.rows * ldx);
    const std::vector<float> w = random_weights(rng, c.out * c.in);
    const Q8Weight q = quantize_q8(w.data(), c.out, c.in);
    set_quant_kernel(QuantKernel::scalar);
    const std::vector<float> ref = run_gemm(gemm_q8_f, c, x, ldx, q.ref());
    for (QuantKernel k : simd_kernels()) {
      set_quant_kernel(k);
      const std::vector<float> got = run_gemm(gemm_q8_f, c, x, ldx, q.ref());
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(ref[i]))
            << quant_kernel_name(k) << " rows=" << c.rows << " out=" << c.out << " in=" << c.in << " at " << i;
    }
  }
}

TEST(QuantKernel, Q4SimdEqualsScalarWithinSummationOrder) {
  KernelGuard guard;
  Rng rng(12);
  double worst = 0;
  for (const Case& c : q4_cases()) {
    const int64_t ldx = c.in + 5;
    std::vector<float> x = random_normal(rng, c.rows * ldx);
    const std::vector<float> w = random_weights(rng, c.out * c.in);
    const Q4Weight q = quantize_q4(w.data(), c.out, c.in);
    std::vector<float> wd(size_t(c.out * c.in));
    dequantize_q4(q.ref(), wd.data());
    std::vector<double> exact, abs_sum;
    naive_gemm(dequantized_activations(x.data(), c.rows, c.in, ldx), wd, c.rows, c.out, c.in, exact, abs_sum);
    set_quant_kernel(QuantKernel::scalar);
    const std::vector<float> ref = run_gemm(gemm_q4_f, c, x, ldx, q.ref());
    for (QuantKernel k : simd_kernels()) {
      set_quant_kernel(k);
      const std::vector<float> got = run_gemm(gemm_q4_f, c, x, ldx, q.ref());
      for (size_t i = 0; i < ref.size(); ++i) {
        // Both sum the same exact per-block products in f32, in different orders.
        const double err = std::abs(double(got[i]) - double(ref[i])) / abs_sum[i];
        worst = std::max(worst, err);
        ASSERT_LE(err, 1e-6) << quant_kernel_name(k) << " rows=" << c.rows << " out=" << c.out << " in=" << c.in
                             << " at " << i << ": " << got[i] << " vs " << ref[i];
      }
    }
  }
  std::printf("worst |simd - scalar| / Σ|x·w| = %.3g\n", worst);
}

// The scalar reference against naive loops over the dequantized weights and activations.
TEST(QuantKernel, ReferenceEqualsNaiveGemmOnDequantized) {
  KernelGuard guard;
  set_quant_kernel(QuantKernel::scalar);
  Rng rng(13);
  double worst8 = 0, worst4 = 0;
  for (Case c : {Case{1, 5, 64}, Case{3, 17, 96}, Case{16, 33, 2048}, Case{7, 8, 4096}, Case{2, 3, 13}}) {
    std::vector<float> x = random_normal(rng, c.rows * c.in);
    const std::vector<float> w = random_weights(rng, c.out * c.in);
    const std::vector<float> xd = dequantized_activations(x.data(), c.rows, c.in, c.in);
    std::vector<double> exact, abs_sum;

    const Q8Weight q8 = quantize_q8(w.data(), c.out, c.in);
    std::vector<float> wd(size_t(c.out * c.in));
    dequantize_q8(q8.ref(), wd.data());
    naive_gemm(xd, wd, c.rows, c.out, c.in, exact, abs_sum);
    const std::vector<float> y8 = run_gemm(gemm_q8_f, c, x, c.in, q8.ref());
    for (size_t i = 0; i < y8.size(); ++i) {
      const double err = std::abs(double(y8[i]) - exact[i]) / abs_sum[i];
      worst8 = std::max(worst8, err);
      ASSERT_LE(err, 1e-6) << "q8 " << c.rows << "x" << c.out << "x" << c.in << " at " << i;
    }
    if (c.in % 32) continue;
    const Q4Weight q4 = quantize_q4(w.data(), c.out, c.in);
    dequantize_q4(q4.ref(), wd.data());
    naive_gemm(xd, wd, c.rows, c.out, c.in, exact, abs_sum);
    const std::vector<float> y4 = run_gemm(gemm_q4_f, c, x, c.in, q4.ref());
    for (size_t i = 0; i < y4.size(); ++i) {
      const double err = std::abs(double(y4[i]) - exact[i]) / abs_sum[i];
      worst4 = std::max(worst4, err);
      ASSERT_LE(err, 1e-6) << "q4 " << c.rows << "x" << c.out << "x" << c.in << " at " << i;
    }
  }
  std::printf("worst |kernel - naive| / Σ|x·w|: q8 %.3g, q4 %.3g\n", worst8, worst4);
}

// Extreme values at the largest allowed `in`: the int32 accumulators (and the VNNI path's
// +128 offset, which wraps) must still give the exact sum.
TEST(QuantKernel, Q8LargestInputIsExact) {
  KernelGuard guard;
  const int64_t in = 131072, out = 2;
  std::vector<float> w(size_t(out * in), 1.0f), x(size_t(in), 1.0f);
  for (int64_t k = 0; k < in; ++k) w[in + k] = -1.0f;  // row 1: all -127
  const Q8Weight q = quantize_q8(w.data(), out, in);
  for (QuantKernel k : {QuantKernel::scalar, QuantKernel::avx2, QuantKernel::avx512_vnni}) {
    if (!quant_kernel_supported(k)) continue;
    set_quant_kernel(k);
    float y[2];
    gemm_q8(1, x.data(), in, q, y, 2);
    // 131072·127·127 = 2114060288 in int32; × (1/127)² in f32.
    EXPECT_EQ(y[0], float(2114060288) * ((1.0f / 127.0f) * (1.0f / 127.0f))) << quant_kernel_name(k);
    EXPECT_EQ(y[1], -y[0]) << quant_kernel_name(k);
    EXPECT_NEAR(y[0], float(in), 1e-5 * in);
  }
}

TEST(QuantKernel, ThreadCountDoesNotChangeResults) {
  Rng rng(14);
  const int64_t rows = 3, out = 1000, in = 1024;
  std::vector<float> x = random_normal(rng, rows * in), w = random_weights(rng, out * in);
  const Q8Weight q8 = quantize_q8(w.data(), out, in);
  const Q4Weight q4 = quantize_q4(w.data(), out, in);
  std::vector<float> a8(rows * out), b8(rows * out), a4(rows * out), b4(rows * out);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  gemm_q8(rows, x.data(), in, q8, a8.data(), out);
  gemm_q4(rows, x.data(), in, q4, a4.data(), out);
  omp_set_num_threads(std::max(2, threads));
  gemm_q8(rows, x.data(), in, q8, b8.data(), out);
  gemm_q4(rows, x.data(), in, q4, b4.data(), out);
  omp_set_num_threads(threads);
  EXPECT_EQ(a8, b8);
  EXPECT_EQ(a4, b4);
}

// W8A8 and W4A8 against the unquantized f32 product, rms error / rms output, activations
// N(0, 1), rows = 8, out = 256, in = 2048:
//  - Gaussian weights N(0, 0.02²): Q8 ≈ 1.2% (a row's max is ≈ 3.5σ, step 3.5σ/127: ≈ 0.83% rms
//    from the weights and as much from the activations); Q4 ≈ 9.5% (a block's max |w| ≈ 2.35σ,
//    step ≈ 0.31σ: 9.47% from the weights, simulated in numpy, plus the activations' 0.83%).
//    Measured 1.20% and 9.69%. Bounds: Q8 < 1.5%, Q4 < 11%.
//  - With outliers (1 weight in 200 ×8) the per-row Q8 scale is set by the outliers: ≈ 3%;
//    bounds Q8 < 4%, Q4 < 15%.
TEST(QuantKernel, AccuracyAgainstUnquantizedProduct) {
  Rng rng(15);
  const int64_t rows = 8, out = 256, in = 2048;
  const std::vector<float> x = random_normal(rng, rows * in);
  for (bool outliers : {false, true}) {
    std::vector<float> w = outliers ? random_weights(rng, out * in) : random_normal(rng, out * in);
    if (!outliers)
      for (float& v : w) v *= 0.02f;
    std::vector<double> exact, abs_sum;
    naive_gemm(x, w, rows, out, in, exact, abs_sum);
    const double y_rms = rms(exact);
    auto rel_rms = [&](const std::vector<float>& y) {
      std::vector<double> d(y.size());
      for (size_t i = 0; i < y.size(); ++i) d[i] = double(y[i]) - exact[i];
      return rms(d) / y_rms;
    };
    std::vector<float> y(rows * out);
    gemm_q8(rows, x.data(), in, quantize_q8(w.data(), out, in), y.data(), out);
    const double e8 = rel_rms(y);
    gemm_q4(rows, x.data(), in, quantize_q4(w.data(), out, in), y.data(), out);
    const double e4 = rel_rms(y);
    std::printf("%s weights: rms error / rms output: q8 %.4f, q4 %.4f (%s)\n", outliers ? "outlier" : "gaussian", e8,
                e4, quant_kernel_name());
    EXPECT_LT(e8, outliers ? 0.04 : 0.015);
    EXPECT_LT(e4, outliers ? 0.15 : 0.11);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors and kernel selection

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(QuantErrors, BadShapesNameTheShape) {
  std::vector<float> w(3 * 40, 0.5f), x(64, 1.0f), y(64);
  EXPECT_NE(error_of([&] { quantize_q4(w.data(), 3, 40); }).find("[3, 40]"), std::string::npos);
  EXPECT_NE(error_of([&] { quantize_q4(w.data(), 3, 0); }).find("[3, 0]"), std::string::npos);
  EXPECT_NE(error_of([&] { quantize_q8(w.data(), 0, 40); }).find("[0, 40]"), std::string::npos);
  EXPECT_NE(error_of([&] { quantize_q8(w.data(), 1, 200000); }).find("[1, 200000]"), std::string::npos);
  w[41] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { quantize_q8(w.data(), 3, 40); }).find("[1, 1]"), std::string::npos);
  w[41] = 0.5f;
  const Q8Weight q8 = quantize_q8(w.data(), 3, 40);
  EXPECT_NE(error_of([&] { gemm_q8(1, x.data(), 39, q8, y.data(), 3); }).find("[3, 40]"), std::string::npos);
  EXPECT_NE(error_of([&] { gemm_q8(1, x.data(), 40, q8, y.data(), 2); }).find("[3, 40]"), std::string::npos);
  EXPECT_NE(error_of([&] { gemm_q8(-1, x.data(), 40, q8, y.data(), 3); }).find("[3, 40]"), std::string::npos);
  const Q4Weight q4 = quantize_q4(w.data(), 1, 32);
  Q4Ref bad = q4.ref();
  bad.in = 48;
  EXPECT_NE(error_of([&] { gemm_q4(1, x.data(), 48, bad, y.data(), 1); }).find("[1, 48]"), std::string::npos);
  gemm_q8(0, x.data(), 40, q8, y.data(), 3);  // no rows: nothing to do, no error
}

TEST(QuantErrors, KernelSelection) {
  KernelGuard guard;
  set_quant_kernel(QuantKernel::scalar);
  EXPECT_STREQ(quant_kernel_name(), "scalar");
  reset_quant_kernel();
  const char* saved = std::getenv("MOGE_QUANT_KERNEL");
  const std::string saved_value = saved ? saved : "";
  setenv("MOGE_QUANT_KERNEL", "scalar", 1);
  EXPECT_STREQ(quant_kernel_name(), "scalar");
  reset_quant_kernel();
  setenv("MOGE_QUANT_KERNEL", "nonsense", 1);
  EXPECT_NE(error_of([] { quant_kernel(); }).find("MOGE_QUANT_KERNEL"), std::string::npos);
  if (saved) setenv("MOGE_QUANT_KERNEL", saved_value.c_str(), 1);
  else unsetenv("MOGE_QUANT_KERNEL");
  reset_quant_kernel();
  if (!saved) {
    const QuantKernel best = quant_kernel_supported(QuantKernel::avx512_vnni) ? QuantKernel::avx512_vnni
                             : quant_kernel_supported(QuantKernel::avx2)      ? QuantKernel::avx2
                                                                              : QuantKernel::scalar;
    EXPECT_EQ(quant_kernel(), best);
  }
  std::printf("quant kernel: %s\n", quant_kernel_name());
}

}  // namespace
}  // namespace moge::kernels
