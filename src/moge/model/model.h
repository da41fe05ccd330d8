#pragma once
// The Pangu Pro MoE decoder (MOGE.md §3), for inference:
//   h = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm_in(x)
//   y = h + moge(n2) + shared(n2),                                              n2 = rmsnorm_post(h)
//   logits = lm_head(rmsnorm(h_last))
// Prefill runs whole prompts through GEMMs; decode appends one token at a time to the KV cache.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moge/core/tensor.h"
#include "moge/model/config.h"
#include "moge/model/linear.h"
#include "moge/moe/layer.h"

namespace moge::model {

class Checkpoint;

struct DecoderLayer {
  Tensor input_norm;  // [d]
  Tensor post_norm;   // [d]
  Linear q, k, v, o;  // biased
  std::unique_ptr<moe::MoeLayer> moe;  // built for inference
};

// Keys and values of every layer for up to `capacity` positions, f32 [capacity, kv_dim].
struct KvCache {
  int64_t capacity = 0;
  int64_t length = 0;  // positions filled
  std::vector<Tensor> k, v;

  KvCache(const ModelConfig& cfg, int64_t capacity);
  void clear() { length = 0; }
};

// The experts every MoE layer chose, appended call after call: expert[layer] holds rows of
// top_k ids, one row a token, in the order the tokens ran.
struct RoutingTrace {
  int top_k = 0;
  int num_experts = 0;
  std::vector<std::vector<int32_t>> expert;
  int64_t tokens() const { return expert.empty() || top_k == 0 ? 0 : int64_t(expert[0].size()) / top_k; }
};

// Wall seconds forward() spent in each part of the model, added up over the forwards while it is
// set (moge bench reports them next to the simulator's predicted parts). attention: each layer's
// input norm, q/k/v, RoPE, attention, o and residual add; moe: each layer's post-attention norm,
// MoE block (router, routed and shared experts, combine, and under expert parallelism the
// collectives and the waits for the other devices) and residual add; head: the final norm and the
// lm_head; embed: the embedding lookup.
struct PhaseTimes {
  double embed = 0, attention = 0, moe = 0, head = 0;
};

// Runs the MoE blocks in place of MoeLayer::forward: expert parallelism
// (parallel/expert_parallel.h) plugs in here. run() must write y[tokens, d] and leave the
// routing of all `tokens` in cache.routing (for traces).
class MoeRunner {
 public:
  virtual ~MoeRunner() = default;
  virtual void run(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                   moe::MoeCache& cache) = 0;
};

// The routed experts to load, [begin, end) in every layer (end < 0: all). The others are left
// out (another device holds them); the rest of the model is loaded whole.
// own_memory: f32/bf16 expert matrices are copied, a layer's into one buffer on 2 MB pages
// placed by the loading thread, instead of viewing the mapped file: the memory of a device of
// its own. A view's time depends on where the file's 4 KB pages fell (±10% an expert between
// runs here, stable within one), which would read as one device having more work than another.
// Where the CPU has AMX-BF16, bf16 experts are packed into its tiles instead (amx_bf16.h): an
// expert's time is then linear in its rows, which oneDNN's is not.
struct ExpertSlice {
  int begin = 0, end = -1;
  bool own_memory = false;
};

class Model {
 public:
  Model();
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  // Loads DIR/config.json and the safetensors weights (single file or shards). Throws Error
  // naming the file or the tensor at fault; tensors the model does not use are reported on
  // stderr.
  // `format`: the weights every GEMM but the router gate runs on (f32, bf16, int8, int4).
  // Matrices stored in that format are used in place, memory-mapped (no copy); others are
  // converted (quantized) at load. Matrices stored quantized (moge convert, or a W8A8 release)
  // run in their stored format whatever `format` says.
  static Model load(const std::string& dir, kernels::WeightFormat format = kernels::WeightFormat::f32,
                    ExpertSlice experts = {});

  const ModelConfig& config() const { return cfg_; }
  // The format the GEMMs run on (the first layer's q projection's; `load` may have been asked for
  // another, which a checkpoint stored quantized overrides).
  kernels::WeightFormat weight_format() const { return layers_.at(0).q.weight.ref().format; }
  // Bytes of weights one decoded token streams (all but the embedding table, K experts a layer).
  size_t decode_weight_bytes() const;

  // Runs `tokens` new tokens at positions cache.length.. and appends them to the cache. Writes
  // logits [n, vocab] for the last `logit_rows` tokens (all when logit_rows < 0) to `logits`.
  void forward(const int32_t* tokens, int64_t n, KvCache& cache, float* logits, int64_t logit_rows = -1) const;

  // Records the routing of every following forward() into `trace` (null: stop recording).
  void set_routing_trace(RoutingTrace* trace) const;

  // Adds the time of every following forward()'s parts to `times` (null: stop timing).
  void set_phase_times(PhaseTimes* times) const { phases_ = times; }

  // Runs the MoE blocks of every following forward() through `runner` (null: MoeLayer::forward).
  void set_moe_runner(MoeRunner* runner) const { moe_runner_ = runner; }
  const moe::MoeLayer& moe_layer(int layer) const { return *layers_[size_t(layer)].moe; }

 private:
  ModelConfig cfg_;
  std::unique_ptr<Checkpoint> checkpoint_;  // mapped files the weight views point into
  std::vector<AlignedBuffer> expert_memory_;  // ExpertSlice::own_memory: a layer's experts each
  Tensor embed_;       // [V, d] f32 or bf16 (rows converted on lookup)
  Tensor final_norm_;  // [d]
  Linear lm_head_;     // [V, d]
  std::vector<DecoderLayer> layers_;
  mutable RoutingTrace* trace_ = nullptr;
  mutable MoeRunner* moe_runner_ = nullptr;
  mutable PhaseTimes* phases_ = nullptr;
};

}  // namespace moge::model
