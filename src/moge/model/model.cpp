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
  explicit Loader(const std::string& dir) : ckpt_(dir) {}

  Tensor take(const std::string& name, const Shape& shape) {
    used_.insert(name);
    return ckpt_.load_f32(name, shape);
  }
  bool has(const std::string& name) const { return ckpt_.has(name); }
  // Copies expert tensors one by one into a stacked [N, rows, cols] tensor.
  Tensor take_stacked(const std::string& prefix, const std::string& suffix, int64_t n, int64_t rows, int64_t cols) {
    Tensor out({n, rows, cols});
    for (int64_t j = 0; j < n; ++j) {
      Tensor t = take(prefix + std::to_string(j) + suffix, {rows, cols});
      std::memcpy(out.f32() + j * rows * cols, t.f32(), t.bytes());
    }
    return out;
  }
  void report_unused() const {
    auto extra = ckpt_.unexpected(used_);
    if (extra.empty()) return;
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    std::fprintf(stderr, "moge: warning: checkpoint %s has %zu tensors the model does not use: %s%s\n",
                 ckpt_.path().c_str(), extra.size(), list.c_str(), extra.size() > 5 ? ", ..." : "");
  }

 private:
  Checkpoint ckpt_;
  std::set<std::string> used_;
};

Linear load_linear(Loader& l, const std::string& name, int64_t out, int64_t in, bool bias) {
  Linear lin;
  lin.weight = l.take(name + ".weight", {out, in});
  if (bias) lin.bias = l.take(name + ".bias", {out});
  return lin;
}

}  // namespace

Model Model::load(const std::string& dir) {
  Model m;
  m.cfg_ = ModelConfig::from_file(dir + "/config.json");
  const ModelConfig& c = m.cfg_;
  const int64_t d = c.hidden_size, v = c.vocab_size;
  Loader l(dir);
  m.embed_ = l.take("model.embed_tokens.weight", {v, d});
  m.final_norm_ = l.take("model.norm.weight", {d});
  if (c.tie_word_embeddings && !l.has("lm_head.weight")) {
    m.lm_head_.weight = m.embed_.to(DType::f32);
  } else {
    m.lm_head_ = load_linear(l, "lm_head", v, d, false);
  }
  const moe::MoeConfig moe_cfg = c.moe_config();
  const int64_t n = c.num_experts, f = c.moe_intermediate_size, s = c.shared_expert_intermediate_size;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    DecoderLayer layer;
    layer.input_norm = l.take(p + "input_layernorm.weight", {d});
    layer.post_norm = l.take(p + "post_attention_layernorm.weight", {d});
    layer.q = load_linear(l, p + "self_attn.q_proj", c.q_dim(), d, true);
    layer.k = load_linear(l, p + "self_attn.k_proj", c.kv_dim(), d, true);
    layer.v = load_linear(l, p + "self_attn.v_proj", c.kv_dim(), d, true);
    layer.o = load_linear(l, p + "self_attn.o_proj", d, c.q_dim(), true);
    moe::MoeWeights w;
    w.gate = l.take(p + "mlp.gate.weight", {n, d});
    w.router_scale = l.take(p + "mlp.router_scale", {1, n});
    w.experts_gate = l.take_stacked(p + "mlp.experts.", ".gate_proj.weight", n, f, d);
    w.experts_up = l.take_stacked(p + "mlp.experts.", ".up_proj.weight", n, f, d);
    w.experts_down = l.take_stacked(p + "mlp.experts.", ".down_proj.weight", n, d, f);
    if (s > 0) {
      w.shared_gate = l.take(p + "mlp.shared_expert.gate_proj.weight", {s, d});
      w.shared_up = l.take(p + "mlp.shared_expert.up_proj.weight", {s, d});
      w.shared_down = l.take(p + "mlp.shared_expert.down_proj.weight", {d, s});
    }
    layer.moe = std::make_unique<moe::MoeLayer>(moe_cfg, std::move(w));
    m.layers_.push_back(std::move(layer));
  }
  l.report_unused();
  return m;
}

void Model::set_compute_dtype(DType dtype) {
  lm_head_.set_compute_dtype(dtype);
  for (DecoderLayer& layer : layers_) {
    for (Linear* lin : {&layer.q, &layer.k, &layer.v, &layer.o}) lin->set_compute_dtype(dtype);
    layer.moe->set_compute_dtype(dtype);
  }
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
  for (int64_t t = 0; t < n; ++t) std::memcpy(&x[t * d], embed_.f32() + int64_t(tokens[t]) * d, d * sizeof(float));

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
