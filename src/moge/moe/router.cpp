#include "moge/moe/router.h"

#include <algorithm>
#include <limits>

#include "moge/kernels/matmul.h"
#include "moge/kernels/softmax.h"

namespace moge::moe {
namespace {

using kernels::MatRef;

// Writes the indices of the k largest of v[0..n) to out (any order); ties -> lower index.
void top_indices(const float* v, int n, int k, int32_t* out) {
  if (k == 1) {  // MoGE's one pick a group: the argmax, the first of equal maxima
    int best = 0;
    for (int i = 1; i < n; ++i)
      if (v[i] > v[best]) best = i;
    out[0] = best;
    return;
  }
  thread_local std::vector<int32_t> idx;
  idx.resize(n);
  for (int i = 0; i < n; ++i) idx[i] = i;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy_n(idx.begin(), k, out);
}

}  // namespace

void select_experts(const RouterConfig& cfg, const float* p, int32_t* chosen, float* scratch) {
  const int n = cfg.num_experts, per_group = cfg.experts_per_group();
  switch (cfg.mode) {
    case RoutingMode::grouped: {
      const int picks = cfg.picks_per_group();
      for (int g = 0; g < cfg.num_groups; ++g) {
        int32_t* out = chosen + g * picks;
        top_indices(p + g * per_group, per_group, picks, out);
        for (int i = 0; i < picks; ++i) out[i] += g * per_group;
      }
      break;
    }
    case RoutingMode::topk:
      top_indices(p, n, cfg.top_k, chosen);
      break;
    case RoutingMode::group_limited: {
      // Group score: sum of its two largest p (DeepSeek-V3), or its largest for 1-expert groups.
      float* score = scratch;
      for (int g = 0; g < cfg.num_groups; ++g) {
        const float* pg = p + g * per_group;
        float first = -1.0f, second = 0.0f;
        for (int i = 0; i < per_group; ++i) {
          if (pg[i] > first) second = first, first = pg[i];
          else if (pg[i] > second) second = pg[i];
        }
        score[g] = first + (per_group > 1 ? std::max(second, 0.0f) : 0.0f);
      }
      thread_local std::vector<int32_t> kept;
      kept.resize(cfg.topk_group);
      top_indices(score, cfg.num_groups, cfg.topk_group, kept.data());
      // Experts of dropped groups get -1 (p >= 0), so top-K only sees the kept groups.
      std::fill(scratch, scratch + n, -1.0f);
      for (int i = 0; i < cfg.topk_group; ++i)
        std::copy_n(p + kept[i] * per_group, per_group, scratch + kept[i] * per_group);
      top_indices(scratch, n, cfg.top_k, chosen);
      break;
    }
  }
  std::sort(chosen, chosen + cfg.top_k);
}

void route_probs(const RouterConfig& cfg, const float* router_scale, Routing& r) {
  const int n = cfg.num_experts, k = cfg.top_k;
  r.top_k = k;
  r.expert.resize(r.tokens * k);
  r.weight.resize(r.tokens * k);
#pragma omp parallel
  {
    std::vector<float> scratch(n);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < r.tokens; ++t) {
      const float* p = r.probs.data() + t * n;
      int32_t* chosen = r.expert.data() + t * k;
      float* w = r.weight.data() + t * k;
      select_experts(cfg, p, chosen, scratch.data());
      float norm = 1.0f;
      if (cfg.renormalize) {
        float sum = 0.0f;
        for (int i = 0; i < k; ++i) sum += p[chosen[i]];
        norm = 1.0f / sum;
      }
      for (int i = 0; i < k; ++i) w[i] = p[chosen[i]] * norm * router_scale[chosen[i]];
    }
  }
}

void router_forward(const RouterConfig& cfg, const float* x, int64_t tokens, int d_model, const float* gate,
                    const float* router_scale, Routing& out) {
  const int n = cfg.num_experts;
  out.tokens = tokens;
  out.probs.resize(tokens * n);
  kernels::matmul(tokens, n, d_model, MatRef::f32(x, d_model), MatRef::f32(gate, d_model, true), out.probs.data(), n);
  kernels::softmax_forward(out.probs.data(), out.probs.data(), tokens, n);
  route_probs(cfg, router_scale, out);
}

void router_weights_backward(const RouterConfig& cfg, const Routing& r, const float* router_scale,
                             const float* d_weight, float* d_probs, float* d_router_scale) {
  const int n = cfg.num_experts, k = cfg.top_k;
  for (int64_t t = 0; t < r.tokens; ++t) {
    const float* p = r.probs.data() + t * n;
    const int32_t* chosen = r.expert.data() + t * k;
    const float* dw = d_weight + t * k;
    float* dp = d_probs + t * n;
    // w_e = s_e * p_e / Z with Z = sum of chosen p (Z = 1 without renormalisation).
    float z = 1.0f, cross = 0.0f;  // cross = sum_e dw_e s_e p_e
    if (cfg.renormalize) {
      z = 0.0f;
      for (int i = 0; i < k; ++i) z += p[chosen[i]];
      for (int i = 0; i < k; ++i) cross += dw[i] * router_scale[chosen[i]] * p[chosen[i]];
    }
    for (int i = 0; i < k; ++i) {
      int e = chosen[i];
      dp[e] += dw[i] * router_scale[e] / z - (cfg.renormalize ? cross / (z * z) : 0.0f);
      d_router_scale[e] += dw[i] * p[e] / z;
    }
  }
}

void router_logits_backward(const RouterConfig& cfg, const Routing& r, const float* x, int d_model, const float* gate,
                            float* d_probs, float* d_gate, float* d_x) {
  const int n = cfg.num_experts;
  const int64_t t = r.tokens;
  kernels::softmax_backward(r.probs.data(), d_probs, d_probs, t, n);
  kernels::matmul(n, d_model, t, MatRef::f32(d_probs, n, true), MatRef::f32(x, d_model), d_gate, d_model, true);
  kernels::matmul(t, d_model, n, MatRef::f32(d_probs, n), MatRef::f32(gate, d_model), d_x, d_model, true);
}

}  // namespace moge::moe
