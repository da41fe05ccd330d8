// Router properties (MOGE.md §1) against naive per-token selections, and the balance metrics and
// auxiliary loss (§1-2) against hand arithmetic, finite differences and the paper's sanity value.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "moge/core/rng.h"
#include "moge/moe/balance.h"
#include "moge/moe/route_sim.h"
#include "moge/moe/router.h"

namespace moge::moe {
namespace {

// ---------------------------------------------------------------------------------------------
// Naive references

// T rows of N probabilities: a double-precision softmax of N(0, 2²) logits.
std::vector<float> random_probs(int64_t tokens, int n, Rng& rng) {
  std::vector<float> p(tokens * n);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<double> z(n);
    double mx = -1e300, sum = 0;
    for (double& v : z) mx = std::max(mx, v = 2.0 * rng.normal());
    for (double& v : z) sum += (v = std::exp(v - mx));
    for (int i = 0; i < n; ++i) p[t * n + i] = float(z[i] / sum);
  }
  return p;
}

// Indices of v in [begin, end), best first: larger value first, ties to the lower index.
std::vector<int> ranked(const std::vector<double>& v, int begin, int end) {
  std::vector<int> idx(end - begin);
  std::iota(idx.begin(), idx.end(), begin);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  return idx;
}

// The K experts a token gets, ascending, by the rules of MOGE.md §1, written as plainly as possible.
std::vector<int> naive_select(const RouterConfig& cfg, const float* pf) {
  const int n = cfg.num_experts, m = cfg.num_groups, per_group = n / m;
  std::vector<double> p(pf, pf + n);
  std::vector<int> chosen;
  if (cfg.mode == RoutingMode::grouped) {
    for (int g = 0; g < m; ++g) {
      auto order = ranked(p, g * per_group, (g + 1) * per_group);
      chosen.insert(chosen.end(), order.begin(), order.begin() + cfg.top_k / m);
    }
  } else {
    std::vector<double> candidate = p;
    if (cfg.mode == RoutingMode::group_limited) {
      // Group score: the sum of its two largest p (its one p for single-expert groups).
      std::vector<double> score(m);
      for (int g = 0; g < m; ++g) {
        auto order = ranked(p, g * per_group, (g + 1) * per_group);
        score[g] = p[order[0]] + (per_group > 1 ? p[order[1]] : 0.0);
      }
      auto best_groups = ranked(score, 0, m);
      std::vector<bool> kept(m, false);
      for (int i = 0; i < cfg.topk_group; ++i) kept[best_groups[i]] = true;
      for (int e = 0; e < n; ++e)
        if (!kept[e / per_group]) candidate[e] = -1.0;  // below every probability
    }
    auto order = ranked(candidate, 0, n);
    chosen.assign(order.begin(), order.begin() + cfg.top_k);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

RouterConfig make_router(int n, int m, int k, RoutingMode mode, int topk_group = 0, bool renormalize = false) {
  RouterConfig cfg;
  cfg.num_experts = n;
  cfg.num_groups = m;
  cfg.top_k = k;
  cfg.mode = mode;
  cfg.topk_group = topk_group;
  cfg.renormalize = renormalize;
  cfg.validate();
  return cfg;
}

// Routes `tokens` rows of `probs` with route_probs and unit router_scale.
Routing route(const RouterConfig& cfg, const std::vector<float>& probs, int64_t tokens,
              const std::vector<float>* scale = nullptr) {
  std::vector<float> unit(cfg.num_experts, 1.0f);
  Routing r;
  r.tokens = tokens;
  r.probs = probs;
  route_probs(cfg, scale ? scale->data() : unit.data(), r);
  return r;
}

std::vector<int> experts_of(const Routing& r, int64_t t) {
  return std::vector<int>(r.expert.begin() + t * r.top_k, r.expert.begin() + (t + 1) * r.top_k);
}

struct Shape3 {
  int n, m, k;
};
const Shape3 kShapes[] = {{64, 8, 8}, {16, 4, 8}, {32, 4, 4}, {8, 8, 8}};
constexpr int64_t kTokens = 300;

// ---------------------------------------------------------------------------------------------
// Selection

TEST(Router, GroupedTakesTheTopOfEveryGroup) {
  Rng rng(1);
  for (auto [n, m, k] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N " << n << " M " << m << " K " << k);
    RouterConfig cfg = make_router(n, m, k, RoutingMode::grouped);
    std::vector<float> probs = random_probs(kTokens, n, rng);
    Routing r = route(cfg, probs, kTokens);
    ASSERT_EQ(r.top_k, k);
    ASSERT_EQ(int64_t(r.expert.size()), kTokens * k);
    const int per_group = n / m;
    for (int64_t t = 0; t < kTokens; ++t) {
      std::vector<int> got = experts_of(r, t);
      const float* p = probs.data() + t * n;
      ASSERT_TRUE(std::is_sorted(got.begin(), got.end())) << "token " << t;
      // Exactly K/M from every group, and no expert of a group beats a chosen one.
      std::vector<int> per(m, 0);
      for (int e : got) ++per[e / per_group];
      for (int g = 0; g < m; ++g) ASSERT_EQ(per[g], k / m) << "token " << t << " group " << g;
      std::set<int> chosen(got.begin(), got.end());
      for (int g = 0; g < m; ++g) {
        float worst_chosen = 2.0f, best_other = -1.0f;
        for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
          if (chosen.count(e)) worst_chosen = std::min(worst_chosen, p[e]);
          else best_other = std::max(best_other, p[e]);
        }
        ASSERT_GE(worst_chosen, best_other) << "token " << t << " group " << g;
      }
      ASSERT_EQ(got, naive_select(cfg, p)) << "token " << t;
    }
  }
}

TEST(Router, TopkTakesTheKLargest) {
  Rng rng(2);
  for (auto [n, m, k] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N " << n << " K " << k);
    RouterConfig cfg = make_router(n, m, k, RoutingMode::topk);
    std::vector<float> probs = random_probs(kTokens, n, rng);
    Routing r = route(cfg, probs, kTokens);
    for (int64_t t = 0; t < kTokens; ++t) {
      const float* p = probs.data() + t * n;
      std::vector<int> got = experts_of(r, t);
      ASSERT_EQ(got, naive_select(cfg, p)) << "token " << t;
      // Equivalently: the K-th largest p is no smaller than any unchosen p.
      std::vector<float> sorted(p, p + n);
      std::sort(sorted.rbegin(), sorted.rend());
      for (int e : got) ASSERT_GE(p[e], sorted[k - 1]);
    }
  }
}

TEST(Router, GroupLimitedWithAllGroupsIsTopk) {
  Rng rng(3);
  for (auto [n, m, k] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N " << n << " M " << m << " K " << k);
    std::vector<float> probs = random_probs(kTokens, n, rng);
    Routing limited = route(make_router(n, m, k, RoutingMode::group_limited, /*topk_group=*/m), probs, kTokens);
    Routing topk = route(make_router(n, m, k, RoutingMode::topk), probs, kTokens);
    EXPECT_EQ(limited.expert, topk.expert);
    EXPECT_EQ(limited.weight, topk.weight);
  }
}

TEST(Router, GroupLimitedKeepsTheBestGroupsByTopTwoSum) {
  struct Case {
    int n, m, k, topk_group;
  };
  // The last has single-expert groups (score = the one p).
  const Case cases[] = {{64, 8, 8, 4}, {64, 8, 8, 1}, {16, 4, 4, 2}, {32, 4, 8, 1}, {8, 8, 2, 3}};
  Rng rng(4);
  for (auto [n, m, k, topk_group] : cases) {
    SCOPED_TRACE(testing::Message() << "N " << n << " M " << m << " K " << k << " topk_group " << topk_group);
    RouterConfig cfg = make_router(n, m, k, RoutingMode::group_limited, topk_group);
    std::vector<float> probs = random_probs(kTokens, n, rng);
    Routing r = route(cfg, probs, kTokens);
    int64_t differs_from_topk = 0;
    const RouterConfig topk_cfg = make_router(n, m, k, RoutingMode::topk);
    for (int64_t t = 0; t < kTokens; ++t) {
      const float* p = probs.data() + t * n;
      std::vector<int> got = experts_of(r, t);
      std::set<int> groups;
      for (int e : got) groups.insert(e / (n / m));
      ASSERT_LE(int(groups.size()), topk_group) << "token " << t;
      ASSERT_EQ(got, naive_select(cfg, p)) << "token " << t;
      differs_from_topk += got != naive_select(topk_cfg, p);
    }
    // With groups of more than one expert the restriction must actually bite (else the test
    // proves little); with one-expert groups and topk_group >= K it is plain top-K.
    if (n / m > 1) EXPECT_GT(differs_from_topk, 0);
    else EXPECT_EQ(differs_from_topk, 0);
  }
}

// Equal probabilities: the lower index wins, in every mode. Values are dyadic, so sums are exact.
TEST(Router, TiesGoToTheLowestIndex) {
  std::vector<int32_t> chosen(8);
  std::vector<float> scratch(8);
  {
    const float p[8] = {0.125f, 0.1875f, 0.1875f, 0.1875f, 0.125f, 0.125f, 0.03125f, 0.03125f};
    select_experts(make_router(8, 1, 2, RoutingMode::topk), p, chosen.data(), scratch.data());
    EXPECT_EQ(chosen[0], 1);
    EXPECT_EQ(chosen[1], 2);
  }
  {
    // Group 0 all equal -> expert 0; group 1 ties between 5 and 6 -> 5.
    const float p[8] = {0.125f, 0.125f, 0.125f, 0.125f, 0.0625f, 0.1875f, 0.1875f, 0.0625f};
    select_experts(make_router(8, 2, 2, RoutingMode::grouped), p, chosen.data(), scratch.data());
    EXPECT_EQ(chosen[0], 0);
    EXPECT_EQ(chosen[1], 5);
  }
  {
    // Four groups of two, every group score 0.25: groups 0 and 1 are kept, then experts 0, 1.
    const float p[8] = {0.125f, 0.125f, 0.125f, 0.125f, 0.25f, 0.0f, 0.125f, 0.125f};
    select_experts(make_router(8, 4, 2, RoutingMode::group_limited, 2), p, chosen.data(), scratch.data());
    EXPECT_EQ(chosen[0], 0);
    EXPECT_EQ(chosen[1], 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Weights

TEST(Router, WeightsAreProbabilityTimesRouterScale) {
  Rng rng(5);
  const int n = 16, k = 4;
  std::vector<float> scale(n);
  for (float& s : scale) s = rng.uniform(0.25f, 2.0f);
  std::vector<float> probs = random_probs(kTokens, n, rng);
  for (RoutingMode mode : {RoutingMode::grouped, RoutingMode::topk, RoutingMode::group_limited}) {
    SCOPED_TRACE(routing_mode_name(mode));
    RouterConfig cfg = make_router(n, 4, k, mode, mode == RoutingMode::group_limited ? 2 : 0);
    Routing r = route(cfg, probs, kTokens, &scale);
    for (int64_t t = 0; t < kTokens; ++t)
      for (int i = 0; i < k; ++i) {
        int e = r.expert[t * k + i];
        ASSERT_FLOAT_EQ(r.weight[t * k + i], probs[t * n + e] * scale[e]) << "token " << t << " expert " << e;
      }
  }
}

TEST(Router, RenormalizedWeightsSumAsDocumented) {
  Rng rng(6);
  const int n = 16, k = 4;
  std::vector<float> scale(n), unit(n, 1.0f);
  for (float& s : scale) s = rng.uniform(0.25f, 2.0f);
  std::vector<float> probs = random_probs(kTokens, n, rng);
  for (RoutingMode mode : {RoutingMode::topk, RoutingMode::group_limited}) {
    SCOPED_TRACE(routing_mode_name(mode));
    RouterConfig cfg = make_router(n, 4, k, mode, mode == RoutingMode::group_limited ? 2 : 0, /*renormalize=*/true);
    Routing scaled = route(cfg, probs, kTokens, &scale), plain = route(cfg, probs, kTokens, &unit);
    for (int64_t t = 0; t < kTokens; ++t) {
      double chosen_sum = 0, want_sum = 0, got_sum = 0, plain_sum = 0;
      for (int i = 0; i < k; ++i) chosen_sum += probs[t * n + scaled.expert[t * k + i]];
      for (int i = 0; i < k; ++i) {
        int e = scaled.expert[t * k + i];
        double want = scale[e] * probs[t * n + e] / chosen_sum;
        ASSERT_NEAR(scaled.weight[t * k + i], want, 1e-6 * want) << "token " << t << " expert " << e;
        want_sum += want;
        got_sum += scaled.weight[t * k + i];
        plain_sum += plain.weight[t * k + i];
      }
      ASSERT_NEAR(got_sum, want_sum, 1e-6 * want_sum) << "token " << t;
      ASSERT_NEAR(plain_sum, 1.0, 1e-6) << "token " << t << " (router_scale = 1)";
    }
  }
}

// router_forward = naive x · gateᵀ, softmax over all N, then the selection above.
TEST(Router, ForwardIsGlobalSoftmaxOfGateLogits) {
  Rng rng(7);
  const int n = 16, d = 12;
  const int64_t tokens = 20;
  RouterConfig cfg = make_router(n, 4, 4, RoutingMode::grouped);
  std::vector<float> x(tokens * d), gate(n * d), scale(n, 1.0f);
  for (float& v : x) v = rng.normal();
  for (float& v : gate) v = rng.normal();
  Routing r;
  router_forward(cfg, x.data(), tokens, d, gate.data(), scale.data(), r);
  ASSERT_EQ(r.tokens, tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<double> logit(n);
    double mx = -1e300, sum = 0;
    for (int e = 0; e < n; ++e) {
      for (int j = 0; j < d; ++j) logit[e] += double(x[t * d + j]) * gate[e * d + j];
      mx = std::max(mx, logit[e]);
    }
    for (double& v : logit) sum += (v = std::exp(v - mx));
    for (int e = 0; e < n; ++e)
      ASSERT_NEAR(r.probs[t * n + e], logit[e] / sum, 1e-5 * logit[e] / sum + 1e-7) << "token " << t << " e " << e;
    ASSERT_EQ(experts_of(r, t), naive_select(cfg, r.probs.data() + t * n)) << "token " << t;
  }
}

// ---------------------------------------------------------------------------------------------
// Balance metrics

// N = 4 experts on 2 devices (experts 0, 1 on device 0; 2, 3 on device 1), T = 3 tokens, K = 2:
// tokens {0, 1}, {0, 2}, {0, 1}. Expert loads 3, 2, 1, 0; device loads 5, 1.
TEST(Balance, HandMadeRouting) {
  const int32_t expert[] = {0, 1, 0, 2, 0, 1};
  EXPECT_EQ(contiguous_placement(4, 2), (std::vector<int>{0, 0, 1, 1}));
  BalanceMetrics m = measure_balance(expert, 3, 2, 4, contiguous_placement(4, 2), 2);
  EXPECT_EQ(m.device_load, (std::vector<int64_t>{5, 1}));
  EXPECT_EQ(m.distinct_experts, (std::vector<int>{2, 1}));
  EXPECT_DOUBLE_EQ(m.imbalance_score, 4.0 / 3.0);  // (5 - 1) / 3
  EXPECT_DOUBLE_EQ(m.balancedness, 0.6);           // mean 3 / max 5
  EXPECT_DOUBLE_EQ(m.max_vio, 1.0);                // (3 - 1.5) / 1.5
  // Deviations from the mean 1.5: ±1.5, ±0.5 -> variance 5/4, CV = sqrt(1.25) / 1.5.
  EXPECT_NEAR(m.expert_cv, std::sqrt(1.25) / 1.5, 1e-12);
  EXPECT_DOUBLE_EQ(m.mean_distinct_per_device, 1.5);

  // The same routing with experts 1, 2 on device 0 and 0, 3 on device 1: loads 3 and 3.
  BalanceMetrics swapped = measure_balance(expert, 3, 2, 4, {1, 0, 0, 1}, 2);
  EXPECT_EQ(swapped.device_load, (std::vector<int64_t>{3, 3}));
  EXPECT_DOUBLE_EQ(swapped.imbalance_score, 0.0);
  EXPECT_DOUBLE_EQ(swapped.balancedness, 1.0);
  EXPECT_DOUBLE_EQ(swapped.max_vio, 1.0);  // expert loads do not depend on placement
  EXPECT_EQ(swapped.distinct_experts, (std::vector<int>{2, 1}));
}

TEST(Balance, ContiguousPlacementIsBlocks) {
  EXPECT_EQ(contiguous_placement(8, 4), (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
  EXPECT_EQ(contiguous_placement(8, 8), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(contiguous_placement(6, 1), (std::vector<int>(6, 0)));
}

// Groups on devices (D = M, D = M/2): every device gets exactly T·K/D pairs, so IS = 0.
TEST(Balance, GroupedRoutingHasZeroImbalanceWhenGroupsMapToDevices) {
  Rng rng(8);
  for (auto [n, m, k] : kShapes) {
    RouterConfig cfg = make_router(n, m, k, RoutingMode::grouped);
    std::vector<float> probs = random_probs(kTokens, n, rng);
    Routing r = route(cfg, probs, kTokens);
    for (int devices : {m, m / 2}) {
      SCOPED_TRACE(testing::Message() << "N " << n << " M " << m << " K " << k << " D " << devices);
      BalanceMetrics b = measure_balance(r.expert.data(), kTokens, k, n, contiguous_placement(n, devices), devices);
      EXPECT_EQ(b.imbalance_score, 0.0);
      EXPECT_EQ(b.balancedness, 1.0);
      for (int64_t load : b.device_load) EXPECT_EQ(load, kTokens * k / devices);
    }
  }
}

// The paper's sanity value (MOGE.md §2): top-8 of 64 on 8 devices, 16 tokens, uniform routing.
TEST(Balance, SimulatedTopkImbalanceMatchesThePaper) {
  RouteSimOptions o;
  o.router = make_router(64, 8, 8, RoutingMode::topk);
  o.devices = 8;
  o.tokens = 16;
  o.trials = 4000;
  o.seed = 1;
  RouteSimResult res = simulate_routing(o);
  ASSERT_EQ(int64_t(res.imbalance.size()), o.trials);
  EXPECT_NEAR(res.mean_is, 0.67, 0.02);
  EXPECT_GT(res.p_is_positive, 0.99);
  // The mean is the mean of the per-trial values.
  EXPECT_NEAR(std::accumulate(res.imbalance.begin(), res.imbalance.end(), 0.0) / o.trials, res.mean_is, 1e-12);

  o.router = make_router(64, 8, 8, RoutingMode::grouped);
  o.trials = 500;
  RouteSimResult grouped = simulate_routing(o);
  EXPECT_EQ(grouped.mean_is, 0.0);
  EXPECT_EQ(grouped.p_is_positive, 0.0);
  EXPECT_EQ(grouped.mean_balancedness, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Auxiliary loss

// N = 4, K = 2, T = 2: tokens chose {0, 1} and {0, 2}.
// f_i = N / (K T) · count_i = count_i = {2, 1, 1, 0}; P = mean of the rows = {0.375, 0.25, 0.1875, 0.1875}.
// Σ f_i P_i = 0.75 + 0.25 + 0.1875 = 1.1875; α = 0.1 -> 0.11875.
TEST(AuxLoss, HandValue) {
  Routing r;
  r.tokens = 2;
  r.top_k = 2;
  r.expert = {0, 1, 0, 2};
  r.weight = {0, 0, 0, 0};
  r.probs = {0.5f, 0.25f, 0.125f, 0.125f, 0.25f, 0.25f, 0.25f, 0.25f};
  EXPECT_NEAR(aux_loss(r, 4, 0.1f), 0.11875, 1e-7);
  EXPECT_NEAR(aux_loss(r, 4, 1.0f), 1.1875, 1e-6);
}

// With the routing (hence f) fixed, d aux / d p[t, i] by central differences of aux_loss itself
// (linear in p: only rounding error, ~1e-8 / eps). Also checks `scale` and that it accumulates.
TEST(AuxLoss, BackwardMatchesFiniteDifferences) {
  Rng rng(9);
  const int n = 8, k = 2;
  const int64_t tokens = 5;
  const float alpha = 0.1f, scale = 0.7f;
  Routing r = route(make_router(n, 1, k, RoutingMode::topk), random_probs(tokens, n, rng), tokens);

  std::vector<float> grad(tokens * n, 0.5f);  // pre-filled: backward accumulates
  aux_loss_backward(r, n, alpha, scale, grad.data());

  const double eps = 1e-2;
  double max_grad = 0;
  for (int64_t i = 0; i < tokens * n; ++i) {
    const float saved = r.probs[i];
    r.probs[i] = saved + float(eps);
    double plus = aux_loss(r, n, alpha);
    r.probs[i] = saved - float(eps);
    double minus = aux_loss(r, n, alpha);
    r.probs[i] = saved;
    double fd = scale * (plus - minus) / (2 * eps);
    EXPECT_NEAR(grad[i] - 0.5, fd, 1e-5) << "entry " << i;
    max_grad = std::max(max_grad, std::abs(fd));
  }
  EXPECT_GT(max_grad, 1e-3);  // not trivially zero
}

}  // namespace
}  // namespace moge::moe
