#include "moge/sim/plan.h"

#include <cctype>
#include <map>
#include <sstream>

#include "moge/core/error.h"

namespace moge::sim {
namespace {

// "dp2tp4" -> {dp: 2, tp: 4}; letters from `allowed` only, each at most once.
std::map<std::string, int> parse_degrees(const std::string& spec, const std::string& allowed_text,
                                         const std::string& where) {
  std::map<std::string, int> out;
  size_t i = 0;
  check(!spec.empty(), where + ": empty (expected e.g. " + allowed_text + ")");
  while (i < spec.size()) {
    const std::string kind = spec.substr(i, 2);
    check(kind == "dp" || kind == "tp" || kind == "ep", where + ": '" + spec + "' has an unknown degree at '" +
                                                            spec.substr(i) + "' (expected " + allowed_text + ")");
    check(allowed_text.find(kind) != std::string::npos,
          where + ": '" + kind + "' is not a degree of this part (expected " + allowed_text + ")");
    check(!out.count(kind), where + ": '" + kind + "' given twice");
    i += 2;
    size_t j = i;
    while (j < spec.size() && std::isdigit(static_cast<unsigned char>(spec[j]))) ++j;
    check(j > i && j - i <= 6, where + ": '" + kind + "' needs a positive number");
    const int n = std::stoi(spec.substr(i, j - i));
    check(n >= 1, where + ": '" + kind + "' must be at least 1");
    out[kind] = n;
    i = j;
  }
  return out;
}

int get(const std::map<std::string, int>& m, const char* k, int fallback) {
  auto it = m.find(k);
  return it == m.end() ? fallback : it->second;
}

std::string degrees(const char* a, int x, const char* b, int y) {
  return std::string(a) + std::to_string(x) + b + std::to_string(y);
}

}  // namespace

std::string ParallelPlan::to_string() const {
  return "attn=" + degrees("dp", attn_dp, "tp", attn_tp) + ",experts=" + degrees("ep", expert_ep, "tp", expert_tp) +
         ",shared=" + degrees("dp", shared_dp, "tp", shared_tp);
}

ParallelPlan ParallelPlan::parse(const std::string& text) {
  const std::string where = "plan '" + text + "'";
  std::map<std::string, std::map<std::string, int>> parts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    check(eq != std::string::npos, where + ": '" + item + "' is not part=degrees (e.g. attn=dp2tp4)");
    const std::string part = item.substr(0, eq);
    const char* allowed = part == "attn" ? "dp, tp" : part == "experts" ? "ep, tp" : part == "shared" ? "dp, tp" : nullptr;
    check(allowed != nullptr, where + ": unknown part '" + part + "' (expected attn, experts, shared)");
    check(!parts.count(part), where + ": part '" + part + "' given twice");
    parts[part] = parse_degrees(item.substr(eq + 1), allowed, where + ", part '" + part + "'");
  }
  // D: the product of any part given; every part given must agree on it.
  int d = 0;
  std::string first;
  for (const auto& [part, deg] : parts) {
    int product = 1;
    for (const auto& [k, n] : deg) product *= n;
    if (d == 0) {
      d = product;
      first = part;
    } else {
      check(product == d, where + ": part '" + part + "' spans " + std::to_string(product) + " devices but '" + first +
                              "' spans " + std::to_string(d) + "; every part must use the same devices");
    }
  }
  if (d == 0) d = 1;
  ParallelPlan p;
  auto part = [&](const char* name) -> const std::map<std::string, int>* {
    auto it = parts.find(name);
    return it == parts.end() ? nullptr : &it->second;
  };
  if (auto* a = part("attn")) {
    p.attn_dp = get(*a, "dp", 1);
    p.attn_tp = get(*a, "tp", 1);
  } else {
    p.attn_dp = d;
  }
  if (auto* e = part("experts")) {
    p.expert_ep = get(*e, "ep", 1);
    p.expert_tp = get(*e, "tp", 1);
  } else {
    p.expert_ep = d;
  }
  if (auto* s = part("shared")) {
    p.shared_dp = get(*s, "dp", 1);
    p.shared_tp = get(*s, "tp", 1);
  } else {
    p.shared_tp = d;
  }
  return p;
}

void ParallelPlan::validate(const model::ModelConfig& c, const HardwareProfile& profile) const {
  const std::string where = "plan '" + to_string() + "'";
  const int d = devices();
  check(d <= profile.total_devices(),
        where + " needs " + std::to_string(d) + " devices but profile '" + profile.name + "' (" + profile.source +
            ") has " + std::to_string(profile.total_devices()) + " (" + std::to_string(profile.nodes) + " node(s) × " +
            std::to_string(profile.devices_per_node) + ")");
  auto divides = [&](int degree, int64_t n, const std::string& what) {
    check(n % degree == 0, where + ": " + what + " (" + std::to_string(n) + ") is not divisible by " +
                               std::to_string(degree));
  };
  divides(attn_tp, c.num_attention_heads, "attention tp: num_attention_heads");
  // KV heads split when tp divides them, else each is replicated on tp/kv devices.
  check(c.num_key_value_heads % attn_tp == 0 || attn_tp % c.num_key_value_heads == 0,
        where + ": attention tp (" + std::to_string(attn_tp) + ") neither divides nor is a multiple of num_key_value_heads (" +
            std::to_string(c.num_key_value_heads) + ")");
  divides(expert_ep, c.num_experts, "experts ep: num_experts");
  divides(expert_tp, c.moe_intermediate_size, "experts tp: moe_intermediate_size");
  if (c.routing_mode == moe::RoutingMode::grouped)
    divides(expert_ep, c.num_expert_groups,
            "experts ep must hold whole MoGE groups: num_expert_groups");
  if (c.shared_expert_intermediate_size > 0)
    divides(shared_tp, c.shared_expert_intermediate_size, "shared tp: shared_expert_intermediate_size");
}

}  // namespace moge::sim
