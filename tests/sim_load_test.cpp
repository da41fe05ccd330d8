// Expert load under uniform routing: MoGE's exact T·K/D, and top-k's expected maximum against an
// independent Monte Carlo written here (rejection sampling over a Mersenne twister, not the
// library's partial Fisher-Yates over its splitmix generator).
#include <algorithm>
#include <cstdio>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "moge/core/error.h"
#include "moge/sim/load.h"

namespace moge::sim {
namespace {

moe::RouterConfig router(moe::RoutingMode mode, int experts = 64, int groups = 8, int top_k = 8) {
  moe::RouterConfig r;
  r.num_experts = experts;
  r.num_groups = groups;
  r.top_k = top_k;
  r.mode = mode;
  return r;
}

// Mean over trials of max_d pairs, and the standard error of that mean. Each token's K distinct
// experts by rejection: uniform draws, a repeat drawn again.
std::pair<double, double> reference_max_load(int64_t tokens, int experts, int top_k, int devices, int trials) {
  std::mt19937_64 gen(12345);
  std::uniform_int_distribution<int> pick(0, experts - 1);
  std::vector<int> chosen;
  double sum = 0, sum2 = 0;
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<int64_t> count(devices, 0);
    for (int64_t t = 0; t < tokens; ++t) {
      chosen.clear();
      while (int(chosen.size()) < top_k) {
        const int e = pick(gen);
        if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
      }
      for (int e : chosen) ++count[e / (experts / devices)];
    }
    const double m = double(*std::max_element(count.begin(), count.end()));
    sum += m;
    sum2 += m * m;
  }
  const double mean = sum / trials, var = sum2 / trials - mean * mean;
  return {mean, std::sqrt(std::max(var, 0.0) / trials)};
}

TEST(SimLoad, MoGEGivesEveryDeviceExactlyTKOverD) {
  for (int devices : {1, 2, 4, 8}) {
    const UniformLoad load(router(moe::RoutingMode::grouped), devices);
    for (int64_t tokens : {1, 7, 16, 456, 100000}) {
      const ExpertLoad l = load.layer(0, tokens);
      const double exact = double(tokens) * 8 / devices;
      EXPECT_EQ(l.max_pairs, exact) << devices << " devices, " << tokens << " tokens";
      EXPECT_EQ(l.mean_pairs, exact);
    }
  }
}

TEST(SimLoad, ExpertsTouched) {
  // One token under MoGE on 4 devices (2 groups each) touches exactly 2 experts a device.
  const UniformLoad load(router(moe::RoutingMode::grouped), 4);
  EXPECT_NEAR(load.layer(0, 1).experts_touched, 2.0, 1e-12);
  // Many tokens touch every expert: 16 a device.
  EXPECT_NEAR(load.layer(0, 10000).experts_touched, 16.0, 1e-9);
}

TEST(SimLoad, ExpectedMaxOfNormals) {
  EXPECT_EQ(expected_max_of_normals(1), 0.0);
  EXPECT_NEAR(expected_max_of_normals(2), 1.0 / std::sqrt(M_PI), 1e-9);  // E[max(Z1, Z2)] = 1/sqrt(pi)
  EXPECT_NEAR(expected_max_of_normals(3), 1.5 / std::sqrt(M_PI), 1e-9);
  EXPECT_NEAR(expected_max_of_normals(8), 1.4236003, 1e-6);  // tabulated
}

TEST(SimLoad, TopkMaxLoadMatchesAnIndependentMonteCarlo) {
  struct Case {
    int64_t tokens;
    int devices;
    LoadMethod method;
  };
  for (const Case c : {Case{1, 8, LoadMethod::monte_carlo}, Case{16, 8, LoadMethod::monte_carlo},
                       Case{456, 4, LoadMethod::monte_carlo}, Case{8200, 8, LoadMethod::gaussian}}) {
    LoadMethod method;
    const double predicted = topk_expected_max_load(c.tokens, 64, 8, c.devices, 1, &method);
    EXPECT_EQ(method, c.method) << c.tokens;
    const int trials = c.tokens >= 8200 ? 600 : c.tokens >= 456 ? 800 : 4000;
    const auto [reference, stderr_] = reference_max_load(c.tokens, 64, 8, c.devices, trials);
    const double mean = double(c.tokens) * 8 / c.devices;
    // The excess over the mean load is what the model predicts; allow 4 standard errors of the
    // reference plus the predictor's own Monte Carlo noise or Gaussian error (3% of the excess).
    EXPECT_NEAR(predicted, reference, 4 * stderr_ + 0.03 * (reference - mean) + 1e-9)
        << c.tokens << " tokens on " << c.devices << " devices: mean " << mean;
    std::printf("top-8 of 64, %lld tokens, %d devices: predicted %.2f, reference %.2f ± %.2f, mean %.1f\n",
                (long long)c.tokens, c.devices, predicted, reference, stderr_, mean);
    EXPECT_GT(predicted, mean) << "top-k's busiest device carries more than the mean";
  }
}

TEST(SimLoad, TopkLoadModelUsesTheExpectedMax) {
  const UniformLoad load(router(moe::RoutingMode::topk), 8);
  const ExpertLoad l = load.layer(0, 16);
  EXPECT_EQ(l.mean_pairs, 16.0);
  EXPECT_NEAR(l.max_pairs, topk_expected_max_load(16, 64, 8, 8, 1), 1e-12);
  EXPECT_GT(l.max_pairs, 20.0);  // ≈ 24: top-k is far from balanced at 16 tokens
}

TEST(SimLoad, GroupedNeedsWholeGroupsPerDevice) {
  EXPECT_THROW(UniformLoad(router(moe::RoutingMode::grouped, 64, 4, 4), 8), Error);
  EXPECT_THROW(UniformLoad(router(moe::RoutingMode::topk), 3), Error);
}

}  // namespace
}  // namespace moge::sim
