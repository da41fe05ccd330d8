#pragma once
// The MoE layer: router + dispatch + routed experts + shared expert (MOGE.md §1):
//   y = shared(x) + Σ_{e chosen} w_e · expert_e(x),   aux = α Σ_i f_i P_i.
// forward() keeps what backward() needs in a MoeCache; backward() produces dx and every weight
// gradient. Master weights are f32; set_compute_dtype(bf16) makes the expert and shared-expert
// GEMMs run on bf16 copies (the router gate stays f32, as in the release).
#include <cstdint>
#include <vector>

#include "moge/core/tensor.h"
#include "moge/kernels/weight.h"
#include "moge/moe/config.h"
#include "moge/moe/dispatch.h"
#include "moge/moe/mlp.h"
#include "moge/moe/router.h"

namespace moge::moe {

// Tensors named as in the HF checkpoint (model.layers.{i}.mlp.*), PyTorch [out, in] layout.
struct MoeWeights {
  Tensor gate;          // [N, d]      mlp.gate.weight
  Tensor router_scale;  // [1, N]      mlp.router_scale
  Tensor experts_gate;  // [N, F, d]   mlp.experts.{j}.gate_proj.weight, stacked
  Tensor experts_up;    // [N, F, d]   mlp.experts.{j}.up_proj.weight
  Tensor experts_down;  // [N, d, F]   mlp.experts.{j}.down_proj.weight
  Tensor shared_gate;   // [S, d]      mlp.shared_expert.gate_proj.weight (empty when S = 0)
  Tensor shared_up;     // [S, d]
  Tensor shared_down;   // [d, S]

  static MoeWeights zeros(const MoeConfig& cfg);  // router_scale = 1, all else 0
  // Throws Error naming the first tensor whose shape or dtype disagrees with cfg.
  void check(const MoeConfig& cfg) const;
  // Every tensor in a fixed order with its name (for tests, optimizers, checkpoints).
  std::vector<std::pair<const char*, Tensor*>> named();
};

// Inference-only weights: one matrix per projection per expert, each f32, bf16, int8 or int4
// (the GEMM runs on that format), possibly views of a memory-mapped checkpoint (no copy at
// load). The router gate and router_scale are f32. An expert whose three Weights are empty is
// held by another device: tokens routed to it here are an error.
struct MoeInferenceWeights {
  Tensor gate;          // [N, d] f32
  Tensor router_scale;  // [1, N] f32
  std::vector<kernels::Weight> experts_gate, experts_up, experts_down;  // N each: [F, d], [F, d], [d, F]
  kernels::Weight shared_gate, shared_up, shared_down;                   // empty when S = 0
};

// What forward leaves for backward. Sized on demand; reuse one across calls to avoid allocation.
struct MoeCache {
  Routing routing;
  Dispatch dispatch;
  // forward() with master weights (training) runs the experts over `padded`, dispatch with each
  // expert's rows padded to a multiple of 32 (xs, g, u, h, ye, d_ye, d_xs are then in its rows),
  // and says so here for backward(). The pieces below (run_experts, backward_experts) use dispatch.
  Dispatch padded;
  bool padded_layout = false;
  float aux_loss = 0;
  std::vector<float> xs;          // [R, d] gathered inputs, R = T * K rows sorted by expert
  std::vector<float> g, u, h;     // [R, F] expert activations
  std::vector<float> ye;          // [R, d] expert outputs (unweighted)
  std::vector<float> sg, su, sh;  // [T, S] shared-expert activations
  // Backward scratch, kept so that repeated steps do not allocate and fault in fresh pages.
  std::vector<float> d_ye, d_xs;  // [R, d]
  std::vector<float> d_weight;    // [T, K]
  std::vector<float> d_probs;     // [T, N]
};

// An expert in AMX tiles (an expert-parallel device's, kernels/amx_bf16.h) runs its rows in
// pieces of at most this many, each its whole MLP (MoeLayer::run_experts says why);
// sim/predict.cpp costs the same pieces.
constexpr int64_t kAmxPieceRows = 384;

class MoeLayer {
 public:
  MoeLayer(const MoeConfig& cfg, MoeWeights weights);  // validates cfg and weight shapes
  explicit MoeLayer(const MoeConfig& cfg) : MoeLayer(cfg, MoeWeights::zeros(cfg)) {}
  // Forward only: backward(), weights() and set_compute_dtype() need master weights.
  static MoeLayer for_inference(const MoeConfig& cfg, MoeInferenceWeights weights);
  bool has_master_weights() const { return has_masters_; }
  const MoeInferenceWeights& inference_weights() const { return inference_; }

  const MoeConfig& config() const { return cfg_; }
  const MoeWeights& weights() const { return w_; }
  // Mutable access for optimizers and loaders; call set_compute_dtype() again after changes
  // when computing in bf16.
  MoeWeights& mutable_weights() { return w_; }

  // Fills weights with N(0, 1/fan_in) (gate: N(0, 1/d)) and router_scale = 1.
  void init_random(uint64_t seed);
  void set_compute_dtype(DType dtype);
  DType compute_dtype() const { return compute_dtype_; }

  // y[T, d] = layer(x[T, d]); returns the auxiliary loss (α-weighted). x must stay alive and
  // unchanged until backward.
  float forward(const float* x, int64_t tokens, float* y, MoeCache& cache) const;

  // The pieces of forward(), for callers that place experts on several devices
  // (parallel/expert_parallel.h): the routing of `tokens` rows of x; the experts [e_begin, e_end)
  // over their rows of c.dispatch (xs and ye hold those rows only, starting at the row
  // offsets[e_begin]; activations go to c.g/u/h); y[tokens, d] = shared expert (0 without one).
  void route(const float* x, int64_t tokens, Routing& routing) const;
  void run_experts(const float* xs, float* ye, MoeCache& c, int e_begin, int e_end) const;
  void run_shared(const float* x, int64_t tokens, float* y, MoeCache& c) const;
  // False for an expert whose weights were left out at load (held by another device).
  bool has_expert(int e) const;

  // Loss L = <dy, y> + aux_grad · aux. Writes dx[T, d]; accumulates into grads (shaped like the
  // weights, e.g. MoeWeights::zeros). Consumes the cache's activations.
  void backward(const float* x, MoeCache& cache, const float* dy, float aux_grad, float* dx,
                MoeWeights& grads) const;

  // The pieces of backward(), in its order, for callers that place experts on several devices
  // (train/expert_parallel.h): the shared expert of `tokens` rows (overwrites dx; zeros without
  // one); the experts [e_begin, e_end) over their rows of c.dispatch, laid out as run_experts
  // left them (xs, d_ye and d_xs hold those rows only; clobbers c.g and c.u); the router of
  // `routing` (its tokens' rows of x; d_weight [T, K] the gradient of routing.weight), adding
  // to dx.
  void backward_shared(const float* x, int64_t tokens, MoeCache& c, const float* dy, float* dx,
                       MoeWeights& grads) const;
  void backward_experts(const float* xs, const float* d_ye, float* d_xs, MoeCache& c, int e_begin, int e_end,
                        MoeWeights& grads) const;
  void backward_router(const float* x, const Routing& routing, const float* d_weight, float aux_grad, float* dx,
                       MoeWeights& grads, MoeCache& c) const;

 private:
  MoeLayer() = default;
  // forward() and backward() of a layer with master weights (training): experts over the padded
  // dispatch, each expert's MLP (and the shared expert's forward, in blocks of rows) one unit of
  // an OpenMP loop whose GEMMs run on one thread.
  void forward_padded(const float* x, int64_t tokens, float* y, MoeCache& c) const;
  void backward_padded(const float* x, MoeCache& c, const float* dy, float aux_grad, float* dx,
                       MoeWeights& grads) const;
  void bind_master_weights();  // points the compute refs at w_ or its bf16 copies
  // Throws Error naming expert e unless this layer holds it (it got tokens).
  void require_expert(int e) const;
  // Appends the MLP jobs of the experts [e_begin, e_end) that got rows (see run_experts).
  void expert_jobs(const float* xs, float* ye, MoeCache& c, int e_begin, int e_end, std::vector<MlpJob>& jobs) const;
  // The shared expert's job over x[tokens] into y, or y = 0 without one.
  void shared_job(const float* x, int64_t tokens, float* y, MoeCache& c, std::vector<MlpJob>& jobs) const;

  MoeConfig cfg_;
  MoeWeights w_;
  bool has_masters_ = true;
  DType compute_dtype_ = DType::f32;
  // bf16 copies of the six expert/shared matrices when compute_dtype_ is bf16.
  Tensor c_experts_gate_, c_experts_up_, c_experts_down_, c_shared_gate_, c_shared_up_, c_shared_down_;
  MoeInferenceWeights inference_;  // the weights of a for_inference layer

  // What forward computes with: the router's f32 tensors and every expert's GEMM operands.
  const float* gate_ = nullptr;
  const float* router_scale_ = nullptr;
  std::vector<MlpWeights> experts_;
  MlpWeights shared_{};
};

}  // namespace moge::moe
