#include "moge/sim/load.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moge/core/error.h"
#include "moge/core/rng.h"

namespace moge::sim {
namespace {

constexpr int64_t kMonteCarloMaxPairs = 65536;  // T·K above this: the Gaussian limit
constexpr double kMonteCarloDraws = 1e7;         // pairs drawn in all trials together
constexpr int64_t kMonteCarloMinTrials = 150, kMonteCarloMaxTrials = 20000;

double monte_carlo_max_load(int64_t tokens, int experts, int top_k, int devices, uint64_t seed) {
  const int per_device = experts / devices;
  const int64_t pairs = tokens * top_k;
  const int64_t trials =
      std::clamp<int64_t>(int64_t(kMonteCarloDraws / double(pairs)), kMonteCarloMinTrials, kMonteCarloMaxTrials);
  Rng rng(seed);
  std::vector<int> ids(experts);
  std::vector<int64_t> count(devices);
  double sum_max = 0;
  for (int64_t trial = 0; trial < trials; ++trial) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t t = 0; t < tokens; ++t) {
      // K distinct experts: the first K of a partial Fisher-Yates shuffle.
      std::iota(ids.begin(), ids.end(), 0);
      for (int k = 0; k < top_k; ++k) {
        const int j = k + int(rng.uniform() * double(experts - k));
        std::swap(ids[k], ids[std::min(j, experts - 1)]);
        ++count[ids[k] / per_device];
      }
    }
    sum_max += double(*std::max_element(count.begin(), count.end()));
  }
  return sum_max / double(trials);
}

}  // namespace

double expected_max_of_normals(int n) {
  if (n <= 1) return 0;
  // E[max] = ∫ x · n φ(x) Φ(x)^(n-1) dx.
  const double lo = -12, hi = 12;
  const int steps = 24000;  // even
  const double h = (hi - lo) / steps;
  auto f = [n](double x) {
    const double phi = std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
    const double Phi = 0.5 * std::erfc(-x / std::sqrt(2.0));
    return x * n * phi * std::pow(Phi, n - 1);
  };
  double s = f(lo) + f(hi);
  for (int i = 1; i < steps; ++i) s += f(lo + i * h) * (i % 2 ? 4 : 2);
  return s * h / 3;
}

double topk_expected_max_load(int64_t tokens, int experts, int top_k, int devices, uint64_t seed, LoadMethod* method) {
  check(tokens >= 0 && top_k >= 1 && top_k <= experts && devices >= 1 && experts % devices == 0,
        "topk_expected_max_load: bad arguments (tokens " + std::to_string(tokens) + ", experts " +
            std::to_string(experts) + ", top_k " + std::to_string(top_k) + ", devices " + std::to_string(devices) + ")");
  const double pairs = double(tokens) * top_k;
  if (devices == 1 || tokens == 0) {
    if (method) *method = LoadMethod::gaussian;
    return pairs;
  }
  if (tokens * top_k <= kMonteCarloMaxPairs) {
    if (method) *method = LoadMethod::monte_carlo;
    return monte_carlo_max_load(tokens, experts, top_k, devices, seed);
  }
  if (method) *method = LoadMethod::gaussian;
  const double c = experts > 1 ? double(experts - top_k) / double(experts - 1) : 0.0;
  return pairs / devices + std::sqrt(pairs * c / devices) * expected_max_of_normals(devices);
}

UniformLoad::UniformLoad(const moe::RouterConfig& router, int devices, uint64_t seed)
    : router_(router), devices_(devices), seed_(seed) {
  check(devices >= 1 && router.num_experts % devices == 0,
        "expert parallel degree " + std::to_string(devices) + " does not divide the " +
            std::to_string(router.num_experts) + " experts");
  if (router.mode == moe::RoutingMode::grouped)
    check(router.num_groups % devices == 0, "expert parallel degree " + std::to_string(devices) +
                                                " does not divide the " + std::to_string(router.num_groups) +
                                                " MoGE groups (each device must hold whole groups)");
}

ExpertLoad UniformLoad::layer(int /*layer*/, int64_t tokens) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = cache_.find(tokens);
  if (it != cache_.end()) return it->second;
  const int n = router_.num_experts, k = router_.top_k, d = devices_;
  ExpertLoad load;
  load.mean_pairs = double(tokens) * k / d;
  load.max_pairs = router_.mode == moe::RoutingMode::grouped
                       ? load.mean_pairs  // each group gets exactly T·K/M pairs; a device M/D groups
                       : topk_expected_max_load(tokens, n, k, d, seed_);
  // The busiest device sees as many pairs as max/mean times the tokens would give on average.
  const double busiest_tokens = load.mean_pairs > 0 ? double(tokens) * load.max_pairs / load.mean_pairs : 0.0;
  load.experts_touched = double(n / d) * (1.0 - std::pow(1.0 - double(k) / n, busiest_tokens));
  cache_[tokens] = load;
  return load;
}

}  // namespace moge::sim
