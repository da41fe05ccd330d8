#pragma once
// The Pangu Pro MoE decoder for training: f32 master weights, a forward that keeps what the
// backward needs, and the backward of every parameter (llm.c style: each piece's forward and
// backward side by side, no autograd). Same math as model::Model (MOGE.md §3).
//
// Loss of one micro-batch (B sequences of T tokens, run together):
//   L = scale · ( mean over counted targets of −log p(target) + Σ_layers aux_layer )
// aux_layer is the MoE layer's α-weighted balance loss over the micro-batch's B·T tokens. A
// global batch of several micro-batches (gradient accumulation, or data-parallel ranks) passes
// scale = 1 / micro-batches and sums the gradients; one process or N ranks then compute the
// same thing.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moge/core/tensor.h"
#include "moge/model/config.h"
#include "moge/model/safetensors.h"
#include "moge/moe/layer.h"

namespace moge::train {

// A trainable tensor, its gradient, and whether weight decay applies (not to norms, biases and
// router_scale).
struct Param {
  std::string name;
  Tensor* value;
  Tensor* grad;
  bool decay;
  bool routed_experts = false;  // a layer's stacked routed-expert matrix [N, rows, cols]
};

// How the decoder runs its MoE blocks: in place (the default: moe::MoeLayer's forward and
// backward), or with the routed experts placed on several devices (train/expert_parallel.h).
// Same contract as MoeLayer::forward / backward; `layer` identifies the block.
class MoeTrainRunner {
 public:
  virtual ~MoeTrainRunner() = default;
  virtual float forward(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                        moe::MoeCache& cache) = 0;
  virtual void backward(int layer, const moe::MoeLayer& moe, const float* x, moe::MoeCache& cache, const float* dy,
                        float aux_grad, float* dx, moe::MoeWeights& grads) = 0;
};

struct LossParts {
  double ce = 0;        // mean cross-entropy over counted targets
  double aux = 0;       // Σ over layers of the α-weighted balance loss
  int64_t targets = 0;  // counted targets
};

class TrainableDecoder {
 public:
  explicit TrainableDecoder(const model::ModelConfig& cfg);  // norms 1, router_scale 1, rest 0
  // model::write_random_model's init: embeddings N(0, 1/d), matrices N(0, 1/fan_in),
  // biases 0, norms and router_scale 1; deterministic for a seed.
  static TrainableDecoder random(const model::ModelConfig& cfg, uint64_t seed);
  // f32 masters from a float checkpoint directory (config.json + safetensors).
  static TrainableDecoder load(const std::string& dir);

  TrainableDecoder(TrainableDecoder&&) noexcept;
  TrainableDecoder& operator=(TrainableDecoder&&) noexcept;
  ~TrainableDecoder();

  const model::ModelConfig& config() const { return cfg_; }
  // Every tensor of the HF checkpoint layout (views into the masters, expert slices included).
  std::vector<model::NamedTensor> checkpoint_tensors() const;
  std::vector<model::NamedTensor> checkpoint_gradients() const;  // the same layout, of the grads
  std::vector<Param> parameters();
  int64_t parameter_count() const;
  void zero_grad();

  // null: the MoE blocks run in place. The runner must outlive its use.
  void set_moe_runner(MoeTrainRunner* runner) { runner_ = runner; }

  // inputs, targets: [batch, seq]; targets may hold kernels::kIgnoreTarget. Adds the gradients
  // of the loss above to the grads.
  LossParts forward_backward(const int32_t* inputs, const int32_t* targets, int batch, int seq, float scale = 1.0f);
  // The loss alone (validation); no gradients.
  LossParts evaluate(const int32_t* inputs, const int32_t* targets, int batch, int seq);
  // Token-expert pairs per expert in each layer for the last forward: [layers][N].
  std::vector<std::vector<int64_t>> expert_counts() const;
  // Logits [batch·seq, vocab] of the last forward (for tests).
  const std::vector<float>& last_logits() const;

 private:
  struct Layer;
  struct Activations;
  std::vector<model::NamedTensor> layout(bool gradients) const;
  LossParts forward(const int32_t* inputs, const int32_t* targets, int batch, int seq, bool keep_logit_grads,
                    float scale);
  void backward(const int32_t* inputs, int batch, int seq, float scale);

  model::ModelConfig cfg_;
  Tensor embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  Tensor d_embed_, d_final_norm_, d_lm_head_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Activations> act_;
  MoeTrainRunner* runner_ = nullptr;
};

}  // namespace moge::train
