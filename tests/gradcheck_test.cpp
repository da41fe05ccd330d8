// Finite-difference check of every gradient of MoeLayer::backward, element by element, on tiny
// layers in every routing mode, with and without the shared expert.
//
// Loss: L = Σ y·dy + aux_grad · aux with a fixed random dy (what backward documents). The layer
// computes in f32; L is summed in double from its f32 outputs and differentiated by central
// differences with eps = 1e-2 (noise ≈ 1e-6 / (2 eps) ≈ 5e-5, truncation ≈ eps² / 6 · L''' ≈ 2e-5).
// Tolerance per tensor: |fd − analytic| ≤ 5e-4 · max|analytic| + 5e-5 (+ 2e-6 instead when only
// the aux loss, ~0.1, drives the gradient and its noise is ~50x smaller). Observed worst errors
// are ~8x below these bounds (worst: 1.1e-4 on dx with max|dx| 2.3); a wrong term in any gradient
// is typically O(max|analytic|). Routing margins: no perturbation up to eps = 0.05 changes the
// routing with these seeds.
//
// Routing is piecewise constant in x and the gate: a perturbation that changed the chosen experts
// would make the difference quotient meaningless. The seeds below are chosen so that no
// perturbation does, and every perturbed evaluation asserts that the routing is the unperturbed
// one: a failure there means the test's inputs need another seed, not that backward is wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "moge/core/rng.h"
#include "moge/moe/layer.h"

namespace moge::moe {
namespace {

constexpr int kDModel = 6, kExpertFF = 4, kSharedFF = 5;
constexpr int64_t kTokens = 3;
constexpr float kAuxAlpha = 0.1f, kAuxGrad = 0.7f;
constexpr double kEps = 1e-2;

struct GradCase {
  const char* name;
  RoutingMode mode;
  int n, m, k, topk_group;
  bool renormalize;
  bool shared;
  uint64_t seed;  // chosen for safe routing margins (see the top of the file)
};

MoeConfig make_config(const GradCase& c) {
  MoeConfig cfg;
  cfg.d_model = kDModel;
  cfg.expert_ff = kExpertFF;
  cfg.shared_ff = c.shared ? kSharedFF : 0;
  cfg.aux_alpha = kAuxAlpha;
  cfg.router.num_experts = c.n;
  cfg.router.num_groups = c.m;
  cfg.router.top_k = c.k;
  cfg.router.mode = c.mode;
  cfg.router.topk_group = c.topk_group;
  cfg.router.renormalize = c.renormalize;
  return cfg;
}

// Random weights of unit-scale activations: gate N(0, 1) so logits (std ≈ √d ≈ 2.4) are spread
// and routing margins wide; router_scale U(0.5, 1.5) so its gradient is not that of a constant;
// MLP matrices N(0, 1/fan_in).
MoeLayer make_layer(const MoeConfig& cfg, Rng& rng) {
  MoeWeights w = MoeWeights::zeros(cfg);
  auto fill = [&](Tensor& t, double sd) {
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(sd) * rng.normal();
  };
  fill(w.gate, 1.0);
  for (int64_t i = 0; i < w.router_scale.numel(); ++i) w.router_scale.f32()[i] = rng.uniform(0.5f, 1.5f);
  fill(w.experts_gate, 1.0 / std::sqrt(double(cfg.d_model)));
  fill(w.experts_up, 1.0 / std::sqrt(double(cfg.d_model)));
  fill(w.experts_down, 1.0 / std::sqrt(double(cfg.expert_ff)));
  if (cfg.shared_ff > 0) {
    fill(w.shared_gate, 1.0 / std::sqrt(double(cfg.d_model)));
    fill(w.shared_up, 1.0 / std::sqrt(double(cfg.d_model)));
    fill(w.shared_down, 1.0 / std::sqrt(double(cfg.shared_ff)));
  }
  return MoeLayer(cfg, std::move(w));
}

// One forward pass: the loss in double and the routing it used.
struct Evaluation {
  double loss;
  std::vector<int32_t> experts;
};

Evaluation evaluate(const MoeLayer& layer, const std::vector<float>& x, const std::vector<float>& dy, float aux_grad) {
  std::vector<float> y(x.size());
  MoeCache cache;
  float aux = layer.forward(x.data(), kTokens, y.data(), cache);
  double loss = double(aux_grad) * aux;
  for (size_t i = 0; i < y.size(); ++i) loss += double(y[i]) * dy[i];
  return {loss, cache.routing.expert};
}

// The gradient of one tensor: its analytic values and where its elements live for perturbing.
struct Checked {
  std::string name;
  float* values;                 // the parameter (or x) itself
  const float* analytic;         // backward's gradient
  int64_t numel;
};

struct Tolerance {
  double rtol, atol;
};

// Worst error seen over one tensor, relative to that tensor's largest analytic entry.
struct Worst {
  double abs_error = 0, max_analytic = 0;
};

// Central differences of every element of `t`; asserts the routing never changes.
Worst check_tensor(const MoeLayer& layer, std::vector<float>& x, const std::vector<float>& dy, float aux_grad,
                   const std::vector<int32_t>& routing, const Checked& t, Tolerance tol) {
  Worst worst;
  for (int64_t i = 0; i < t.numel; ++i) worst.max_analytic = std::max(worst.max_analytic, std::abs(double(t.analytic[i])));
  for (int64_t i = 0; i < t.numel; ++i) {
    const float saved = t.values[i];
    t.values[i] = saved + float(kEps);
    Evaluation plus = evaluate(layer, x, dy, aux_grad);
    t.values[i] = saved - float(kEps);
    Evaluation minus = evaluate(layer, x, dy, aux_grad);
    t.values[i] = saved;
    // Test design, not backward: the inputs must keep every token's experts under perturbation.
    EXPECT_EQ(plus.experts, routing) << t.name << "[" << i << "] + eps changed the routing: pick another seed";
    EXPECT_EQ(minus.experts, routing) << t.name << "[" << i << "] - eps changed the routing: pick another seed";
    // The perturbation actually applied, in f32: saved ± eps rounded.
    const double step = double(saved + float(kEps)) - double(saved - float(kEps));
    const double fd = (plus.loss - minus.loss) / step;
    const double error = std::abs(fd - t.analytic[i]);
    worst.abs_error = std::max(worst.abs_error, error);
    EXPECT_LE(error, tol.rtol * worst.max_analytic + tol.atol)
        << t.name << "[" << i << "]: fd " << fd << ", analytic " << t.analytic[i];
  }
  return worst;
}

// Forward + backward once, then every element of dx and of every weight gradient by FD.
void check_case(const GradCase& c, bool zero_dy, Tolerance tol) {
  SCOPED_TRACE(std::string(c.name) + (zero_dy ? " (dy = 0)" : ""));
  const MoeConfig cfg = make_config(c);
  Rng rng(c.seed);
  MoeLayer layer = make_layer(cfg, rng);
  std::vector<float> x(kTokens * kDModel), dy(kTokens * kDModel, 0.0f);
  for (float& v : x) v = rng.normal();
  if (!zero_dy)
    for (float& v : dy) v = rng.normal();

  // Analytic gradients. backward accumulates: start from zeros (MoeWeights::zeros sets router_scale = 1).
  MoeCache cache;
  std::vector<float> y(x.size()), dx(x.size());
  const float aux = layer.forward(x.data(), kTokens, y.data(), cache);
  ASSERT_GT(aux, 0.0f);
  const std::vector<int32_t> routing = cache.routing.expert;
  MoeWeights grads = MoeWeights::zeros(cfg);
  grads.router_scale.fill(0.0f);
  layer.backward(x.data(), cache, dy.data(), kAuxGrad, dx.data(), grads);

  // Every tensor: x, then the weights in MoeWeights::named() order.
  std::vector<Checked> checked = {{"x", x.data(), dx.data(), int64_t(x.size())}};
  auto params = layer.mutable_weights().named();
  auto grad_tensors = grads.named();
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_STREQ(params[i].first, grad_tensors[i].first);
    ASSERT_EQ(params[i].second->shape(), grad_tensors[i].second->shape()) << params[i].first;
    if (params[i].second->empty()) {
      ASSERT_FALSE(c.shared) << params[i].first << " is empty";
      continue;
    }
    checked.push_back({params[i].first, params[i].second->f32(), grad_tensors[i].second->f32(),
                       params[i].second->numel()});
  }
  ASSERT_EQ(checked.size(), c.shared ? 9u : 6u);

  for (const Checked& t : checked) {
    Worst w = check_tensor(layer, x, dy, kAuxGrad, routing, t, tol);
    // The worst error, for the test log (--gtest_output=xml): "worst |fd - analytic| / max |analytic|".
    std::ostringstream worst;
    worst << w.abs_error << " / " << w.max_analytic;
    testing::Test::RecordProperty(std::string(c.name) + (zero_dy ? ".dy0." : ".") + t.name, worst.str());
    const bool router_path = t.name == "x" || t.name == "gate";
    if (zero_dy && !router_path) {
      // Only the aux loss drives the gradients: it reaches the router, not the experts' weights
      // nor router_scale (the aux loss uses p, not the weights).
      for (int64_t i = 0; i < t.numel; ++i) ASSERT_EQ(t.analytic[i], 0.0f) << t.name << "[" << i << "]";
    } else {
      // Every gradient must be non-trivial for the comparison to mean something.
      EXPECT_GT(w.max_analytic, 1e-3) << t.name;
    }
  }
}

const GradCase kCases[] = {
    {"grouped_N8_M4_K4_shared", RoutingMode::grouped, 8, 4, 4, 0, false, true, 1},
    {"grouped_N8_M4_K4", RoutingMode::grouped, 8, 4, 4, 0, false, false, 1},
    {"grouped_N8_M2_K2_shared", RoutingMode::grouped, 8, 2, 2, 0, false, true, 1},
    {"topk_N8_K3_renorm_shared", RoutingMode::topk, 8, 1, 3, 0, true, true, 1},
    {"topk_N8_K3_renorm", RoutingMode::topk, 8, 1, 3, 0, true, false, 1},
    {"topk_N8_K3_shared", RoutingMode::topk, 8, 1, 3, 0, false, true, 1},
    {"group_limited_N8_M4_K3_tg2_shared", RoutingMode::group_limited, 8, 4, 3, 2, false, true, 1},
    {"group_limited_N8_M4_K3_tg2", RoutingMode::group_limited, 8, 4, 3, 2, false, false, 1},
};

TEST(GradCheck, EveryGradientMatchesFiniteDifferences) {
  for (const GradCase& c : kCases) check_case(c, /*zero_dy=*/false, {5e-4, 5e-5});
}

// dy = 0: only aux_grad · aux remains. The gate and x gradients come from it alone and must match
// the finite differences; the expert, shared-expert and router_scale gradients are exactly zero.
TEST(GradCheck, AuxLossAloneDrivesOnlyTheRouter) {
  check_case(kCases[0], /*zero_dy=*/true, {5e-4, 2e-6});
  check_case(kCases[3], /*zero_dy=*/true, {5e-4, 2e-6});
}

}  // namespace
}  // namespace moge::moe
