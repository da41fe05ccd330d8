#pragma once
// Load balance: the auxiliary loss of MOGE.md §1 with its gradient, and the metrics of §2 for
// any expert -> device map.
#include <cstdint>
#include <vector>

#include "moge/moe/router.h"

namespace moge::moe {

// Tokens routed to each expert: counts[i] = #{(t, k) : expert[t, k] == i}.
std::vector<int64_t> expert_counts(const int32_t* expert, int64_t entries, int num_experts);

// l_aux = α Σ_i f_i P_i,  f_i = N / (K T) · count_i,  P_i = (1/T) Σ_t p[t, i].
float aux_loss(const Routing& routing, int num_experts, float alpha);

// d p[t, i] += scale · α · f_i / T  (f is a constant: the gradient flows through P only).
void aux_loss_backward(const Routing& routing, int num_experts, float alpha, float scale, float* d_probs);

// Expert e on device e / (N / D): contiguous blocks, which for MoGE puts whole groups on devices
// whenever D divides M.
std::vector<int> contiguous_placement(int num_experts, int num_devices);

struct BalanceMetrics {
  std::vector<int64_t> device_load;    // T_d: token-expert pairs on device d
  std::vector<int> distinct_experts;   // experts touched on each device
  double imbalance_score = 0;          // (max_d T_d - min_d T_d) / T  (paper)
  double balancedness = 0;             // mean_d T_d / max_d T_d  (vLLM, SGLang)
  double max_vio = 0;                  // (max_i - mean_i) / mean_i over experts (DeepSeek)
  double expert_cv = 0;                // std / mean of the expert loads
  double mean_distinct_per_device = 0;
};

// `expert` holds `tokens` rows of `top_k` expert ids; device_of[e] in [0, num_devices).
BalanceMetrics measure_balance(const int32_t* expert, int64_t tokens, int top_k, int num_experts,
                               const std::vector<int>& device_of, int num_devices);

}  // namespace moge::moe
