#include "moge/moe/balance.h"

#include <algorithm>
#include <cmath>

namespace moge::moe {

std::vector<int64_t> expert_counts(const int32_t* expert, int64_t entries, int num_experts) {
  std::vector<int64_t> counts(num_experts, 0);
  for (int64_t i = 0; i < entries; ++i) ++counts[expert[i]];
  return counts;
}

namespace {
// f_i / T for every expert: the derivative of Σ f_i P_i with respect to p[t, i].
std::vector<double> aux_coefficients(const Routing& r, int n) {
  auto counts = expert_counts(r.expert.data(), r.tokens * r.top_k, n);
  std::vector<double> c(n);
  const double t = double(r.tokens);
  for (int i = 0; i < n; ++i) c[i] = double(n) / (double(r.top_k) * t) * double(counts[i]) / t;
  return c;
}
}  // namespace

float aux_loss(const Routing& r, int n, float alpha) {
  if (r.tokens == 0) return 0.0f;
  auto c = aux_coefficients(r, n);
  double loss = 0;
  for (int64_t t = 0; t < r.tokens; ++t)
    for (int i = 0; i < n; ++i) loss += c[i] * r.probs[t * n + i];
  return float(alpha * loss);
}

void aux_loss_backward(const Routing& r, int n, float alpha, float scale, float* d_probs) {
  if (r.tokens == 0) return;
  auto c = aux_coefficients(r, n);
  std::vector<float> g(n);
  for (int i = 0; i < n; ++i) g[i] = float(scale * alpha * c[i]);
  for (int64_t t = 0; t < r.tokens; ++t)
    for (int i = 0; i < n; ++i) d_probs[t * n + i] += g[i];
}

std::vector<int> contiguous_placement(int num_experts, int num_devices) {
  std::vector<int> device_of(num_experts);
  for (int e = 0; e < num_experts; ++e) device_of[e] = int(int64_t(e) * num_devices / num_experts);
  return device_of;
}

BalanceMetrics measure_balance(const int32_t* expert, int64_t tokens, int top_k, int num_experts,
                               const std::vector<int>& device_of, int num_devices) {
  BalanceMetrics m;
  auto counts = expert_counts(expert, tokens * top_k, num_experts);
  m.device_load.assign(num_devices, 0);
  m.distinct_experts.assign(num_devices, 0);
  for (int e = 0; e < num_experts; ++e) {
    m.device_load[device_of[e]] += counts[e];
    m.distinct_experts[device_of[e]] += counts[e] > 0;
  }
  if (tokens == 0) return m;
  auto [lo, hi] = std::minmax_element(m.device_load.begin(), m.device_load.end());
  m.imbalance_score = double(*hi - *lo) / double(tokens);
  const double mean_device = double(tokens * top_k) / num_devices;
  m.balancedness = *hi ? mean_device / double(*hi) : 1.0;
  const double mean_expert = double(tokens * top_k) / num_experts;
  const double max_expert = double(*std::max_element(counts.begin(), counts.end()));
  m.max_vio = (max_expert - mean_expert) / mean_expert;
  double var = 0;
  for (int64_t c : counts) var += (c - mean_expert) * (c - mean_expert);
  m.expert_cv = std::sqrt(var / num_experts) / mean_expert;
  double distinct = 0;
  for (int v : m.distinct_experts) distinct += v;
  m.mean_distinct_per_device = distinct / num_devices;
  return m;
}

}  // namespace moge::moe
