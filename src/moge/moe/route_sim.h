#pragma once
// Monte Carlo of expert load under uniform random routing (the paper's Fig. 2): every trial
// draws T tokens with i.i.d. N(0, 1) router logits, routes them with the given mode, places
// experts on D devices in contiguous blocks, and measures the balance.
#include <cstdint>
#include <vector>

#include "moge/moe/config.h"

namespace moge::moe {

struct RouteSimOptions {
  RouterConfig router;
  int devices = 8;
  int64_t tokens = 16;
  int64_t trials = 10000;
  uint64_t seed = 1;
};

struct RouteSimResult {
  std::vector<double> imbalance;  // IS of every trial
  double mean_is = 0;
  double p_is_positive = 0;  // fraction of trials with IS > 0
  double mean_balancedness = 0;
  double mean_max_vio = 0;
  double mean_distinct_per_device = 0;
};

// Throws Error naming the option when devices do not divide the experts.
RouteSimResult simulate_routing(const RouteSimOptions& options);

}  // namespace moge::moe
