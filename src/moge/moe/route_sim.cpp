#include "moge/moe/route_sim.h"

#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/kernels/softmax.h"
#include "moge/moe/balance.h"
#include "moge/moe/router.h"

namespace moge::moe {

RouteSimResult simulate_routing(const RouteSimOptions& o) {
  o.router.validate();
  const int n = o.router.num_experts;
  check(o.devices > 0 && n % o.devices == 0,
        "devices (" + std::to_string(o.devices) + ") must divide num_experts (" + std::to_string(n) + ")");
  check(o.tokens > 0, "tokens must be positive");
  check(o.trials > 0, "trials must be positive");

  const auto placement = contiguous_placement(n, o.devices);
  const std::vector<float> unit_scale(n, 1.0f);
  RouteSimResult res;
  res.imbalance.reserve(o.trials);
  Rng rng(o.seed);
  Routing r;
  r.tokens = o.tokens;
  r.probs.resize(o.tokens * n);
  for (int64_t trial = 0; trial < o.trials; ++trial) {
    for (float& v : r.probs) v = rng.normal();
    kernels::softmax_forward(r.probs.data(), r.probs.data(), o.tokens, n);
    route_probs(o.router, unit_scale.data(), r);
    BalanceMetrics m = measure_balance(r.expert.data(), o.tokens, o.router.top_k, n, placement, o.devices);
    res.imbalance.push_back(m.imbalance_score);
    res.mean_is += m.imbalance_score;
    res.p_is_positive += m.imbalance_score > 0;
    res.mean_balancedness += m.balancedness;
    res.mean_max_vio += m.max_vio;
    res.mean_distinct_per_device += m.mean_distinct_per_device;
  }
  for (double* v : {&res.mean_is, &res.p_is_positive, &res.mean_balancedness, &res.mean_max_vio,
                    &res.mean_distinct_per_device})
    *v /= double(o.trials);
  return res;
}

}  // namespace moge::moe
