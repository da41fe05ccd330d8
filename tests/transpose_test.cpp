// kernels::transpose against the plain double loop: shapes with full and partial 16 × 16 tiles,
// leading dimensions wider than the matrix, writing and accumulating (the same bits: one load and
// one store or add an element).
#include <gtest/gtest.h>

#include <vector>

#include "moge/core/rng.h"
#include "moge/kernels/transpose.h"

namespace moge::kernels {
namespace {

TEST(Transpose, MatchesThePlainLoop) {
  Rng rng(3);
  const int64_t shapes[][2] = {{1, 1}, {16, 16}, {128, 32}, {37, 50}, {64, 4096}, {5, 33}};
  for (auto [rows, cols] : shapes)
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(testing::Message() << rows << " x " << cols << (accumulate ? " accumulate" : ""));
      const int64_t ldi = cols + 3, ldo = rows + 5;
      std::vector<float> in(size_t(rows * ldi)), out(size_t(cols * ldo)), want;
      for (float& v : in) v = rng.uniform(-1.0f, 1.0f);
      for (float& v : out) v = rng.uniform(-1.0f, 1.0f);
      want = out;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          want[size_t(j * ldo + i)] = accumulate ? want[size_t(j * ldo + i)] + in[size_t(i * ldi + j)] : in[size_t(i * ldi + j)];
      transpose(in.data(), rows, cols, ldi, out.data(), ldo, accumulate);
      EXPECT_EQ(out, want);  // also: the columns between rows and ldo untouched
    }
}

}  // namespace
}  // namespace moge::kernels
