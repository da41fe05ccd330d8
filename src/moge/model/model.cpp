#include "moge/model/model.h"

#include <cstdio>
#include <cstring>
#include <set>

#include "moge/core/error.h"
#include "moge/kernels/attention.h"
#include "moge/kernels/rmsnorm.h"
#include "moge/kernels/rope.h"
#include "moge/model/safetensors.h"

namespace moge::model {

KvCache::KvCache(const ModelConfig& cfg, int64_t cap) : capacity(cap) {
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    k.emplace_back(Shape{cap, cfg.kv_dim()});
    v.emplace_back(Shape{cap, cfg.kv_dim()});
  }
}

namespace {

// Loads tensors by HF name and remembers which were used.
class Loader {
 public:
  explicit Loader(const std::string& dir) : ckpt_(std::make_unique<Checkpoint>(dir)) {}

  // An f32 copy (norms, biases, the router).
  Tensor take(const std::string& name, const Shape& shape) {
    used_.insert(name);
    return ckpt_->load_f32(name, shape);
  }
  // A matrix in `dtype`: a view of the mapped file when stored so, else converted.
  Tensor matrix(const std::string& name, const Shape& shape, DType dtype) {
    const TensorInfo& info = ckpt_->get(name);
    const bool same = (dtype == DType::bf16 && info.dtype == StDType::BF16) ||
                      (dtype == DType::f32 && info.dtype == StDType::F32);
    if (!same) return take(name, shape).to(dtype);
    check(info.shape == shape, *info.file + ": tensor '" + name + "': expected shape " + shape_str(shape) +
                                   ", file has " + shape_str(info.shape));
    used_.insert(name);
    return Tensor::view(info.data, shape, dtype);
  }
  bool has(const std::string& name) const { return ckpt_->has(name); }
  std::unique_ptr<Checkpoint> release() { return std::move(ckpt_); }
  void report_unused() const {
    auto extra = ckpt_->unexpected(used_);
    if (extra.empty()) return;
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    std::fprintf(stderr, "moge: warning: checkpoint %s has %zu tensors the model does not use: %s%s\n",
                 ckpt_->path().c_str(), extra.size(), list.c_str(), extra.size() > 5 ? ", ..." : "");
  }

 private:
  std::unique_ptr<Checkpoint> ckpt_;
  std::set<std::string> used_;
};

Linear load_linear(Loader& l, const std::string& name, int64_t out, int64_t in, bool bias, DType dtype) {
  Linear lin;
  lin.weight = l.matrix(name + ".weight", {out, in}, dtype);
  if (bias) lin.bias = l.take(name + ".bias", {out});
  return lin;
}

}  // namespace

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::string& dir, DType dtype) {
  Model m;
  m.cfg_ = ModelConfig::from_file(dir + "/config.json");
  m.dtype_ = dtype;
  const ModelConfig& c = m.cfg_;
  const int64_t d = c.hidden_size, v = c.vocab_size;
  Loader l(dir);
  m.embed_ = l.matrix("model.embed_tokens.weight", {v, d}, dtype);
  m.final_norm_ = l.take("model.norm.weight", {d});
  if (c.tie_word_embeddings && !l.has("lm_head.weight")) {
    m.lm_head_.weight = Tensor::view(m.embed_.raw(), {v, d}, dtype);
  } else {
    m.lm_head_ = load_linear(l, "lm_head", v, d, false, dtype);
  }
  const moe::MoeConfig moe_cfg = c.moe_config();
  const int64_t n = c.num_experts, f = c.moe_intermediate_size, s = c.shared_expert_intermediate_size;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    DecoderLayer layer;
    layer.input_norm = l.take(p + "input_layernorm.weight", {d});
    layer.post_norm = l.take(p + "post_attention_layernorm.weight", {d});
    layer.q = load_linear(l, p + "self_attn.q_proj", c.q_dim(), d, true, dtype);
    layer.k = load_linear(l, p + "self_attn.k_proj", c.kv_dim(), d, true, dtype);
    layer.v = load_linear(l, p + "self_attn.v_proj", c.kv_dim(), d, true, dtype);
    layer.o = load_linear(l, p + "self_attn.o_proj", d, c.q_dim(), true, dtype);
    moe::MoeInferenceWeights w;
    w.gate = l.take(p + "mlp.gate.weight", {n, d});  // the router stays f32 (MOGE.md §1)
    w.router_scale = l.take(p + "mlp.router_scale", {1, n});
    for (int64_t j = 0; j < n; ++j) {
      const std::string e = p + "mlp.experts." + std::to_string(j) + ".";
      w.experts_gate.push_back(l.matrix(e + "gate_proj.weight", {f, d}, dtype));
      w.experts_up.push_back(l.matrix(e + "up_proj.weight", {f, d}, dtype));
      w.experts_down.push_back(l.matrix(e + "down_proj.weight", {d, f}, dtype));
    }
    if (s > 0) {
      w.shared_gate = l.matrix(p + "mlp.shared_expert.gate_proj.weight", {s, d}, dtype);
      w.shared_up = l.matrix(p + "mlp.shared_expert.up_proj.weight", {s, d}, dtype);
      w.shared_down = l.matrix(p + "mlp.shared_expert.down_proj.weight", {d, s}, dtype);
    }
    layer.moe = std::make_unique<moe::MoeLayer>(moe::MoeLayer::for_inference(moe_cfg, std::move(w)));
    m.layers_.push_back(std::move(layer));
  }
  l.report_unused();
  m.checkpoint_ = l.release();
  return m;
}

void Model::forward(const int32_t* tokens, int64_t n, KvCache& cache, float* logits, int64_t logit_rows) const {
  const ModelConfig& c = cfg_;
  const int64_t d = c.hidden_size, pos0 = cache.length;
  check(pos0 + n <= cache.capacity, "context of " + std::to_string(pos0 + n) + " tokens exceeds the KV cache (" +
                                        std::to_string(cache.capacity) + ")");
  for (int64_t t = 0; t < n; ++t)
    check(tokens[t] >= 0 && tokens[t] < c.vocab_size,
          "token id " + std::to_string(tokens[t]) + " is outside the vocabulary (" + std::to_string(c.vocab_size) + ")");

  std::vector<float> x(n * d), normed(n * d), q(n * c.q_dim()), att(n * c.q_dim()), tmp(n * d);
  for (int64_t t = 0; t < n; ++t) {
    if (embed_.dtype() == DType::f32) std::memcpy(&x[t * d], embed_.f32() + int64_t(tokens[t]) * d, d * sizeof(float));
    else bf16_to_f32(embed_.bf16_data() + int64_t(tokens[t]) * d, &x[t * d], d);
  }

  const kernels::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};
  moe::MoeCache moe_cache;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& layer = layers_[i];
    float* k_new = cache.k[i].f32() + pos0 * c.kv_dim();
    float* v_new = cache.v[i].f32() + pos0 * c.kv_dim();
    kernels::rmsnorm_forward(x.data(), layer.input_norm.f32(), normed.data(), n, d, c.rms_norm_eps);
    layer.q.forward(normed.data(), n, q.data());
    layer.k.forward(normed.data(), n, k_new);
    layer.v.forward(normed.data(), n, v_new);
    kernels::rope_apply(q.data(), n, c.num_attention_heads, c.head_dim, pos0, c.rope_theta);
    kernels::rope_apply(k_new, n, c.num_key_value_heads, c.head_dim, pos0, c.rope_theta);
    kernels::attention_forward(q.data(), cache.k[i].f32(), cache.v[i].f32(), att.data(), n, pos0, shape);
    layer.o.forward(att.data(), n, tmp.data());
    for (int64_t j = 0; j < n * d; ++j) x[j] += tmp[j];

    kernels::rmsnorm_forward(x.data(), layer.post_norm.f32(), normed.data(), n, d, c.rms_norm_eps);
    layer.moe->forward(normed.data(), n, tmp.data(), moe_cache);
    for (int64_t j = 0; j < n * d; ++j) x[j] += tmp[j];
  }
  cache.length = pos0 + n;

  const int64_t rows = logit_rows < 0 ? n : std::min(logit_rows, n);
  const float* last = x.data() + (n - rows) * d;
  kernels::rmsnorm_forward(last, final_norm_.f32(), normed.data(), rows, d, c.rms_norm_eps);
  lm_head_.forward(normed.data(), rows, logits);
}

}  // namespace moge::model
