// Attention (both paths: one row at a time below 16 new tokens, tiles of 64 query rows from 16 on,
// their products through tile_gemm up to 512 keys and oneDNN beyond) against a direct
// double-precision implementation of the formulas, at token counts on both sides of every tile
// edge, MHA, GQA and MQA, several head sizes, and prefill after a filled cache; plus bitwise
// determinism on 1, 2 and 3 threads; and tile_gemm itself against a double product.
//
// Tolerance: max |kernel − reference| / max |reference| ≤ 1e-5 per output, as the kernels' PyTorch
// comparison (kernels_backward_test.cpp). f32 products over ≤ 256 terms of unit-scale values and a
// 1-ulp exp stay near 1e-6; a wrong mask, scale or head mapping is O(1).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "moge/core/rng.h"
#include "moge/kernels/attention.h"
#include "moge/kernels/tile_gemm.h"
#include "test_util.h"

namespace moge::kernels {
namespace {

using Vec = std::vector<float>;
using Dbl = std::vector<double>;
constexpr double kTol = 1e-5;

Vec normal(int64_t n, Rng& rng) {
  Vec v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// Causal GQA attention in double: q [T, H, hd] at positions first .. first+T-1 against k, v
// [first+T, KV, hd]; outputs out [T, H, hd], lse [T, H], and given dout the gradients
// dq, dk, dv of Σ out · dout (dk, dv over all first+T keys).
struct Reference {
  Dbl out, lse, dq, dk, dv;

  Reference(const Vec& q, const Vec& k, const Vec& v, const Vec* dout, int64_t T, int64_t first,
            const AttentionShape& s) {
    const int H = s.heads, KV = s.kv_heads, hd = s.head_dim, group = H / KV;
    const int64_t keys = first + T;
    const double scale = 1.0 / std::sqrt(double(hd));
    out.assign(size_t(T * H * hd), 0.0), lse.assign(size_t(T * H), 0.0);
    dq.assign(out.size(), 0.0), dk.assign(size_t(keys * KV * hd), 0.0), dv.assign(dk.size(), 0.0);
    auto qi = [&](int64_t t, int h, int i) { return size_t((t * H + h) * hd + i); };
    auto ki = [&](int64_t j, int kvh, int i) { return size_t((j * KV + kvh) * hd + i); };
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const int kvh = h / group;
        const int64_t n = first + t + 1;
        Dbl p(static_cast<size_t>(n));
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          double sc = 0;
          for (int i = 0; i < hd; ++i) sc += double(q[qi(t, h, i)]) * k[ki(j, kvh, i)];
          p[size_t(j)] = sc * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        lse[size_t(t * H + h)] = mx + std::log(sum);
        for (double& x : p) x /= sum;
        for (int64_t j = 0; j < n; ++j)
          for (int i = 0; i < hd; ++i) out[qi(t, h, i)] += p[size_t(j)] * v[ki(j, kvh, i)];
        if (!dout) continue;
        // dp_j = dout · v_j; ds_j = p_j (dp_j − Σ p dp); dq = scale Σ ds_j k_j; dk_j += scale ds_j q;
        // dv_j += p_j dout.
        Dbl dp(static_cast<size_t>(n));
        double D = 0;
        for (int64_t j = 0; j < n; ++j) {
          for (int i = 0; i < hd; ++i) dp[size_t(j)] += double((*dout)[qi(t, h, i)]) * v[ki(j, kvh, i)];
          D += p[size_t(j)] * dp[size_t(j)];
        }
        for (int64_t j = 0; j < n; ++j) {
          const double ds = p[size_t(j)] * (dp[size_t(j)] - D) * scale;
          for (int i = 0; i < hd; ++i) {
            dq[qi(t, h, i)] += ds * k[ki(j, kvh, i)];
            dk[ki(j, kvh, i)] += ds * q[qi(t, h, i)];
            dv[ki(j, kvh, i)] += p[size_t(j)] * (*dout)[qi(t, h, i)];
          }
        }
      }
  }
};

// max |a − b| / max |b|, recorded as a property.
void expect_close(const std::string& name, const Vec& actual, const Dbl& expected) {
  ASSERT_EQ(actual.size(), expected.size()) << name;
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_TRUE(std::isfinite(actual[i])) << name << "[" << i << "]";
    diff = std::max(diff, std::abs(actual[i] - expected[i]));
    scale = std::max(scale, std::abs(expected[i]));
  }
  // A gradient that is 0 in exact arithmetic (dq, dk with one key: p = 1, dp − D = 0) leaves only
  // rounding noise, measured against the unit scale of the inputs instead.
  if (scale < 1e-6) scale = 1.0;
  std::ostringstream text;
  text << diff / scale;
  testing::Test::RecordProperty(name, text.str());
  EXPECT_LE(diff / scale, kTol) << name;
}

struct Case {
  int heads, kv_heads, hd;
  int64_t tokens;
};

std::string name_of(const Case& c) {
  std::ostringstream s;
  s << "H" << c.heads << "KV" << c.kv_heads << "hd" << c.hd << "T" << c.tokens;
  return s.str();
}

// Token counts below, at and around the 16-token switch and the 64-row tile edges; MHA (4/4),
// GQA (4/2, 6/2, 8/2) and MQA (3/1, 8/1); head sizes 8 .. 64.
const std::vector<Case> kCases = {
    {4, 2, 16, 1},  {4, 2, 16, 9},   {4, 2, 16, 15}, {4, 2, 16, 16}, {4, 2, 16, 17}, {4, 4, 8, 63},
    {6, 2, 32, 64}, {3, 1, 16, 65},  {8, 2, 32, 128}, {8, 1, 64, 130}, {4, 2, 32, 200}, {2, 1, 8, 37},
    {2, 1, 16, 530}};  // beyond 512 keys: the tiles' products through oneDNN

TEST(Attention, TrainForwardAndBackwardMatchDoubleReference) {
  Rng rng(101);
  for (const Case& c : kCases) {
    SCOPED_TRACE(name_of(c));
    const AttentionShape s{c.heads, c.kv_heads, c.hd};
    const int64_t T = c.tokens, qn = T * c.heads * c.hd, kn = T * c.kv_heads * c.hd;
    const Vec q = normal(qn, rng), k = normal(kn, rng), v = normal(kn, rng), dout = normal(qn, rng);
    const Reference ref(q, k, v, &dout, T, 0, s);
    const float nan = std::nanf("");
    Vec out(size_t(qn), nan), lse(size_t(T * c.heads), nan), dq(size_t(qn), nan), dk(size_t(kn), nan),
        dv(size_t(kn), nan);
    attention_forward_train(q.data(), k.data(), v.data(), out.data(), lse.data(), T, s);
    attention_backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                       dv.data(), T, s);
    const std::string n = name_of(c);
    expect_close(n + ".out", out, ref.out);
    expect_close(n + ".lse", lse, ref.lse);
    expect_close(n + ".dq", dq, ref.dq);
    expect_close(n + ".dk", dk, ref.dk);
    expect_close(n + ".dv", dv, ref.dv);
    // Inference on an empty cache is the training forward, bit for bit.
    Vec infer(static_cast<size_t>(qn));
    attention_forward(q.data(), k.data(), v.data(), infer.data(), T, 0, s);
    EXPECT_EQ(std::memcmp(infer.data(), out.data(), out.size() * sizeof(float)), 0);
  }
}

// New tokens after a filled cache (chunked prefill, decoding): each sees the cache and itself.
TEST(Attention, InferenceAfterACacheMatchesDoubleReference) {
  Rng rng(102);
  struct Prefill {
    Case c;
    int64_t first;
  };
  for (const Prefill& p : {Prefill{{4, 2, 16, 1}, 50}, Prefill{{4, 2, 16, 5}, 30}, Prefill{{4, 2, 16, 20}, 30},
                           Prefill{{8, 1, 32, 70}, 100}, Prefill{{6, 3, 8, 64}, 64}, Prefill{{4, 2, 16, 40}, 600}}) {
    const Case& c = p.c;
    SCOPED_TRACE(name_of(c) + " after " + std::to_string(p.first));
    const AttentionShape s{c.heads, c.kv_heads, c.hd};
    const int64_t keys = p.first + c.tokens;
    const Vec q = normal(c.tokens * c.heads * c.hd, rng), k = normal(keys * c.kv_heads * c.hd, rng),
              v = normal(keys * c.kv_heads * c.hd, rng);
    const Reference ref(q, k, v, nullptr, c.tokens, p.first, s);
    Vec out(q.size(), std::nanf(""));
    attention_forward(q.data(), k.data(), v.data(), out.data(), c.tokens, p.first, s);
    expect_close(name_of(c) + ".prefill.out", out, ref.out);
  }
}

TEST(Attention, TilesDeterministicAcrossThreadCounts) {
  Rng rng(103);
  for (const Case& c : {Case{4, 2, 32, 150}, Case{3, 1, 16, 64}, Case{8, 8, 16, 17}}) {
    SCOPED_TRACE(name_of(c));
    const AttentionShape s{c.heads, c.kv_heads, c.hd};
    const int64_t T = c.tokens, qn = T * c.heads * c.hd, kn = T * c.kv_heads * c.hd;
    const Vec q = normal(qn, rng), k = normal(kn, rng), v = normal(kn, rng), dout = normal(qn, rng);
    std::vector<Vec> first;
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<Vec> r = {Vec(size_t(qn)), Vec(size_t(T * c.heads)), Vec(size_t(qn)), Vec(size_t(kn)),
                            Vec(size_t(kn))};
      attention_forward_train(q.data(), k.data(), v.data(), r[0].data(), r[1].data(), T, s);
      attention_backward(q.data(), k.data(), v.data(), r[0].data(), r[1].data(), dout.data(), r[2].data(),
                         r[3].data(), r[4].data(), T, s);
      if (first.empty()) first = r;
      for (size_t i = 0; i < r.size(); ++i)
        EXPECT_EQ(std::memcmp(r[i].data(), first[i].data(), r[i].size() * sizeof(float)), 0)
            << "result " << i << " differs on " << threads << " threads";
    }
    omp_set_num_threads(saved);
  }
}

// tile_gemm: C (+)= A · B for row-major and transposed A, every column and row remainder of its
// 8 x 32 register blocks, against a double product; the AVX-512 and scalar versions bit for bit.
TEST(TileGemm, MatchesDoubleProductAndScalarBitwise) {
  Rng rng(104);
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape& sh : {Shape{1, 1, 1}, Shape{7, 5, 3}, Shape{8, 16, 32}, Shape{64, 32, 128}, Shape{64, 128, 32},
                          Shape{13, 47, 64}, Shape{129, 33, 17}, Shape{9, 70, 1}}) {
    for (bool trans : {false, true})
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(std::to_string(sh.m) + "x" + std::to_string(sh.n) + "x" + std::to_string(sh.k) +
                     (trans ? " A transposed" : "") + (accumulate ? " accumulate" : ""));
        const int64_t lda = (trans ? sh.m : sh.k) + 3, ldb = sh.n + 5, ldc = sh.n + 2;
        const Vec a = normal((trans ? sh.k : sh.m) * lda, rng), b = normal(sh.k * ldb, rng),
                  c0 = normal(sh.m * ldc, rng);
        const int64_t a_row = trans ? 1 : lda, a_col = trans ? lda : 1;
        Vec c = c0;
        tile_gemm(sh.m, sh.n, sh.k, a.data(), a_row, a_col, b.data(), ldb, c.data(), ldc, accumulate);
        double worst = 0;
        for (int64_t i = 0; i < sh.m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            if (j >= sh.n) {  // outside C's columns: untouched
              ASSERT_EQ(c[size_t(i * ldc + j)], c0[size_t(i * ldc + j)]);
              continue;
            }
            double want = accumulate ? c0[size_t(i * ldc + j)] : 0.0;
            for (int64_t p = 0; p < sh.k; ++p)
              want += double(a[size_t(i * a_row + p * a_col)]) * b[size_t(p * ldb + j)];
            worst = std::max(worst, std::abs(c[size_t(i * ldc + j)] - want) / (std::sqrt(double(sh.k)) + 1));
          }
        EXPECT_LT(worst, 1e-5);
        if (detail::tile_gemm_avx512_supported()) {
          Vec scalar = c0, simd = c0;
          detail::tile_gemm_scalar(sh.m, sh.n, sh.k, a.data(), a_row, a_col, b.data(), ldb, scalar.data(), ldc,
                                   accumulate);
          detail::tile_gemm_avx512(sh.m, sh.n, sh.k, a.data(), a_row, a_col, b.data(), ldb, simd.data(), ldc,
                                   accumulate);
          EXPECT_EQ(std::memcmp(scalar.data(), simd.data(), simd.size() * sizeof(float)), 0);
        }
      }
  }
}

}  // namespace
}  // namespace moge::kernels
