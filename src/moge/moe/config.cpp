#include "moge/moe/config.h"

#include "moge/core/error.h"

namespace moge::moe {

RoutingMode parse_routing_mode(const std::string& name) {
  if (name == "grouped") return RoutingMode::grouped;
  if (name == "topk") return RoutingMode::topk;
  if (name == "group_limited") return RoutingMode::group_limited;
  throw Error("routing mode '" + name + "' is not one of grouped, topk, group_limited");
}

const char* routing_mode_name(RoutingMode mode) {
  switch (mode) {
    case RoutingMode::grouped: return "grouped";
    case RoutingMode::topk: return "topk";
    case RoutingMode::group_limited: return "group_limited";
  }
  return "?";
}

void RouterConfig::validate() const {
  auto field = [](const char* name, int v) { return std::string(name) + " (" + std::to_string(v) + ")"; };
  check(num_experts > 0, field("num_experts", num_experts) + " must be positive");
  check(num_groups > 0, field("num_groups", num_groups) + " must be positive");
  check(top_k > 0, field("top_k", top_k) + " must be positive");
  check(top_k <= num_experts, field("top_k", top_k) + " exceeds " + field("num_experts", num_experts));
  check(num_experts % num_groups == 0,
        field("num_experts", num_experts) + " is not divisible by " + field("num_groups", num_groups));
  if (mode == RoutingMode::grouped) {
    check(top_k % num_groups == 0,
          field("top_k", top_k) + " is not a multiple of " + field("num_groups", num_groups) +
              ": grouped routing takes the same number of experts from every group");
    check(!renormalize, "renormalize must be false for grouped routing (Pangu uses p * router_scale)");
  }
  if (mode == RoutingMode::group_limited) {
    check(topk_group > 0 && topk_group <= num_groups,
          field("topk_group", topk_group) + " must be in [1, num_groups = " + std::to_string(num_groups) + "]");
    check(topk_group * experts_per_group() >= top_k,
          field("topk_group", topk_group) + " groups of " + std::to_string(experts_per_group()) +
              " experts hold fewer than " + field("top_k", top_k) + " experts");
  }
}

void MoeConfig::validate() const {
  check(d_model > 0, "d_model (" + std::to_string(d_model) + ") must be positive");
  check(expert_ff > 0, "expert_ff (" + std::to_string(expert_ff) + ") must be positive");
  check(shared_ff >= 0, "shared_ff (" + std::to_string(shared_ff) + ") must not be negative");
  check(aux_alpha >= 0.0f, "aux_alpha (" + std::to_string(aux_alpha) + ") must not be negative");
  router.validate();
}

}  // namespace moge::moe
