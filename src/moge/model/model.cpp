#include "moge/model/model.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>

#include "moge/core/error.h"
#include "moge/kernels/amx_bf16.h"
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

using kernels::Weight;
using kernels::WeightFormat;

// Loads tensors by HF name and remembers which were used.
class Loader {
 public:
  explicit Loader(const std::string& dir) : ckpt_(std::make_unique<Checkpoint>(dir)) {}

  // An f32 copy (norms, biases, the router).
  Tensor take(const std::string& name, const Shape& shape) {
    used_.insert(name);
    return ckpt_->load_f32(name, shape);
  }
  // An f32 copy of any shape holding `numel` values (scales stored [out] or [out, 1]).
  Tensor take_vector(const std::string& name, int64_t numel) {
    const TensorInfo& info = ckpt_->get(name);
    check(info.numel() == numel, *info.file + ": tensor '" + name + "': expected " + std::to_string(numel) +
                                     " values, file has shape " + shape_str(info.shape));
    Tensor stored = take(name, info.shape), flat({numel});
    if (numel > 0) std::memcpy(flat.f32(), stored.f32(), size_t(numel) * sizeof(float));
    return flat;
  }

  // A matrix [out, in] in `dtype` (f32 or bf16): a view of the mapped file when stored so, else
  // converted.
  Tensor dense(const std::string& name, int64_t out, int64_t in, DType dtype) {
    const TensorInfo& info = ckpt_->get(name);
    const bool same = (dtype == DType::bf16 && info.dtype == StDType::BF16) ||
                      (dtype == DType::f32 && info.dtype == StDType::F32);
    if (!same) return take(name, {out, in}).to(dtype);
    expect_shape(info, {out, in});
    used_.insert(name);
    return Tensor::view(info.data, {out, in}, dtype);
  }

  // The weight `base`.weight [out, in] for GEMMs in `format`. Stored int8 (with weight_scale:
  // moge convert, or a W8A8 release) or int4 (moge convert), it is used as stored, in place;
  // stored as floats, it is viewed or converted (quantized) to `format`.
  Weight weight(const std::string& base, int64_t out, int64_t in, WeightFormat format) {
    const std::string name = base + ".weight";
    if (!has(base + ".weight_scale")) {
      if (format == WeightFormat::f32 || format == WeightFormat::bf16)
        return Weight::dense(dense(name, out, in, format == WeightFormat::f32 ? DType::f32 : DType::bf16));
      return Weight::from_f32(take(name, {out, in}), format);
    }
    const TensorInfo& info = ckpt_->get(name);
    used_.insert(name);
    if (info.dtype == StDType::I8) return int8_weight(base, info, out, in);
    check(info.dtype == StDType::U8, *info.file + ": tensor '" + name + "' has a weight_scale but dtype " +
                                         st_dtype_name(info.dtype) + " (I8 for int8, U8 for int4)");
    expect_shape(info, {out, in / 2});
    const TensorInfo& scale = ckpt_->get(base + ".weight_scale");
    used_.insert(scale.name);
    check(scale.dtype == StDType::F16, *scale.file + ": tensor '" + scale.name + "' must be F16 (int4 block scales)");
    expect_shape(scale, {out, in / 32});
    return Weight::q4_view(reinterpret_cast<const uint8_t*>(info.data), reinterpret_cast<const uint16_t*>(scale.data),
                           out, in);
  }

  // The bias of `base`: `.bias` (f32 copy), or for a W8A8 release without one, quant_bias
  // (int32, in units of deq_scale) times deq_scale. Empty when neither is stored.
  Tensor bias(const std::string& base, int64_t out) {
    if (has(base + ".bias")) return take(base + ".bias", {out});
    if (!has(base + ".quant_bias")) return {};
    const TensorInfo& qb = ckpt_->get(base + ".quant_bias");
    check(qb.dtype == StDType::I32 && qb.numel() == out,
          *qb.file + ": tensor '" + qb.name + "' must be I32 with " + std::to_string(out) + " values");
    used_.insert(qb.name);
    Tensor deq = take_vector(base + ".deq_scale", out);
    Tensor b({out});
    for (int64_t o = 0; o < out; ++o) {
      int32_t v;
      std::memcpy(&v, qb.data + 4 * o, 4);
      b.f32()[o] = float(v) * deq.f32()[o];
    }
    return b;
  }

  bool has(const std::string& name) const { return ckpt_->has(name); }
  // Counts the tensors of `base`.* as used without loading them (experts of another device).
  void skip(const std::string& base) {
    for (const char* part : {".weight", ".weight_scale", ".weight_offset", ".input_scale", ".input_offset",
                             ".quant_bias", ".deq_scale", ".bias"})
      if (has(base + part)) used_.insert(base + part);
  }
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
  static void expect_shape(const TensorInfo& info, const Shape& shape) {
    check(info.shape == shape, *info.file + ": tensor '" + info.name + "': expected shape " + shape_str(shape) +
                                   ", file has " + shape_str(info.shape));
  }

  // int8 [out, in] with a per-output-channel weight_scale ([out] or [out, 1], any float dtype).
  // A W8A8 release may add weight_offset (zero points: w = scale · (q - offset)); nonzero
  // offsets are folded in by requantizing symmetrically. Its static activation fields
  // (input_scale, input_offset) are not needed: moge quantizes activations per token at run
  // time, which is at least as accurate.
  Weight int8_weight(const std::string& base, const TensorInfo& info, int64_t out, int64_t in) {
    expect_shape(info, {out, in});
    Tensor scale = take_vector(base + ".weight_scale", out);
    for (const char* unused : {".input_scale", ".input_offset"})
      if (has(base + unused)) used_.insert(base + unused);
    if (has(base + ".deq_scale") && !has(base + ".quant_bias")) used_.insert(base + ".deq_scale");
    const int8_t* q = reinterpret_cast<const int8_t*>(info.data);
    Tensor offset = has(base + ".weight_offset") ? take_vector(base + ".weight_offset", out) : Tensor();
    bool symmetric = true;
    for (int64_t o = 0; o < offset.numel(); ++o) symmetric = symmetric && offset.f32()[o] == 0.0f;
    bool in_range = true;  // our kernels need -128 never to occur (see quant.h)
    for (int64_t i = 0; i < out * in && in_range; ++i) in_range = q[i] != -128;
    if (symmetric && in_range) return Weight::q8_view(q, std::move(scale), out, in);
    Tensor w({out, in});
    for (int64_t o = 0; o < out; ++o) {
      const float off = offset.empty() ? 0.0f : offset.f32()[o];
      for (int64_t k = 0; k < in; ++k) w.f32()[o * in + k] = (float(q[o * in + k]) - off) * scale.f32()[o];
    }
    return Weight::from_f32(w, WeightFormat::q8);
  }

  std::unique_ptr<Checkpoint> ckpt_;
  std::set<std::string> used_;
};

Linear load_linear(Loader& l, const std::string& name, int64_t out, int64_t in, bool bias, WeightFormat format) {
  Linear lin;
  lin.weight = l.weight(name, out, in, format);
  if (bias) {
    lin.bias = l.bias(name, out);
    check(!lin.bias.empty(), "checkpoint: tensor '" + name + ".bias' not found");
  }
  return lin;
}

// ExpertSlice::own_memory: copies one layer's f32/bf16 expert matrices into one buffer on 2 MB
// pages, placed by this thread, and points the weights at it; bf16 ones in AMX tiles where the
// CPU has AMX-BF16; quantized ones stay as they are.
AlignedBuffer copy_experts_to_own_memory(moe::MoeInferenceWeights& w) {
  auto stride = [](const Weight& x) {
    return (x.bytes() + AlignedBuffer::kAlignment - 1) / AlignedBuffer::kAlignment * AlignedBuffer::kAlignment;
  };
  std::vector<Weight*> dense;
  size_t total = 0;
  for (std::vector<Weight>* list : {&w.experts_gate, &w.experts_up, &w.experts_down})
    for (Weight& x : *list)
      if (!x.empty() && (x.format() == WeightFormat::f32 || x.format() == WeightFormat::bf16)) {
        dense.push_back(&x);
        total += stride(x);
      }
  AlignedBuffer memory = AlignedBuffer::on_huge_pages(total);
  std::byte* at = memory.data();
  for (Weight* x : dense) {
    const size_t step = stride(*x);
    const kernels::MatRef& src = x->ref().dense;
    if (x->format() == WeightFormat::bf16 && kernels::amx_bf16_available() && kernels::amx_bf16_fits(x->out(), x->in())) {
      // On AMX: packed into tiles, so that an expert's time is linear in its rows (amx_bf16.h).
      bf16* tiles = reinterpret_cast<bf16*>(at);
      kernels::amx_pack_weight(x->out(), x->in(), static_cast<const bf16*>(src.data), src.ld, tiles);
      *x = Weight::amx_tiles_view(tiles, x->out(), x->in());
    } else {
      const DType dtype = x->format() == WeightFormat::f32 ? DType::f32 : DType::bf16;
      std::memcpy(at, src.data, x->bytes());
      *x = Weight::dense(Tensor::view(at, {x->out(), x->in()}, dtype));
    }
    at += step;
  }
  return memory;
}

}  // namespace

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::string& dir, WeightFormat format, ExpertSlice experts) {
  Model m;
  m.cfg_ = ModelConfig::from_file(dir + "/config.json");
  const ModelConfig& c = m.cfg_;
  const int64_t d = c.hidden_size, v = c.vocab_size;
  Loader l(dir);
  // The embedding is a table lookup, not a GEMM: kept f32 for f32 runs, else bf16.
  m.embed_ = l.dense("model.embed_tokens.weight", v, d, format == WeightFormat::f32 ? DType::f32 : DType::bf16);
  m.final_norm_ = l.take("model.norm.weight", {d});
  if (c.tie_word_embeddings && !l.has("lm_head.weight")) {
    m.lm_head_.weight = format == WeightFormat::f32 || format == WeightFormat::bf16
                            ? Weight::dense(Tensor::view(m.embed_.raw(), {v, d}, m.embed_.dtype()))
                            : Weight::from_f32(m.embed_.to(DType::f32), format);
  } else {
    m.lm_head_ = load_linear(l, "lm_head", v, d, false, format);
  }
  const moe::MoeConfig moe_cfg = c.moe_config();
  const int64_t n = c.num_experts, f = c.moe_intermediate_size, s = c.shared_expert_intermediate_size;
  const int64_t e_begin = experts.begin, e_end = experts.end < 0 ? n : experts.end;
  check(0 <= e_begin && e_begin <= e_end && e_end <= n,
        dir + "/config.json: experts [" + std::to_string(e_begin) + ", " + std::to_string(e_end) +
            ") requested of a model with num_experts " + std::to_string(n));
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    DecoderLayer layer;
    layer.input_norm = l.take(p + "input_layernorm.weight", {d});
    layer.post_norm = l.take(p + "post_attention_layernorm.weight", {d});
    layer.q = load_linear(l, p + "self_attn.q_proj", c.q_dim(), d, true, format);
    layer.k = load_linear(l, p + "self_attn.k_proj", c.kv_dim(), d, true, format);
    layer.v = load_linear(l, p + "self_attn.v_proj", c.kv_dim(), d, true, format);
    layer.o = load_linear(l, p + "self_attn.o_proj", d, c.q_dim(), true, format);
    moe::MoeInferenceWeights w;
    w.gate = l.take(p + "mlp.gate.weight", {n, d});  // the router stays f32 (MOGE.md §1)
    w.router_scale = l.take(p + "mlp.router_scale", {1, n});
    for (int64_t j = 0; j < n; ++j) {
      const std::string e = p + "mlp.experts." + std::to_string(j) + ".";
      if (j < e_begin || j >= e_end) {  // another device's: empty weights, tensors not touched
        for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) l.skip(e + proj);
        w.experts_gate.emplace_back();
        w.experts_up.emplace_back();
        w.experts_down.emplace_back();
        continue;
      }
      w.experts_gate.push_back(l.weight(e + "gate_proj", f, d, format));
      w.experts_up.push_back(l.weight(e + "up_proj", f, d, format));
      w.experts_down.push_back(l.weight(e + "down_proj", d, f, format));
    }
    if (experts.own_memory) m.expert_memory_.push_back(copy_experts_to_own_memory(w));
    if (s > 0) {
      w.shared_gate = l.weight(p + "mlp.shared_expert.gate_proj", s, d, format);
      w.shared_up = l.weight(p + "mlp.shared_expert.up_proj", s, d, format);
      w.shared_down = l.weight(p + "mlp.shared_expert.down_proj", d, s, format);
    }
    layer.moe = std::make_unique<moe::MoeLayer>(moe::MoeLayer::for_inference(moe_cfg, std::move(w)));
    m.layers_.push_back(std::move(layer));
  }
  l.report_unused();
  m.checkpoint_ = l.release();
  return m;
}

void Model::set_routing_trace(RoutingTrace* trace) const {
  trace_ = trace;
  if (!trace) return;
  trace->top_k = cfg_.num_experts_per_tok;
  trace->num_experts = cfg_.num_experts;
  trace->expert.assign(layers_.size(), {});
}

size_t Model::decode_weight_bytes() const {
  const ModelConfig& c = cfg_;
  size_t total = lm_head_.weight.bytes() + size_t(c.hidden_size) * 4;  // + final norm
  for (const DecoderLayer& layer : layers_) {
    for (const Linear* lin : {&layer.q, &layer.k, &layer.v, &layer.o})
      total += lin->weight.bytes() + size_t(lin->bias.numel()) * 4;
    const moe::MoeInferenceWeights& w = layer.moe->inference_weights();
    total += size_t(w.gate.numel() + w.router_scale.numel()) * 4;
    size_t experts = 0, held = 0;  // a token reads K experts: K times the mean expert held here
    for (size_t j = 0; j < w.experts_gate.size(); ++j) {
      experts += w.experts_gate[j].bytes() + w.experts_up[j].bytes() + w.experts_down[j].bytes();
      held += w.experts_gate[j].empty() ? 0 : 1;
    }
    if (held > 0) total += experts / held * size_t(c.num_experts_per_tok);
    total += w.shared_gate.bytes() + w.shared_up.bytes() + w.shared_down.bytes();
    total += size_t(2 * c.hidden_size) * 4;  // norms
  }
  return total;
}

void Model::forward(const int32_t* tokens, int64_t n, KvCache& cache, float* logits, int64_t logit_rows) const {
  const ModelConfig& c = cfg_;
  const int64_t d = c.hidden_size, pos0 = cache.length;
  check(pos0 + n <= cache.capacity, "context of " + std::to_string(pos0 + n) + " tokens exceeds the KV cache (" +
                                        std::to_string(cache.capacity) + ")");
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size)  // message built only on failure: a per-token loop
      throw Error("token id " + std::to_string(tokens[t]) + " is outside the vocabulary (" +
                  std::to_string(c.vocab_size) + ")");

  // Phase timing: each lap adds the time since the previous one to a part (a few clock reads a
  // layer; nothing when no PhaseTimes is set).
  auto lap_start = std::chrono::steady_clock::now();
  auto lap = [&](double PhaseTimes::*part) {
    if (!phases_) return;
    const auto now = std::chrono::steady_clock::now();
    phases_->*part += std::chrono::duration<double>(now - lap_start).count();
    lap_start = now;
  };
  std::vector<float> x(n * d), normed(n * d), q(n * c.q_dim()), att(n * c.q_dim()), tmp(n * d);
  for (int64_t t = 0; t < n; ++t) {
    if (embed_.dtype() == DType::f32) std::memcpy(&x[t * d], embed_.f32() + int64_t(tokens[t]) * d, d * sizeof(float));
    else bf16_to_f32(embed_.bf16_data() + int64_t(tokens[t]) * d, &x[t * d], d);
  }
  lap(&PhaseTimes::embed);

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
    lap(&PhaseTimes::attention);

    kernels::rmsnorm_forward(x.data(), layer.post_norm.f32(), normed.data(), n, d, c.rms_norm_eps);
    if (moe_runner_) moe_runner_->run(int(i), *layer.moe, normed.data(), n, tmp.data(), moe_cache);
    else layer.moe->forward(normed.data(), n, tmp.data(), moe_cache);
    if (trace_) {
      const auto& chosen = moe_cache.routing.expert;
      trace_->expert[i].insert(trace_->expert[i].end(), chosen.begin(), chosen.end());
    }
    for (int64_t j = 0; j < n * d; ++j) x[j] += tmp[j];
    lap(&PhaseTimes::moe);
  }
  cache.length = pos0 + n;

  const int64_t rows = logit_rows < 0 ? n : std::min(logit_rows, n);
  const float* last = x.data() + (n - rows) * d;
  kernels::rmsnorm_forward(last, final_norm_.f32(), normed.data(), rows, d, c.rms_norm_eps);
  lm_head_.forward(normed.data(), rows, logits);
  lap(&PhaseTimes::head);
}

}  // namespace moge::model
