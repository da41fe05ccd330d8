// moe/dispatch against loops written from its definitions: each routing entry (t, i) of a random
// routing (distinct experts a token, some experts empty) reads or writes row row_of[t·K + i], which
// serves token t; padded dispatches keep every real row's data and zero padding rows; the row-order
// and per-expert forms of combine_rows_backward give the same bits as the whole-batch one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "moge/core/rng.h"
#include "moge/moe/dispatch.h"

namespace moge::moe {
namespace {

constexpr int kTokens = 97, kExperts = 12, kTopK = 3, kD = 37;

// K distinct experts a token from the first kExperts - 2 (the last two get no rows), ascending.
Routing random_routing(Rng& rng) {
  Routing r;
  r.tokens = kTokens;
  r.top_k = kTopK;
  for (int t = 0; t < kTokens; ++t) {
    std::vector<int32_t> all(kExperts - 2);
    std::iota(all.begin(), all.end(), 0);
    for (int i = 0; i < kTopK; ++i) std::swap(all[size_t(i)], all[size_t(i) + size_t(rng.next_u64() % (all.size() - i))]);
    std::sort(all.begin(), all.begin() + kTopK);
    for (int i = 0; i < kTopK; ++i) {
      r.expert.push_back(all[size_t(i)]);
      r.weight.push_back(rng.uniform(-1.0f, 1.0f));
    }
  }
  return r;
}

std::vector<float> random_vector(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

TEST(Dispatch, RowsFollowTheRoutingAndPaddingKeepsThem) {
  Rng rng(11);
  const Routing routing = random_routing(rng);
  const Dispatch plain = make_dispatch(routing, kExperts);
  for (int align : {1, 8, 32}) {
    SCOPED_TRACE(align);
    const Dispatch p = align == 1 ? plain : pad_dispatch(plain, align);
    ASSERT_EQ(p.offsets.size(), size_t(kExperts + 1));
    for (int e = 0; e < kExperts; ++e) {
      EXPECT_EQ(p.expert_rows(e) % align, 0);
      EXPECT_GE(p.expert_rows(e), plain.expert_rows(e));
      EXPECT_LT(p.expert_rows(e), plain.expert_rows(e) + align);
    }
    std::vector<int> served(size_t(p.rows()), 0);
    for (int t = 0; t < kTokens; ++t)
      for (int i = 0; i < kTopK; ++i) {
        const int32_t r = p.row_of[size_t(t * kTopK + i)];
        const int e = routing.expert[size_t(t * kTopK + i)];
        ASSERT_GE(r, p.offsets[size_t(e)]);
        ASSERT_LT(r, p.offsets[size_t(e)] + plain.expert_rows(e));  // real rows first, padding after
        EXPECT_EQ(p.token[size_t(r)], t);
        ++served[size_t(r)];
      }
    const std::vector<int32_t> entry = row_entries(p);
    for (int64_t r = 0; r < p.rows(); ++r) {
      EXPECT_EQ(served[size_t(r)], p.token[size_t(r)] >= 0 ? 1 : 0) << "row " << r;
      if (entry[size_t(r)] >= 0) EXPECT_EQ(p.row_of[size_t(entry[size_t(r)])], r);
      else EXPECT_EQ(p.token[size_t(r)], -1);
    }
  }
}

TEST(Dispatch, GatherScatterCombineAndBackwardMatchTheirDefinitions) {
  Rng rng(12);
  const Routing routing = random_routing(rng);
  const Dispatch p = pad_dispatch(make_dispatch(routing, kExperts), 8);
  const int64_t rows = p.rows();
  const std::vector<float> x = random_vector(size_t(kTokens * kD), rng);
  const std::vector<float> ye = random_vector(size_t(rows * kD), rng);
  const std::vector<float> dy = random_vector(size_t(kTokens * kD), rng);
  const float* w = routing.weight.data();

  std::vector<float> xs(size_t(rows * kD), 7.0f);
  gather_rows(p, x.data(), kD, xs.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < kD; ++j)
      EXPECT_EQ(xs[size_t(r * kD + j)], p.token[size_t(r)] < 0 ? 0.0f : x[size_t(p.token[size_t(r)] * kD + j)]);

  std::vector<float> y = x, want_y = x, sx = x, want_sx = x;
  combine_rows(p, ye.data(), w, kD, y.data());
  scatter_add_rows(p, ye.data(), kD, sx.data());
  std::vector<float> d_rows(size_t(rows * kD), 5.0f), d_weight(size_t(kTokens * kTopK), 5.0f);
  combine_rows_backward(p, ye.data(), w, dy.data(), kD, d_rows.data(), d_weight.data());
  for (int t = 0; t < kTokens; ++t)
    for (int i = 0; i < kTopK; ++i) {  // in entry order, one rounding a term, as documented
      const int64_t e = t * kTopK + i, r = p.row_of[size_t(e)];
      float dot = 0.0f;
      for (int j = 0; j < kD; ++j) {
        want_y[size_t(t * kD + j)] += w[e] * ye[size_t(r * kD + j)];
        want_sx[size_t(t * kD + j)] += ye[size_t(r * kD + j)];
        EXPECT_EQ(d_rows[size_t(r * kD + j)], w[e] * dy[size_t(t * kD + j)]);
        dot += dy[size_t(t * kD + j)] * ye[size_t(r * kD + j)];
      }
      EXPECT_NEAR(d_weight[size_t(e)], dot, 1e-5f) << "entry " << e;  // a vector sum's order
    }
  EXPECT_EQ(y, want_y);
  EXPECT_EQ(sx, want_sx);
  for (int64_t r = 0; r < rows; ++r) {  // padding rows untouched
    if (p.token[size_t(r)] < 0) {
      EXPECT_EQ(d_rows[size_t(r * kD)], 5.0f);
    }
  }

  // Per expert, in any order, the same bits; and a range's entries alone, the others 0.
  const std::vector<int32_t> entry = row_entries(p);
  std::vector<float> d_rows_part(d_rows.size(), 5.0f), d_weight_part(d_weight.size(), 5.0f);
  for (int e = kExperts - 1; e >= 0; --e)
    combine_rows_backward_part(p, entry.data(), ye.data(), w, dy.data(), kD, d_rows_part.data(), d_weight_part.data(),
                               {p.offsets[size_t(e)], p.offsets[size_t(e) + 1]});
  EXPECT_EQ(std::memcmp(d_rows_part.data(), d_rows.data(), d_rows.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(d_weight_part.data(), d_weight.data(), d_weight.size() * sizeof(float)), 0);

  const RowRange range{p.offsets[3], p.offsets[7]};
  std::vector<float> d_rows_range(size_t((range.end - range.begin) * kD)), d_weight_range(d_weight.size(), 5.0f);
  combine_rows_backward(p, ye.data() + range.begin * kD, w, dy.data(), kD, d_rows_range.data(), d_weight_range.data(),
                        range);
  for (int64_t e = 0; e < kTokens * kTopK; ++e) {
    const int64_t r = p.row_of[size_t(e)];
    EXPECT_EQ(d_weight_range[size_t(e)], range.contains(r) ? d_weight[size_t(e)] : 0.0f) << "entry " << e;
    if (range.contains(r)) {
      EXPECT_EQ(std::memcmp(d_rows_range.data() + (r - range.begin) * kD, d_rows.data() + r * kD, kD * sizeof(float)),
                0);
    }
  }
}

}  // namespace
}  // namespace moge::moe
