// RoPE's cached sin/cos tables: the same bits as the formula computed afresh (as rope.cpp did
// before the cache), whichever order positions are asked for in (the tables grow), for several
// (head_dim, theta) side by side, and from threads calling at once.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "moge/core/rng.h"
#include "moge/kernels/rope.h"

namespace moge::kernels {
namespace {

// rope.h's formula, with the angles computed per call in double.
void rope_direct(float* x, int64_t tokens, int heads, int hd, int64_t first, double theta, float direction) {
  const int half = hd / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    const double pos = double(first + t);
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * hd;
      for (int i = 0; i < half; ++i) {
        const double angle = pos * std::pow(theta, -2.0 * i / hd);
        const float c = float(std::cos(angle)), s = direction * float(std::sin(angle));
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

std::vector<float> random_rows(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  int heads, hd;
  double theta;
  int64_t first, tokens;
};

TEST(RopeTables, SameBitsAsTheFormulaWhileTheTablesGrow) {
  // Positions asked for out of order: short, long, decode-style single tokens, past the end.
  const std::vector<Case> cases = {{2, 8, 10000.0, 0, 5},      {3, 16, 1.6e7, 0, 40},  {2, 8, 10000.0, 0, 300},
                                   {2, 8, 10000.0, 301, 1},    {2, 8, 10000.0, 302, 1}, {3, 16, 1.6e7, 1000, 17},
                                   {1, 64, 1e6, 5, 3},          {2, 8, 10000.0, 100000, 2}, {2, 8, 10000.0, 7, 9}};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const std::vector<float> x = random_rows(c.tokens * c.heads * c.hd, seed++);
    for (float direction : {1.0f, -1.0f}) {
      std::vector<float> got = x, want = x;
      if (direction > 0) rope_apply(got.data(), c.tokens, c.heads, c.hd, c.first, c.theta);
      else rope_backward(got.data(), c.tokens, c.heads, c.hd, c.first, c.theta);
      rope_direct(want.data(), c.tokens, c.heads, c.hd, c.first, c.theta, direction);
      EXPECT_TRUE(same_bits(got, want)) << "hd " << c.hd << " theta " << c.theta << " first " << c.first
                                        << " tokens " << c.tokens << " direction " << direction;
    }
  }
}

// Threads that grow and read the tables at the same time all get the formula's bits.
TEST(RopeTables, ConcurrentCallersAgree) {
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int k = 0; k < 8; ++k) {
    threads.emplace_back([k, &ok] {
      const int hd = k % 2 ? 32 : 24;
      const double theta = 5000.0 + 1000.0 * (k % 3);
      bool all = true;
      for (int64_t first = k; first < 2000; first += 173 + 11 * k) {
        std::vector<float> got = random_rows(4 * 2 * hd, uint64_t(first)), want = got;
        rope_apply(got.data(), 4, 2, hd, first, theta);
        rope_direct(want.data(), 4, 2, hd, first, theta, 1.0f);
        all = all && same_bits(got, want);
      }
      ok[size_t(k)] = all;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int k = 0; k < 8; ++k) EXPECT_TRUE(ok[size_t(k)]) << "thread " << k;
}

}  // namespace
}  // namespace moge::kernels
