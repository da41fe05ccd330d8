// The kernels against independent references: matmul against naive triple loops, softmax and
// SwiGLU against their formulas (in double) and finite differences, bf16 conversion against
// hand-picked bit patterns.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moge/core/dtype.h"
#include "moge/core/rng.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/softmax.h"
#include "moge/kernels/swiglu.h"

namespace moge::kernels {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// bf16 helpers written independently of moge's conversion code.

// Round x to the nearest bf16 value (8 significant bits), ties to even, in double arithmetic:
// frexp puts the significand in [0.5, 1), so significand · 256 holds the 8 kept bits and
// nearbyint (default rounding mode: to nearest, ties to even) does the rounding.
float round_to_bf16(float x) {
  int exponent;
  double significand = std::frexp(double(x), &exponent);
  return float(std::ldexp(std::nearbyint(significand * 256.0), exponent - 8));
}

// The bf16 bit pattern of a float that is already exactly representable in bf16.
bf16 exact_bf16(float x) { return bf16{uint16_t(std::bit_cast<uint32_t>(x) >> 16)}; }

// ---------------------------------------------------------------------------------------------
// matmul

// One operand of a test product: a logical [rows, cols] matrix stored row-major as
// (trans ? [cols, rows] : [rows, cols]) with `pad` unused elements (NaN) after every row.
struct Operand {
  int64_t rows, cols, ld;
  bool trans;
  DType dtype;
  std::vector<float> value;  // stored layout; what the product must see (bf16-rounded for bf16 operands)
  std::vector<bf16> bits;    // the bf16 storage when dtype is bf16

  Operand(int64_t rows_, int64_t cols_, bool trans_, DType dtype_, int64_t pad, Rng& rng)
      : rows(rows_), cols(cols_), trans(trans_), dtype(dtype_) {
    const int64_t stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
    ld = stored_cols + pad;
    value.assign(size_t(stored_rows * ld), kNaN);  // padding stays NaN: it must never be read
    for (int64_t i = 0; i < stored_rows; ++i)
      for (int64_t j = 0; j < stored_cols; ++j) {
        if (dtype == DType::bf16) {
          // Multiples of 1/64 up to ±4: exact in bf16 (at most 8 significant bits).
          value[i * ld + j] = float(int(rng.below(511)) - 255) / 64.0f;
        } else {
          value[i * ld + j] = rng.uniform(-2.0f, 2.0f);
        }
      }
    if (dtype == DType::bf16) {
      bits.resize(value.size());
      for (size_t i = 0; i < value.size(); ++i) bits[i] = exact_bf16(value[i]);
    }
  }

  MatRef ref() const {
    return dtype == DType::f32 ? MatRef::f32(value.data(), ld, trans) : MatRef::bf16(bits.data(), ld, trans);
  }
  // Element (i, j) of the logical matrix, rounded to bf16 when `as_bf16`.
  double at(int64_t i, int64_t j, bool as_bf16) const {
    float v = trans ? value[j * ld + i] : value[i * ld + j];
    return as_bf16 ? round_to_bf16(v) : v;
  }
};

// Checks c [m, n] (leading dimension ldc) against naive loops over a and b. With mixed dtypes the
// f32 operand is rounded to bf16 first, as matmul documents. The tolerance is the standard bound
// for f32 summation of k products in any order, γ ≈ k·u, with u = 2^-23 (twice the unit roundoff)
// times Σ|a||b| (+ |c0| when accumulating); every product itself is exact when both sides are bf16.
void expect_product(const Operand& a, const Operand& b, const std::vector<float>& c0, const std::vector<float>& c,
                    int64_t m, int64_t n, int64_t k, int64_t ldc, bool accumulate) {
  const bool round = a.dtype != b.dtype;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = accumulate ? c0[i * ldc + j] : 0.0, magnitude = accumulate ? std::abs(sum) : 0.0;
      for (int64_t p = 0; p < k; ++p) {
        double term = a.at(i, p, round) * b.at(p, j, round);
        sum += term;
        magnitude += std::abs(term);
      }
      double tol = double(k + 2) * 0x1p-23 * magnitude + 1e-30;
      ASSERT_NEAR(c[i * ldc + j], sum, tol) << "element (" << i << ", " << j << ")";
    }
  // The padding of every row of c is left alone.
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(std::bit_cast<uint32_t>(c[i * ldc + j]), std::bit_cast<uint32_t>(c0[i * ldc + j]));
}

struct DTypePair {
  DType a, b;
};

TEST(Matmul, MatchesNaiveLoopsForAllLayoutsAndDtypes) {
  const DTypePair dtypes[] = {
      {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f32, DType::bf16}, {DType::bf16, DType::f32}};
  // m = 1 and 5 take oneDNN's small-row path, 13 and 33 an exact-shape primitive (53 too, unless
  // Rows::padded: 64 rows), 97 = 96 + 1 and 134 = 128 + 6 a bulk primitive plus a tail
  // (Rows::padded: one execution of 112 or 144 rows, or of exactly m rows when A is transposed);
  // k = 75 = 64 + 11 is cut in two accumulated pieces.
  const int64_t ms[] = {1, 5, 13, 33, 53, 97, 134};
  const int64_t ks[] = {23, 75};
  const int64_t n = 11;
  Rng rng(1);
  for (auto [dta, dtb] : dtypes)
    for (bool trans_a : {false, true})
      for (bool trans_b : {false, true})
        for (int64_t m : ms)
          for (int64_t k : ks)
          for (bool accumulate : {false, true})
          for (Rows rows : {Rows::bucketed, Rows::padded}) {
            SCOPED_TRACE(testing::Message() << dtype_name(dta) << " x " << dtype_name(dtb) << " trans_a " << trans_a
                                            << " trans_b " << trans_b << " m " << m << " k " << k << " accumulate " << accumulate
                                            << " padded rows " << (rows == Rows::padded));
            // Padded rows everywhere: ld > stored columns for a, b and c.
            Operand a(m, k, trans_a, dta, 3, rng), b(k, n, trans_b, dtb, 5, rng);
            const int64_t ldc = n + 2;
            std::vector<float> c0(size_t(m * ldc));
            for (float& v : c0) v = rng.uniform(-1.0f, 1.0f);
            std::vector<float> c = c0;
            matmul(m, n, k, a.ref(), b.ref(), c.data(), ldc, accumulate, rows);
            expect_product(a, b, c0, c, m, n, k, ldc, accumulate);
          }
}

// Mixed f32 x bf16 really rounds the f32 side: against the unrounded f32 inputs the error is
// ~2^-9 relative, hundreds of times the tolerance above. (Guards the test's own discrimination.)
TEST(Matmul, MixedDtypeRoundsTheF32Operand) {
  Rng rng(2);
  const int64_t m = 4, n = 3, k = 64;
  Operand a(m, k, false, DType::f32, 0, rng), b(k, n, false, DType::bf16, 0, rng);
  std::vector<float> c(size_t(m * n));
  matmul(m, n, k, a.ref(), b.ref(), c.data(), n);
  double max_diff_unrounded = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double exact = 0;
      for (int64_t p = 0; p < k; ++p) exact += a.at(i, p, false) * b.at(p, j, false);
      max_diff_unrounded = std::max(max_diff_unrounded, std::abs(c[i * n + j] - exact));
    }
  EXPECT_GT(max_diff_unrounded, 1e-4);
}

TEST(Matmul, EmptyRowsLeaveCUntouched) {
  Rng rng(3);
  Operand a(1, 4, false, DType::f32, 0, rng), b(4, 3, false, DType::f32, 0, rng);
  std::vector<float> c = {7.0f, 8.0f, 9.0f};
  matmul(0, 3, 4, a.ref(), b.ref(), c.data(), 3);
  matmul(0, 3, 4, a.ref(), b.ref(), c.data(), 3, true);
  EXPECT_EQ(c, (std::vector<float>{7.0f, 8.0f, 9.0f}));
}

TEST(Matmul, EmptyReductionGivesZeroOrLeavesCWhenAccumulating) {
  Rng rng(4);
  for (auto [dta, dtb] : {DTypePair{DType::f32, DType::f32}, DTypePair{DType::bf16, DType::bf16},
                          DTypePair{DType::f32, DType::bf16}}) {
    SCOPED_TRACE(testing::Message() << dtype_name(dta) << " x " << dtype_name(dtb));
    // k = 0: a is [2, 0] and b is [0, 3]; give them one padded element so the pointers are real.
    Operand a(2, 0, false, dta, 1, rng), b(0, 3, false, dtb, 1, rng);
    const int64_t ldc = 4;
    const std::vector<float> c0 = {1, 2, 3, -1, 4, 5, 6, -2};  // -1, -2: padding
    std::vector<float> c = c0;
    matmul(2, 3, 0, a.ref(), b.ref(), c.data(), ldc, /*accumulate=*/true);
    EXPECT_EQ(c, c0);
    matmul(2, 3, 0, a.ref(), b.ref(), c.data(), ldc);
    EXPECT_EQ(c, (std::vector<float>{0, 0, 0, -1, 0, 0, 0, -2}));
  }
}

// A thread binds a problem's memory objects once and points them at each call's data (matmul.cpp):
// the same problem on new operands, and the same run-time-m primitive at several m, on several
// threads at once, must each compute their own product.
TEST(Matmul, RepeatedProblemOnNewOperandsAndThreads) {
  const int64_t n = 23, k = 41;
  for (int64_t m : {int64_t(5), int64_t(7), int64_t(96)}) {
    SCOPED_TRACE(testing::Message() << "m = " << m);
    const int calls = 8;
    std::vector<Operand> as, bs;
    std::vector<std::vector<float>> c0s;
    for (int i = 0; i < calls; ++i) {
      Rng rng(100 + uint64_t(i) + uint64_t(m));
      as.emplace_back(m, k, false, DType::f32, 1, rng);
      bs.emplace_back(k, n, true, DType::f32, 3, rng);
      c0s.emplace_back(size_t(m * (n + 2)));
      for (float& x : c0s.back()) x = rng.uniform(-1.0f, 1.0f);
    }
    std::vector<std::vector<float>> cs = c0s;
    // Two threads, each running the problem on four sets of operands in turn.
#pragma omp parallel for schedule(static, 1) num_threads(2)
    for (int i = 0; i < calls; ++i) matmul(m, n, k, as[i].ref(), bs[i].ref(), cs[i].data(), n + 2, /*accumulate=*/true);
    for (int i = 0; i < calls; ++i) expect_product(as[i], bs[i], c0s[i], cs[i], m, n, k, n + 2, true);
  }
}

// matmul.h: primitives are created once per problem and cached. A repeated problem creates
// none; a handful of rows (f32: up to 8, bf16: 1; see matmul.cpp) share one primitive whatever
// m is, so decode steps with varying batch do not create primitives; and m or k above 64 are cut
// into a multiple of 32 and a tail, so tokens-per-expert counts that vary from step to step
// reuse a bounded set of primitives.
TEST(Matmul, PrimitiveCacheReusesPrimitives) {
  Rng rng(5);
  // Sizes no other test uses, so the first call here is a guaranteed cache miss.
  const int64_t n = 37, k = 29;
  Operand b(k, n, true, DType::f32, 2, rng);
  std::vector<float> c(size_t(64 * n));

  const int before = matmul_primitive_count();
  for (int64_t m = 1; m <= 8; ++m) {
    Operand a(m, k, false, DType::f32, 4, rng);
    matmul(m, n, k, a.ref(), b.ref(), c.data(), n);
  }
  EXPECT_EQ(matmul_primitive_count() - before, 1) << "f32, m = 1..8, same (n, k, ld, flags)";

  const int64_t m = 40;
  Operand big(m, k, false, DType::f32, 4, rng);
  matmul(m, n, k, big.ref(), b.ref(), c.data(), n);
  const int after_first = matmul_primitive_count();
  for (int i = 0; i < 3; ++i) matmul(m, n, k, big.ref(), b.ref(), c.data(), n);
  EXPECT_EQ(matmul_primitive_count(), after_first) << "the same problem again";

  // bf16, one row: different data pointers, same problem.
  Operand bb(k, n, true, DType::bf16, 2, rng);
  const int before_bf16 = matmul_primitive_count();
  for (int i = 0; i < 3; ++i) {
    Operand a(1, k, false, DType::bf16, 4, rng);
    matmul(1, n, k, a.ref(), bb.ref(), c.data(), n);
  }
  EXPECT_EQ(matmul_primitive_count() - before_bf16, 1) << "bf16, m = 1";

  // Every m in 65..320 (expert GEMMs in training) and every k in 65..320 (their weight
  // gradients): bulks 64, 96, ..., 320 (9 values) and tails 1..31 (of which 1..8 share the
  // run-time-rows primitive when they are m): at most 9 + 31 = 40 primitives each, not 256.
  Operand wide_b(320, n, false, DType::f32, 0, rng);
  Operand tall_a(320, k, false, DType::f32, 0, rng);
  std::vector<float> wide_c(size_t(320 * n));
  const int before_m = matmul_primitive_count();
  for (int64_t mm = 65; mm <= 320; ++mm) matmul(mm, n, k, tall_a.ref(), b.ref(), wide_c.data(), n);
  EXPECT_LE(matmul_primitive_count() - before_m, 40) << "m = 65..320";
  Operand short_a(3, 320, false, DType::f32, 0, rng);
  const int before_k = matmul_primitive_count();
  for (int64_t kk = 65; kk <= 320; ++kk) matmul(3, n, kk, short_a.ref(), wide_b.ref(), wide_c.data(), n);
  EXPECT_LE(matmul_primitive_count() - before_k, 40) << "k = 65..320";

  // Rows::padded: m = 65..128 run as 80, 96, 112 or 128 rows, four primitives (here with a B of
  // another dtype than above, so none of them exists yet); transposed A: one exact primitive per m.
  Operand bf16_b(k, n, true, DType::bf16, 0, rng);
  const int before_padded = matmul_primitive_count();
  for (int64_t mm = 65; mm <= 128; ++mm)
    matmul(mm, n, k, tall_a.ref(), bf16_b.ref(), wide_c.data(), n, false, Rows::padded);
  EXPECT_EQ(matmul_primitive_count() - before_padded, 4) << "padded m = 65..128";
  Operand tall_a_t(320, k, true, DType::f32, 0, rng);
  const int before_trans = matmul_primitive_count();
  for (int64_t mm = 65; mm <= 70; ++mm)
    matmul(mm, n, k, tall_a_t.ref(), bf16_b.ref(), wide_c.data(), n, false, Rows::padded);
  EXPECT_EQ(matmul_primitive_count() - before_trans, 6) << "transposed A, m = 65..70";
}

// Rows::padded's row counts: m itself up to 48; above, the next multiple of 16 whose largest divisor
// in [32, 64] (oneDNN 2.6's row block) is not 34, 37, 38, 46, 53, 58, 59, 61 or 62.
TEST(Matmul, PaddedRowCountsAvoidSlowRowBlocks) {
  EXPECT_EQ(padded_row_count(1), 1);
  EXPECT_EQ(padded_row_count(48), 48);
  EXPECT_EQ(padded_row_count(49), 64);
  EXPECT_EQ(padded_row_count(53), 64);
  EXPECT_EQ(padded_row_count(65), 80);     // blocks of 40
  EXPECT_EQ(padded_row_count(96), 96);
  EXPECT_EQ(padded_row_count(360), 384);   // 368 = 8 · 46 passed over; 384 = 6 · 64
  EXPECT_EQ(padded_row_count(460), 480);   // 464 = 8 · 58 passed over; 480 = 8 · 60
  EXPECT_EQ(padded_row_count(260), 288);   // 272 = 8 · 34 passed over; 288 = 6 · 48
  EXPECT_EQ(padded_row_count(290), 320);   // 304 = 8 · 38 passed over; 320 = 5 · 64
  EXPECT_EQ(padded_row_count(580), 624);   // 592 = 16 · 37 and 608 = 16 · 38 passed over; 624 = 12 · 52
  EXPECT_EQ(padded_row_count(477), 480);   // 477 = 9 · 53
  EXPECT_EQ(padded_row_count(920), 960);   // 928 = 16 · 58 and 944 = 16 · 59 passed over
  EXPECT_EQ(padded_row_count(992), 1008);  // 992 = 16 · 62; 1008 = 16 · 63
  EXPECT_EQ(padded_row_count(1690), 1712); // 1696 = 32 · 53; 1712 = 16 · 107, no divisor in [32, 64]
}

// ---------------------------------------------------------------------------------------------
// softmax

// Naive softmax of one row in double, with the max subtracted.
std::vector<double> naive_softmax(const std::vector<double>& x) {
  double mx = x[0];
  for (double v : x) mx = std::max(mx, v);
  std::vector<double> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += (p[i] = std::exp(x[i] - mx));
  for (double& v : p) v /= sum;
  return p;
}

TEST(Softmax, ForwardMatchesNaiveAndSumsToOne) {
  Rng rng(10);
  const int64_t rows = 5, cols = 13;
  std::vector<float> x(rows * cols), p(rows * cols);
  for (float& v : x) v = 3.0f * rng.normal();
  softmax_forward(x.data(), p.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> xr(x.begin() + r * cols, x.begin() + (r + 1) * cols);
    std::vector<double> want = naive_softmax(xr);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_NEAR(p[r * cols + c], want[c], 1e-6 * want[c] + 1e-9) << "row " << r << " col " << c;
      sum += p[r * cols + c];
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << "row " << r;
  }
  // In place gives the same.
  std::vector<float> inplace = x;
  softmax_forward(inplace.data(), inplace.data(), rows, cols);
  EXPECT_EQ(inplace, p);
}

TEST(Softmax, LargeLogitsDoNotOverflow) {
  // exp(1000) and exp(89) overflow f32; after subtracting the max they do not.
  const std::vector<float> x = {1000.0f, 999.0f, -1000.0f, 88.9f, 1000.0f, 3e38f, 3e38f, -3e38f};
  const int64_t cols = 4;
  std::vector<float> p(x.size());
  softmax_forward(x.data(), p.data(), 2, cols);
  for (int64_t r = 0; r < 2; ++r) {
    // Row 1 holds ±3e38: x - max reaches -inf in f32, whose exp must be a clean 0.
    std::vector<double> xr(x.begin() + r * cols, x.begin() + (r + 1) * cols);
    std::vector<double> want = naive_softmax(xr);
    for (int64_t c = 0; c < cols; ++c) {
      ASSERT_TRUE(std::isfinite(p[r * cols + c])) << "row " << r << " col " << c;
      EXPECT_NEAR(p[r * cols + c], want[c], 1e-6) << "row " << r << " col " << c;
    }
  }
  // Hand values: row 0 is {e^0, e^-1, 0, 0} / (1 + e^-1).
  EXPECT_NEAR(p[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(p[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
  // Row 1: two equal maxima share the mass.
  EXPECT_NEAR(p[5], 0.5, 1e-6);
  EXPECT_NEAR(p[6], 0.5, 1e-6);
}

TEST(Softmax, SingleColumnIsOne) {
  const float x[3] = {-5.0f, 0.0f, 80.0f};
  float p[3];
  softmax_forward(x, p, 3, 1);
  for (float v : p) EXPECT_EQ(v, 1.0f);
}

// L(x) = Σ dp · softmax(x): softmax_backward(p, dp) must be ∂L/∂x. Reference: central differences
// of the naive double softmax (eps 1e-5: truncation ~1e-10, rounding ~1e-11).
TEST(Softmax, BackwardMatchesFiniteDifferences) {
  Rng rng(11);
  const int64_t rows = 3, cols = 9;
  std::vector<float> x(rows * cols), dp(rows * cols), p(rows * cols), dx(rows * cols);
  for (float& v : x) v = 2.0f * rng.normal();
  for (float& v : dp) v = rng.normal();
  softmax_forward(x.data(), p.data(), rows, cols);
  softmax_backward(p.data(), dp.data(), dx.data(), rows, cols);

  const double eps = 1e-5;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> xr(x.begin() + r * cols, x.begin() + (r + 1) * cols);
    auto loss = [&](const std::vector<double>& v) {
      std::vector<double> q = naive_softmax(v);
      double l = 0;
      for (int64_t c = 0; c < cols; ++c) l += dp[r * cols + c] * q[c];
      return l;
    };
    for (int64_t c = 0; c < cols; ++c) {
      std::vector<double> plus = xr, minus = xr;
      plus[c] += eps;
      minus[c] -= eps;
      double fd = (loss(plus) - loss(minus)) / (2 * eps);
      EXPECT_NEAR(dx[r * cols + c], fd, 1e-6) << "row " << r << " col " << c;
    }
  }
  // In place (dx == dp) gives the same.
  std::vector<float> inplace = dp;
  softmax_backward(p.data(), inplace.data(), inplace.data(), rows, cols);
  EXPECT_EQ(inplace, dx);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

double naive_swiglu(double g, double u) { return g / (1.0 + std::exp(-g)) * u; }

// Includes large |g|, where exp(-g) overflows f32 (g = -100) or underflows (g = 100).
const std::vector<float> kSwigluG = {-100.0f, -20.0f, -3.0f, -1.0f, -0.25f, 0.0f, 0.3f, 1.0f, 2.5f, 7.0f, 100.0f};

TEST(Swiglu, ForwardMatchesFormula) {
  Rng rng(20);
  const int64_t n = int64_t(kSwigluG.size());
  std::vector<float> u(n), h(n);
  for (float& v : u) v = rng.uniform(-2.0f, 2.0f);
  swiglu_forward(kSwigluG.data(), u.data(), h.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    double want = naive_swiglu(kSwigluG[i], u[i]);
    ASSERT_TRUE(std::isfinite(h[i])) << "g = " << kSwigluG[i];
    EXPECT_NEAR(h[i], want, 1e-6 * std::abs(want) + 1e-30) << "g = " << kSwigluG[i];
  }
  // By hand: silu(0) = 0, silu(1) = 1 / (1 + e^-1).
  EXPECT_EQ(h[5], 0.0f);
  EXPECT_NEAR(h[7], u[7] / (1.0 + std::exp(-1.0)), 1e-6);
}

// L(g, u) = Σ dh · swiglu(g, u): dg and du against central differences of the double formula.
TEST(Swiglu, BackwardMatchesFiniteDifferences) {
  Rng rng(21);
  const int64_t n = int64_t(kSwigluG.size());
  std::vector<float> u(n), dh(n), dg(n), du(n);
  for (float& v : u) v = rng.uniform(-2.0f, 2.0f);
  for (float& v : dh) v = rng.normal();
  swiglu_backward(kSwigluG.data(), u.data(), dh.data(), dg.data(), du.data(), n);
  const double eps = 1e-6;
  for (int64_t i = 0; i < n; ++i) {
    const double g = kSwigluG[i], uu = u[i];
    double fd_g = dh[i] * (naive_swiglu(g + eps, uu) - naive_swiglu(g - eps, uu)) / (2 * eps);
    double fd_u = dh[i] * (naive_swiglu(g, uu + eps) - naive_swiglu(g, uu - eps)) / (2 * eps);
    ASSERT_TRUE(std::isfinite(dg[i]) && std::isfinite(du[i])) << "g = " << g;
    EXPECT_NEAR(dg[i], fd_g, 1e-5 * std::abs(fd_g) + 1e-6) << "dg at g = " << g;
    EXPECT_NEAR(du[i], fd_u, 1e-5 * std::abs(fd_u) + 1e-6) << "du at g = " << g;
  }
}

// ---------------------------------------------------------------------------------------------
// bf16 conversion

uint16_t to_bf16_bits(uint32_t f32_bits) { return f32_to_bf16(std::bit_cast<float>(f32_bits)).bits; }

TEST(Bf16, RoundsToNearestEvenOnHandPickedPatterns) {
  struct Case {
    uint32_t in;
    uint16_t out;
    const char* what;
  };
  const Case cases[] = {
      {0x3F800000u, 0x3F80, "1.0 is exact"},
      {0x3F807FFFu, 0x3F80, "just below half an ulp: down"},
      {0x3F808000u, 0x3F80, "exactly half, even below: down"},
      {0x3F808001u, 0x3F81, "just above half: up"},
      {0x3F818000u, 0x3F82, "exactly half, odd below: up to even"},
      {0xBF808000u, 0xBF80, "negative tie, even below: magnitude down"},
      {0xBF818000u, 0xBF82, "negative tie, odd below: magnitude up"},
      {0x3FFF8000u, 0x4000, "tie that carries into the exponent"},
      {0x7F7F7FFFu, 0x7F7F, "large value below the tie"},
      {0x7F7FFFFFu, 0x7F80, "FLT_MAX rounds to +inf (beyond the largest bf16)"},
      {0x00000000u, 0x0000, "+0"},
      {0x80000000u, 0x8000, "-0"},
      {0x00008000u, 0x0000, "subnormal tie, even below: down to 0"},
      {0x00018000u, 0x0002, "subnormal tie, odd below: up"},
      {0x7F800000u, 0x7F80, "+inf stays +inf"},
      {0xFF800000u, 0xFF80, "-inf stays -inf"},
  };
  for (const Case& c : cases) EXPECT_EQ(to_bf16_bits(c.in), c.out) << c.what << std::hex << " (0x" << c.in << ")";
}

TEST(Bf16, NaNStaysNaN) {
  // Payloads only in the low 16 bits would become inf under plain rounding or truncation.
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7F80FFFFu, 0x7FFFFFFFu, 0xFF800001u, 0xFFC00000u}) {
    bf16 b = f32_to_bf16(std::bit_cast<float>(nan));
    EXPECT_TRUE(std::isnan(bf16_to_f32(b))) << std::hex << "0x" << nan << " -> 0x" << b.bits;
    EXPECT_EQ(b.bits & 0x8000, (nan >> 16) & 0x8000) << "sign kept for 0x" << std::hex << nan;
  }
}

TEST(Bf16, InfinitiesConvertBothWays) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(kInf)), kInf);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-kInf)), -kInf);
}

// Every bf16 value converts to f32 and back unchanged (NaNs stay NaN), and random f32 values round
// as the independent double-arithmetic rounding above says; the array versions agree.
TEST(Bf16, RoundTripAndRandomValuesMatchIndependentRounding) {
  for (uint32_t bits = 0; bits <= 0xFFFFu; ++bits) {
    bf16 b{uint16_t(bits)};
    float f = bf16_to_f32(b);
    ASSERT_EQ(std::bit_cast<uint32_t>(f), bits << 16);
    if (std::isnan(f)) ASSERT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
    else ASSERT_EQ(f32_to_bf16(f).bits, bits) << std::hex << "0x" << bits;
  }
  Rng rng(30);
  std::vector<float> src(4096);
  for (float& v : src) v = std::ldexp(rng.uniform(-1.0f, 1.0f), int(rng.below(60)) - 30);
  std::vector<bf16> dst(src.size());
  std::vector<float> back(src.size());
  f32_to_bf16(src.data(), dst.data(), src.size());
  bf16_to_f32(dst.data(), back.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(back[i], round_to_bf16(src[i])) << "value " << src[i];
    ASSERT_EQ(dst[i].bits, f32_to_bf16(src[i]).bits);
  }
}

}  // namespace
}  // namespace moge::kernels
