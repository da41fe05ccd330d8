// The decode GEMV paths: the bf16 GEMV (kernels/gemv_bf16.h) against its scalar reference and
// oneDNN, kernels::linear_group against linear() on each task (bit for bit), and
// moe::mlp_forward_group against mlp_forward on each MLP (the per-expert path), for every weight
// format and several thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "moge/core/rng.h"
#include "moge/core/tensor.h"
#include "moge/kernels/gemv_bf16.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/weight.h"
#include "moge/moe/mlp.h"
#include "test_util.h"

namespace moge::kernels {
namespace {

Tensor random_matrix(Rng& rng, int64_t out, int64_t in) {
  Tensor t({out, in});
  float* p = t.f32();
  for (int64_t i = 0; i < out * in; ++i) p[i] = 0.02f * rng.normal();
  return t;
}

using test::random_vector;
using test::ThreadGuard;

TEST(WeightGemvBf16, KernelMatchesScalarReferenceAndOneDnn) {
  Rng rng(11);
  for (int64_t in : {2048, 1000, 37}) {
    const int64_t out = 70;
    const Weight w = Weight::from_f32(random_matrix(rng, out, in), WeightFormat::bf16);
    const bf16* wp = static_cast<const bf16*>(w.ref().dense.data);
    for (int64_t rows = 1; rows <= kGemvMaxRows; ++rows) {
      const std::vector<float> x = random_vector(rng, rows * in);
      std::vector<bf16> xb(x.size());
      f32_to_bf16(x.data(), xb.data(), x.size());
      std::vector<float> ref(size_t(rows * out)), got(ref.size()), dnn(ref.size()), abs_sum(ref.size());
      gemv_bf16_scalar(rows, xb.data(), in, wp, in, in, 0, out, ref.data(), out);
      gemv_bf16(rows, xb.data(), in, wp, in, in, 0, out, got.data(), out);
      matmul(rows, out, in, MatRef::f32(x.data(), in), MatRef::bf16(wp, in, true), dnn.data(), out);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) {
          float s = 0;
          for (int64_t k = 0; k < in; ++k) s += std::abs(bf16_to_f32(xb[r * in + k]) * bf16_to_f32(wp[o * in + k]));
          abs_sum[r * out + o] = s;
        }
      for (size_t i = 0; i < ref.size(); ++i) {  // f32 summation-order error: ~ in · eps · Σ|x·w|
        const float tol = 1e-6f * float(in) * abs_sum[i] + 1e-30f;
        EXPECT_NEAR(got[i], ref[i], tol) << "in " << in << " rows " << rows << " i " << i;
        EXPECT_NEAR(dnn[i], ref[i], tol) << "in " << in << " rows " << rows << " i " << i;
      }
    }
  }
}

// Mixed formats, shared and separate activations, row counts the bf16 GEMV does and does not
// serve, tasks with zero rows, tiny and large matrices (whose split crosses task boundaries).
TEST(WeightLinearGroup, EqualsLinearOnEachTaskBitForBit) {
  ThreadGuard guard;
  Rng rng(12);
  struct Spec {
    int64_t out, in;
    WeightFormat format;
  };
  const std::vector<Spec> specs = {{1024, 2048, WeightFormat::q8}, {1024, 2048, WeightFormat::q8},
                                   {300, 2048, WeightFormat::q4},  {1024, 2048, WeightFormat::bf16},
                                   {17, 2048, WeightFormat::bf16}, {40, 2048, WeightFormat::f32},
                                   {2048, 1024, WeightFormat::q8}, {2048, 1024, WeightFormat::q4}};
  std::vector<Weight> weights;
  for (const Spec& s : specs) weights.push_back(Weight::from_f32(random_matrix(rng, s.out, s.in), s.format));
  for (int64_t rows : {1, 3, 6}) {
    const std::vector<float> x2048 = random_vector(rng, rows * 2048), x1024 = random_vector(rng, rows * 1024);
    const std::vector<float> other = random_vector(rng, rows * 2048);
    std::vector<std::vector<float>> want(weights.size()), got(weights.size());
    std::vector<LinearTask> tasks;
    for (size_t i = 0; i < weights.size(); ++i) {
      const WeightRef& w = weights[i].ref();
      const float* x = w.in == 1024 ? x1024.data() : i == 1 ? other.data() : x2048.data();
      const int64_t r = i == 4 ? 0 : rows;  // one task without rows
      want[i].assign(size_t(rows * w.out), -1.0f);
      got[i].assign(size_t(rows * w.out), -1.0f);
      if (r > 0) linear(r, x, w, want[i].data());
      tasks.push_back({&w, r, x, got[i].data()});
    }
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (auto& g : got) std::fill(g.begin(), g.end(), -1.0f);
      linear_group(tasks.data(), tasks.size());
      for (size_t i = 0; i < weights.size(); ++i)
        for (size_t k = 0; k < want[i].size(); ++k)
          ASSERT_EQ(got[i][k], want[i][k]) << "task " << i << " rows " << rows << " threads " << threads << " at " << k;
    }
  }
}

// The MoE decode path (the chosen experts and the shared expert as one group) against the
// per-expert path it replaced: mlp_forward on each MLP.
TEST(WeightLinearGroup, MlpForwardGroupEqualsPerExpertMlpForward) {
  ThreadGuard guard;
  Rng rng(13);
  const int d = 256, ff = 128, shared_ff = 512;
  for (WeightFormat format : {WeightFormat::q8, WeightFormat::q4, WeightFormat::bf16, WeightFormat::f32}) {
    std::vector<Weight> store;
    auto make = [&](int64_t out, int64_t in) {
      store.push_back(Weight::from_f32(random_matrix(rng, out, in), format));
      return store.back().ref();
    };
    store.reserve(15);
    std::vector<moe::MlpWeights> mlps;
    std::vector<int> widths;
    for (int e = 0; e < 4; ++e) {
      moe::MlpWeights m;
      m.gate = make(ff, d), m.up = make(ff, d), m.down = make(d, ff);
      mlps.push_back(m);
      widths.push_back(ff);
    }
    moe::MlpWeights shared;
    shared.gate = make(shared_ff, d), shared.up = make(shared_ff, d), shared.down = make(d, shared_ff);
    mlps.push_back(shared);
    widths.push_back(shared_ff);
    for (int64_t rows : {1, 2, 5}) {
      const std::vector<float> x = random_vector(rng, rows * d * int64_t(mlps.size()));
      std::vector<std::vector<float>> act(mlps.size()), want(mlps.size()), got(mlps.size());
      for (size_t i = 0; i < mlps.size(); ++i) {
        act[i].assign(size_t(3 * rows * widths[i]), 0.0f);
        want[i].assign(size_t(rows * d), 0.0f);
        float* a = act[i].data();
        moe::mlp_forward(rows, d, widths[i], x.data() + i * rows * d, mlps[i],
                         {a, a + rows * widths[i], a + 2 * rows * widths[i]}, want[i].data());
      }
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        std::vector<moe::MlpJob> jobs;
        for (size_t i = 0; i < mlps.size(); ++i) {
          got[i].assign(size_t(rows * d), -1.0f);
          float* a = act[i].data();
          jobs.push_back({&mlps[i], rows, widths[i], x.data() + i * rows * d,
                          {a, a + rows * widths[i], a + 2 * rows * widths[i]}, got[i].data()});
        }
        moe::mlp_forward_group(jobs.data(), jobs.size());
        for (size_t i = 0; i < mlps.size(); ++i)
          for (size_t k = 0; k < want[i].size(); ++k)
            ASSERT_EQ(got[i][k], want[i][k]) << weight_format_name(format) << " mlp " << i << " rows " << rows
                                             << " threads " << threads;
      }
    }
  }
}

}  // namespace
}  // namespace moge::kernels
