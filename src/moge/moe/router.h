#pragma once
// The router: logits = x · W_gateᵀ, p = softmax(logits) over all N experts (f32), then a
// mode-dependent choice of K experts and their weights (MOGE.md §1). Selection uses p;
// weights are p (optionally renormalised over the chosen) times router_scale.
#include <cstdint>
#include <vector>

#include "moge/moe/config.h"

namespace moge::moe {

// The routing of T tokens: K (expert, weight) pairs a token, experts in ascending id order.
struct Routing {
  int64_t tokens = 0;
  int top_k = 0;
  std::vector<int32_t> expert;  // [T, K]
  std::vector<float> weight;    // [T, K]
  std::vector<float> probs;     // [T, N] the softmax (kept for backward and the aux loss)
};

// Chooses K experts for one token from its probabilities p[N] (ties go to the lower index).
// Writes K ids in ascending order to `chosen`. `scratch` must hold N floats.
void select_experts(const RouterConfig& cfg, const float* p, int32_t* chosen, float* scratch);

// Full router forward: x [T, d], gate [N, d] (f32, never quantized), router_scale [N].
void router_forward(const RouterConfig& cfg, const float* x, int64_t tokens, int d_model, const float* gate,
                    const float* router_scale, Routing& out);

// Routing from given probabilities (used by the forward above and by simulations).
void route_probs(const RouterConfig& cfg, const float* router_scale, Routing& r);

// Backward through the weights: given d weight [T, K], accumulates d p [T, N] and d router_scale [N].
void router_weights_backward(const RouterConfig& cfg, const Routing& r, const float* router_scale,
                             const float* d_weight, float* d_probs, float* d_router_scale);

// Backward through softmax and gate: given d p [T, N] (overwritten with d logits), accumulates
// d gate [N, d] and d x [T, d].
void router_logits_backward(const RouterConfig& cfg, const Routing& r, const float* x, int d_model, const float* gate,
                            float* d_probs, float* d_gate, float* d_x);

}  // namespace moge::moe
