#pragma once
// Configuration of a MoE layer and its router. validate() throws moge::Error naming the field.
#include <string>

namespace moge::moe {

// How a token's experts are chosen from the global softmax p (MOGE.md §1).
enum class RoutingMode {
  grouped,        // MoGE: top-(K/M) of p inside each of the M groups
  topk,           // top-K of p over all N experts (Mixtral/Qwen)
  group_limited,  // DeepSeek-V3: keep the topk_group best groups (sum of top-2 p), then top-K
};

RoutingMode parse_routing_mode(const std::string& name);  // throws Error naming the value
const char* routing_mode_name(RoutingMode mode);

struct RouterConfig {
  int num_experts = 64;  // N
  int num_groups = 8;    // M; group g holds experts [g*N/M, (g+1)*N/M)
  int top_k = 8;         // K experts per token in total
  RoutingMode mode = RoutingMode::grouped;
  bool renormalize = false;  // topk/group_limited: divide the chosen p by their sum
  int topk_group = 0;        // group_limited: groups kept per token

  int experts_per_group() const { return num_experts / num_groups; }
  int picks_per_group() const { return top_k / num_groups; }  // K' of MoGE
  void validate() const;
};

struct MoeConfig {
  int d_model = 2048;
  RouterConfig router;
  int expert_ff = 1024;  // moe_intermediate_size
  int shared_ff = 0;     // shared_expert_intermediate_size; 0 = no shared expert
  float aux_alpha = 0.0f;  // weight α of the auxiliary balance loss (0 = off)

  void validate() const;
};

}  // namespace moge::moe
