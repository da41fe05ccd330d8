#pragma once
// Expert load: how many token-expert pairs the busiest expert-parallel device gets in one step,
// and how many distinct experts each device touches (whose weights it must read). The cost model
// asks a LoadModel per layer, so replaying recorded routing traces (moge generate --trace) is
// one more implementation; UniformLoad is the analytic one for uniform random routing.
#include <cstdint>
#include <map>
#include <mutex>

#include "moge/moe/config.h"

namespace moge::sim {

struct ExpertLoad {
  double max_pairs = 0;        // token-expert pairs on the busiest device (expected)
  double mean_pairs = 0;       // T·K / D
  double experts_touched = 0;  // distinct experts with at least one pair on the busiest device
};

class LoadModel {
 public:
  virtual ~LoadModel() = default;
  // The load of `layer` when a step routes `tokens` tokens over the model's experts.
  virtual ExpertLoad layer(int layer, int64_t tokens) const = 0;
};

// Uniform random routing on `devices` expert-parallel devices holding contiguous expert blocks:
// - grouped (MoGE; devices divide the groups): every device gets exactly T·K/D pairs.
// - topk and group_limited (approximated as topk): E[max_d pairs] by topk_expected_max_load().
// experts_touched = (N/D)·(1 − (1 − K/N)^T') with T' = T·max_pairs/mean_pairs: each expert is
// chosen by a token with probability K/N (also under MoGE, where it is K'/(N/M)), and the busiest
// device is taken to see its pairs as if from T' tokens (exact for MoGE, an approximation for top-k).
class UniformLoad : public LoadModel {
 public:
  UniformLoad(const moe::RouterConfig& router, int devices, uint64_t seed = 1);
  ExpertLoad layer(int layer, int64_t tokens) const override;

 private:
  moe::RouterConfig router_;
  int devices_;
  uint64_t seed_;
  mutable std::mutex mutex_;
  mutable std::map<int64_t, ExpertLoad> cache_;  // by tokens: every layer routes alike
};

enum class LoadMethod { monte_carlo, gaussian };

// E[max over D devices of the token-expert pairs] when each of T tokens picks K distinct experts
// of N uniformly, experts in D contiguous blocks of N/D. T·K ≤ 65536: Monte Carlo with a fixed
// seed (at least 150 trials, ~1e7 draws). Larger: the Gaussian limit of the multinomial-
// hypergeometric counts, T·K/D + sqrt(T·K·c/D)·E[max of D standard normals], c = (N−K)/(N−1),
// with E[max] by quadrature. `method`, when given, says which was used.
double topk_expected_max_load(int64_t tokens, int experts, int top_k, int devices, uint64_t seed,
                              LoadMethod* method = nullptr);

// E[max of n i.i.d. standard normals] (0 for n = 1), by Simpson's rule on [-12, 12].
double expected_max_of_normals(int n);

}  // namespace moge::sim
