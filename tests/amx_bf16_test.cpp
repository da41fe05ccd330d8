// The AMX bf16 GEMM (kernels/amx_bf16.h): its tile layout by definition, its products against a
// float64 sum of the same bf16-rounded operands, a row's result independent of the other rows
// and of the thread count (bit for bit: what makes an expert's time linear also makes its rows
// independent), Weight::amx_tiles_view through kernels::linear, and MoeLayer::run_experts
// running such experts in pieces of rows. Needs a CPU with AMX-BF16;
// elsewhere each test says so and is skipped (nothing in the engine uses the kernel there).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/kernels/amx_bf16.h"
#include "moge/kernels/weight.h"
#include "moge/moe/dispatch.h"
#include "moge/moe/layer.h"
#include "moge/moe/mlp.h"
#include "test_util.h"

namespace moge::kernels {
namespace {

#define REQUIRE_AMX() \
  if (!amx_bf16_available()) GTEST_SKIP() << "this CPU has no AMX-BF16 (or Linux refused its tile state)"

std::vector<bf16> random_bf16(Rng& rng, size_t n, float scale) {
  std::vector<bf16> v(n);
  for (bf16& x : v) x = f32_to_bf16(scale * rng.normal());
  return v;
}

using test::random_vector;
using test::ThreadGuard;

TEST(AmxBf16, PacksTilesAsTheLayoutSays) {
  REQUIRE_AMX();
  const int64_t n = 64, k = 96, ldw = 100;
  std::vector<bf16> w(size_t(n * ldw));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < ldw; ++c) w[size_t(r * ldw + c)].bits = uint16_t(r * 131 + c);
  std::vector<bf16> tiles(size_t(n * k));
  amx_pack_weight(n, k, w.data(), ldw, tiles.data());
  for (int64_t nb = 0; nb < n / 16; ++nb)
    for (int64_t kb = 0; kb < k / 32; ++kb)
      for (int64_t i = 0; i < 16; ++i)
        for (int64_t j = 0; j < 16; ++j)
          for (int64_t p = 0; p < 2; ++p) {
            const bf16 got = tiles[size_t((nb * (k / 32) + kb) * 512 + i * 32 + j * 2 + p)];
            const bf16 want = w[size_t((nb * 16 + j) * ldw + kb * 32 + 2 * i + p)];
            ASSERT_EQ(got.bits, want.bits) << "tile " << nb << "," << kb << " row " << i << " col " << j;
          }
}

TEST(AmxBf16, MatchesAFloat64SumOfTheRoundedOperands) {
  REQUIRE_AMX();
  Rng rng(5);
  const int64_t n = 96, k = 160;
  const std::vector<bf16> w = random_bf16(rng, size_t(n * k), 0.05f);
  std::vector<bf16> tiles(w.size());
  amx_pack_weight(n, k, w.data(), k, tiles.data());
  for (int64_t m : {1, 5, 16, 17, 31, 32, 33, 100}) {
    const std::vector<float> x = random_vector(rng, m * k);
    std::vector<float> y(size_t(m * n), -1.0f);
    amx_linear_bf16(m, x.data(), n, k, tiles.data(), y.data());
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) {
        double sum = 0, abs_sum = 0;
        for (int64_t i = 0; i < k; ++i) {
          const double p = double(bf16_to_f32(f32_to_bf16(x[size_t(r * k + i)]))) * bf16_to_f32(w[size_t(c * k + i)]);
          sum += p, abs_sum += std::abs(p);
        }
        // f32 accumulation: error ~ k · eps · Σ|x·w|.
        ASSERT_NEAR(y[size_t(r * n + c)], sum, 1e-6 * double(k) * abs_sum + 1e-30) << "m " << m << " " << r << "," << c;
      }
  }
}

TEST(AmxBf16, ARowsResultDependsOnNoOtherRowNorOnTheThreads) {
  REQUIRE_AMX();
  ThreadGuard guard;
  Rng rng(6);
  const int64_t n = 128, k = 256, m = 53;
  const std::vector<bf16> w = random_bf16(rng, size_t(n * k), 0.05f);
  std::vector<bf16> tiles(w.size());
  amx_pack_weight(n, k, w.data(), k, tiles.data());
  const std::vector<float> x = random_vector(rng, m * k);
  omp_set_num_threads(1);
  std::vector<float> all(size_t(m * n));
  amx_linear_bf16(m, x.data(), n, k, tiles.data(), all.data());
  for (int64_t r = 0; r < m; ++r) {
    std::vector<float> one(static_cast<size_t>(n));
    amx_linear_bf16(1, x.data() + r * k, n, k, tiles.data(), one.data());
    for (int64_t c = 0; c < n; ++c) ASSERT_EQ(one[size_t(c)], all[size_t(r * n + c)]) << "row " << r;
  }
  omp_set_num_threads(2);
  std::vector<float> two(all.size());
  amx_linear_bf16(m, x.data(), n, k, tiles.data(), two.data());
  EXPECT_EQ(two, all);
}

TEST(AmxBf16, TilesViewRunsThroughLinear) {
  REQUIRE_AMX();
  Rng rng(7);
  const int64_t n = 64, k = 64, m = 40;
  const std::vector<bf16> w = random_bf16(rng, size_t(n * k), 0.05f);
  std::vector<bf16> tiles(w.size());
  amx_pack_weight(n, k, w.data(), k, tiles.data());
  const Weight view = Weight::amx_tiles_view(tiles.data(), n, k);
  EXPECT_TRUE(view.ref().amx_tiles);
  EXPECT_EQ(view.bytes(), size_t(n * k) * 2);
  const std::vector<float> x = random_vector(rng, m * k);
  for (int64_t rows : {int64_t(1), m}) {  // decode (which plain bf16 sends to the GEMV) and prefill
    std::vector<float> direct(size_t(rows * n)), through(direct.size());
    amx_linear_bf16(rows, x.data(), n, k, tiles.data(), direct.data());
    linear(rows, x.data(), view.ref(), through.data());
    EXPECT_EQ(through, direct) << "rows " << rows;
  }
  EXPECT_THROW(Weight::amx_tiles_view(tiles.data(), 48, 64), Error);
}

// MoeLayer::run_experts runs an expert in AMX tiles in pieces of rows (kAmxPieceRows, 384), each
// its whole MLP; the kernel's rows being independent, that gives the bits of one mlp_forward
// over all the expert's rows, which is what this checks (two experts, ~500 rows each).
TEST(AmxBf16, ExpertsRunInPiecesGiveTheWholeMlpsBits) {
  REQUIRE_AMX();
  Rng rng(8);
  const int d = 64, f = 32, n = 2;
  const int64_t tokens = 1000;
  moe::MoeConfig cfg;
  cfg.d_model = d, cfg.expert_ff = f, cfg.shared_ff = 0;
  cfg.router.num_experts = n, cfg.router.num_groups = 1, cfg.router.top_k = 1;
  moe::MoeInferenceWeights w;
  w.gate = Tensor({n, d});
  for (int64_t i = 0; i < w.gate.numel(); ++i) w.gate.f32()[i] = rng.normal();
  w.router_scale = Tensor({1, n});
  for (int64_t i = 0; i < n; ++i) w.router_scale.f32()[i] = 1.0f;
  std::vector<std::vector<bf16>> tiles;  // the packed experts, alive as long as the layer
  auto packed = [&](int64_t out, int64_t in) {
    const std::vector<bf16> plain = random_bf16(rng, size_t(out * in), 0.1f);
    tiles.emplace_back(plain.size());
    amx_pack_weight(out, in, plain.data(), in, tiles.back().data());
    return Weight::amx_tiles_view(tiles.back().data(), out, in);
  };
  tiles.reserve(3 * n);
  for (int e = 0; e < n; ++e) {
    w.experts_gate.push_back(packed(f, d));
    w.experts_up.push_back(packed(f, d));
    w.experts_down.push_back(packed(d, f));
  }
  const moe::MoeLayer layer = moe::MoeLayer::for_inference(cfg, std::move(w));
  const std::vector<float> x = random_vector(rng, tokens * d);
  moe::MoeCache cache;
  layer.route(x.data(), tokens, cache.routing);
  cache.dispatch = moe::make_dispatch(cache.routing, n);
  const moe::Dispatch& dp = cache.dispatch;
  ASSERT_GT(std::max(dp.expert_rows(0), dp.expert_rows(1)), 384) << "no expert has rows for two pieces";
  std::vector<float> xs(size_t(dp.rows() * d)), ye(xs.size()), whole(xs.size());
  moe::gather_rows(dp, x.data(), d, xs.data());
  layer.run_experts(xs.data(), ye.data(), cache, 0, n);
  const moe::MoeInferenceWeights& iw = layer.inference_weights();
  for (int e = 0; e < n; ++e) {
    const int64_t r0 = dp.offsets[size_t(e)], rows = dp.expert_rows(e);
    std::vector<float> g(size_t(rows * f)), u(g.size()), h(g.size());
    const moe::MlpWeights mw{iw.experts_gate[e].ref(), iw.experts_up[e].ref(), iw.experts_down[e].ref()};
    moe::mlp_forward(rows, d, f, xs.data() + r0 * d, mw, {g.data(), u.data(), h.data()}, whole.data() + r0 * d);
  }
  EXPECT_EQ(ye, whole);
}

}  // namespace
}  // namespace moge::kernels
