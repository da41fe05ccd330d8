#include "moge/train/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "moge/core/buffer.h"
#include "moge/core/error.h"
#include "moge/kernels/add.h"
#include "moge/kernels/attention.h"
#include "moge/kernels/cross_entropy.h"
#include "moge/kernels/embedding.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/rmsnorm.h"
#include "moge/kernels/rope.h"
#include "moge/kernels/transpose.h"
#include "moge/model/random_init.h"

namespace moge::train {

using kernels::add_into;
using kernels::MatRef;

namespace {

// Rows of one block of the head and the cross-entropy: their logits (rows × vocab floats, 1 MiB
// for a 4096 vocabulary) stay in L2 between the GEMM that writes them and the passes that read them.
constexpr int64_t kHeadRows = 64;

// y[rows, out] = x[rows, in] · Wᵀ + b.
void linear_forward(const float* x, int64_t rows, const Tensor& w, const Tensor& b, float* y) {
  const int64_t out = w.dim(0), in = w.dim(1);
  kernels::matmul(rows, out, in, MatRef::f32(x, in), MatRef::f32(w.f32(), in, true), y, out);
  const float* bias = b.f32();
#pragma omp parallel for schedule(static) if (rows * out > 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) y[r * out + j] += bias[j];
}

// Columns of a bias gradient one thread sums at a time.
constexpr int64_t kBiasColumns = 64;

// From dy[rows, out]: dx (= dy · W, overwritten, or added when accumulate_dx), dW += dyᵀ · x,
// db += Σ_rows dy (blocks of columns in parallel, each column's rows in order: deterministic).
void linear_backward(const float* x, int64_t rows, const Tensor& w, const float* dy, float* dx, bool accumulate_dx,
                     Tensor& dw, Tensor& db) {
  const int64_t out = w.dim(0), in = w.dim(1);
  kernels::matmul(rows, in, out, MatRef::f32(dy, out), MatRef::f32(w.f32(), in), dx, in, accumulate_dx);
  kernels::matmul(out, in, rows, MatRef::f32(dy, out, true), MatRef::f32(x, in), dw.f32(), in, true);
  float* g = db.f32();
  const int64_t blocks = (out + kBiasColumns - 1) / kBiasColumns;
#pragma omp parallel for schedule(static) if (rows * out > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    // Rows walked in memory order, a block's column sums side by side (vectorized); each column
    // still adds its rows in order, so the sums are those of a column-by-column loop.
    const int64_t j0 = b * kBiasColumns, width = std::min(kBiasColumns, out - j0);
    float s[kBiasColumns] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * out + j0;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) s[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) g[j0 + j] += s[j];
  }
}

}  // namespace

struct TrainableDecoder::Layer {
  Tensor input_norm, post_norm;
  Tensor wq, bq, wk, bk, wv, bv, wo, bo;
  Tensor d_input_norm, d_post_norm;
  Tensor dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo;
  std::unique_ptr<moe::MoeLayer> moe;
  moe::MoeWeights d_moe;

  explicit Layer(const model::ModelConfig& c) {
    const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
    for (Tensor* t : {&input_norm, &post_norm, &d_input_norm, &d_post_norm}) *t = Tensor({d});
    input_norm.fill(1.0f);
    post_norm.fill(1.0f);
    wq = Tensor({qd, d}), wk = Tensor({kvd, d}), wv = Tensor({kvd, d}), wo = Tensor({d, qd});
    bq = Tensor({qd}), bk = Tensor({kvd}), bv = Tensor({kvd}), bo = Tensor({d});
    dwq = Tensor({qd, d}), dwk = Tensor({kvd, d}), dwv = Tensor({kvd, d}), dwo = Tensor({d, qd});
    dbq = Tensor({qd}), dbk = Tensor({kvd}), dbv = Tensor({kvd}), dbo = Tensor({d});
    moe = std::make_unique<moe::MoeLayer>(c.moe_config());
    d_moe = moe::MoeWeights::zeros(c.moe_config());
  }
};

// What one forward keeps for the backward, per layer and at the top. Sized on demand.
struct TrainableDecoder::Activations {
  struct PerLayer {
    std::vector<float> x, n1, q, k, v, att, lse, h, n2;
    moe::MoeCache moe;
  };
  std::vector<PerLayer> layers;
  std::vector<float> x_final, n_final, logits;  // logits become their gradient after a backward pass
  std::vector<float> d_n_final;                 // the head's gradient of n_final (training forward)
  std::vector<double> block_loss;               // cross-entropy of each block of rows
  std::vector<float> d_head_t;                  // backward scratch: the head's gradient transposed
  int batch = 0, seq = 0;
};

TrainableDecoder::TrainableDecoder(const model::ModelConfig& cfg) : cfg_(cfg), act_(std::make_unique<Activations>()) {
  cfg_.moe_config().validate();
  const int64_t d = cfg.hidden_size, v = cfg.vocab_size;
  embed_ = Tensor({v, d}), d_embed_ = Tensor({v, d});
  final_norm_ = Tensor({d}), d_final_norm_ = Tensor({d});
  final_norm_.fill(1.0f);
  if (!cfg.tie_word_embeddings) lm_head_ = Tensor({v, d}), d_lm_head_ = Tensor({v, d});
  for (int i = 0; i < cfg.num_hidden_layers; ++i) layers_.push_back(std::make_unique<Layer>(cfg));
}

TrainableDecoder::TrainableDecoder(TrainableDecoder&&) noexcept = default;
TrainableDecoder& TrainableDecoder::operator=(TrainableDecoder&&) noexcept = default;
TrainableDecoder::~TrainableDecoder() = default;

std::vector<model::NamedTensor> TrainableDecoder::checkpoint_tensors() const { return layout(false); }
std::vector<model::NamedTensor> TrainableDecoder::checkpoint_gradients() const { return layout(true); }

std::vector<model::NamedTensor> TrainableDecoder::layout(bool gradients) const {
  std::vector<model::NamedTensor> out;
  auto add = [&](const std::string& name, const float* data, Shape shape) {
    out.push_back({name, model::StDType::F32, std::move(shape), data});
  };
  auto whole = [&](const std::string& name, const Tensor& t) { add(name, t.f32(), t.shape()); };
  const int64_t n = cfg_.num_experts;
  const bool g = gradients;
  whole("model.embed_tokens.weight", g ? d_embed_ : embed_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    whole(p + "input_layernorm.weight", g ? l.d_input_norm : l.input_norm);
    const std::pair<const char*, std::pair<const Tensor*, const Tensor*>> attn[] = {
        {"q_proj", {g ? &l.dwq : &l.wq, g ? &l.dbq : &l.bq}},
        {"k_proj", {g ? &l.dwk : &l.wk, g ? &l.dbk : &l.bk}},
        {"v_proj", {g ? &l.dwv : &l.wv, g ? &l.dbv : &l.bv}},
        {"o_proj", {g ? &l.dwo : &l.wo, g ? &l.dbo : &l.bo}}};
    for (const auto& [name, wb] : attn) {
      whole(p + "self_attn." + name + ".weight", *wb.first);
      whole(p + "self_attn." + name + ".bias", *wb.second);
    }
    whole(p + "post_attention_layernorm.weight", g ? l.d_post_norm : l.post_norm);
    const moe::MoeWeights& w = g ? l.d_moe : l.moe->weights();
    whole(p + "mlp.gate.weight", w.gate);
    whole(p + "mlp.router_scale", w.router_scale);
    for (int64_t j = 0; j < n; ++j) {
      const std::string e = p + "mlp.experts." + std::to_string(j) + ".";
      for (auto [name, t] : {std::pair{"gate_proj", &w.experts_gate}, {"up_proj", &w.experts_up},
                             {"down_proj", &w.experts_down}}) {
        const int64_t rows = t->dim(1), cols = t->dim(2);
        add(e + name + ".weight", t->f32() + j * rows * cols, {rows, cols});
      }
    }
    if (cfg_.shared_expert_intermediate_size > 0) {
      whole(p + "mlp.shared_expert.gate_proj.weight", w.shared_gate);
      whole(p + "mlp.shared_expert.up_proj.weight", w.shared_up);
      whole(p + "mlp.shared_expert.down_proj.weight", w.shared_down);
    }
  }
  whole("model.norm.weight", g ? d_final_norm_ : final_norm_);
  if (!cfg_.tie_word_embeddings) whole("lm_head.weight", g ? d_lm_head_ : lm_head_);
  return out;
}

TrainableDecoder TrainableDecoder::random(const model::ModelConfig& cfg, uint64_t seed) {
  TrainableDecoder m(cfg);
  auto tensors = m.checkpoint_tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    Tensor t(tensors[i].shape);
    model::init_checkpoint_tensor(t, tensors[i].name, i, seed);
    std::memcpy(const_cast<void*>(tensors[i].data), t.raw(), t.bytes());
  }
  return m;
}

TrainableDecoder TrainableDecoder::load(const std::string& dir) {
  TrainableDecoder m(model::ModelConfig::from_file(dir + "/config.json"));
  model::Checkpoint ckpt(dir);
  std::set<std::string> used;
  for (const model::NamedTensor& t : m.checkpoint_tensors()) {
    Tensor value = ckpt.load_f32(t.name, t.shape);
    std::memcpy(const_cast<void*>(t.data), value.raw(), value.bytes());
    used.insert(t.name);
  }
  auto extra = ckpt.unexpected(used);
  check(extra.empty(), ckpt.path() + ": tensor '" + (extra.empty() ? "" : extra[0]) +
                           "' is not part of this model (a quantized or different checkpoint?)");
  return m;
}

std::vector<Param> TrainableDecoder::parameters() {
  std::vector<Param> ps;
  ps.push_back({"model.embed_tokens.weight", &embed_, &d_embed_, true});
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = *layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    ps.push_back({p + "input_layernorm.weight", &l.input_norm, &l.d_input_norm, false});
    ps.push_back({p + "self_attn.q_proj.weight", &l.wq, &l.dwq, true});
    ps.push_back({p + "self_attn.q_proj.bias", &l.bq, &l.dbq, false});
    ps.push_back({p + "self_attn.k_proj.weight", &l.wk, &l.dwk, true});
    ps.push_back({p + "self_attn.k_proj.bias", &l.bk, &l.dbk, false});
    ps.push_back({p + "self_attn.v_proj.weight", &l.wv, &l.dwv, true});
    ps.push_back({p + "self_attn.v_proj.bias", &l.bv, &l.dbv, false});
    ps.push_back({p + "self_attn.o_proj.weight", &l.wo, &l.dwo, true});
    ps.push_back({p + "self_attn.o_proj.bias", &l.bo, &l.dbo, false});
    ps.push_back({p + "post_attention_layernorm.weight", &l.post_norm, &l.d_post_norm, false});
    auto values = l.moe->mutable_weights().named();
    auto grads = l.d_moe.named();
    for (size_t j = 0; j < values.size(); ++j) {
      if (values[j].second->empty()) continue;  // no shared expert
      const std::string name = values[j].first;
      ps.push_back({p + "mlp." + name, values[j].second, grads[j].second, name != "router_scale",
                    name.rfind("experts_", 0) == 0});
    }
  }
  ps.push_back({"model.norm.weight", &final_norm_, &d_final_norm_, false});
  if (!cfg_.tie_word_embeddings) ps.push_back({"lm_head.weight", &lm_head_, &d_lm_head_, true});
  return ps;
}

int64_t TrainableDecoder::parameter_count() const {
  int64_t n = 0;
  for (const auto& t : checkpoint_tensors()) n += shape_numel(t.shape);
  return n;
}

void TrainableDecoder::zero_grad() {
  for (const Param& p : parameters()) p.grad->fill(0.0f);
}

LossParts TrainableDecoder::forward(const int32_t* inputs, const int32_t* targets, int batch, int seq,
                                    bool keep_logit_grads, float scale) {
  const model::ModelConfig& c = cfg_;
  check(batch > 0 && seq > 0, "forward: batch and seq must be positive");
  check(seq <= c.max_position_embeddings || c.max_position_embeddings == 0,
        "sequence length " + std::to_string(seq) + " exceeds max_position_embeddings");
  const int64_t rows = int64_t(batch) * seq, d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), v = c.vocab_size;
  for (int64_t i = 0; i < rows; ++i)
    if (inputs[i] < 0 || inputs[i] >= v)  // message built only on failure: a per-token loop
      throw Error("token id " + std::to_string(inputs[i]) + " outside the vocabulary");
  Activations& a = *act_;
  a.batch = batch, a.seq = seq;
  a.layers.resize(layers_.size());
  const kernels::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};

  std::vector<float> x(rows * d);
  kernels::embedding_forward(embed_.f32(), inputs, rows, d, x.data());
  LossParts loss;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    Activations::PerLayer& s = a.layers[i];
    s.x = x;
    s.n1.resize(rows * d), s.q.resize(rows * qd), s.k.resize(rows * kvd), s.v.resize(rows * kvd);
    s.att.resize(rows * qd), s.lse.resize(rows * c.num_attention_heads), s.h.resize(rows * d), s.n2.resize(rows * d);
    kernels::rmsnorm_forward(s.x.data(), l.input_norm.f32(), s.n1.data(), rows, d, c.rms_norm_eps);
    linear_forward(s.n1.data(), rows, l.wq, l.bq, s.q.data());
    linear_forward(s.n1.data(), rows, l.wk, l.bk, s.k.data());
    linear_forward(s.n1.data(), rows, l.wv, l.bv, s.v.data());
    for (int b = 0; b < batch; ++b) {
      const int64_t r0 = int64_t(b) * seq;
      kernels::rope_apply(s.q.data() + r0 * qd, seq, c.num_attention_heads, c.head_dim, 0, c.rope_theta);
      kernels::rope_apply(s.k.data() + r0 * kvd, seq, c.num_key_value_heads, c.head_dim, 0, c.rope_theta);
      kernels::attention_forward_train(s.q.data() + r0 * qd, s.k.data() + r0 * kvd, s.v.data() + r0 * kvd,
                                       s.att.data() + r0 * qd, s.lse.data() + r0 * c.num_attention_heads, seq, shape);
    }
    linear_forward(s.att.data(), rows, l.wo, l.bo, s.h.data());
    add_into(s.h.data(), s.x.data(), rows * d);
    kernels::rmsnorm_forward(s.h.data(), l.post_norm.f32(), s.n2.data(), rows, d, c.rms_norm_eps);
    loss.aux += runner_ ? runner_->forward(int(i), *l.moe, s.n2.data(), rows, x.data(), s.moe)
                        : l.moe->forward(s.n2.data(), rows, x.data(), s.moe);
    add_into(x.data(), s.h.data(), rows * d);
  }
  a.x_final = std::move(x);
  a.n_final.resize(rows * d);
  a.logits.resize(rows * v);
  kernels::rmsnorm_forward(a.x_final.data(), final_norm_.f32(), a.n_final.data(), rows, d, c.rms_norm_eps);
  const Tensor& head = c.tie_word_embeddings ? embed_ : lm_head_;

  for (int64_t i = 0; i < rows; ++i) {
    if (targets[i] != kernels::kIgnoreTarget && (targets[i] < 0 || targets[i] >= v))
      throw Error("target id " + std::to_string(targets[i]) + " outside the vocabulary");
    loss.targets += targets[i] != kernels::kIgnoreTarget;
  }
  const float ce_scale = loss.targets > 0 ? scale / float(loss.targets) : 0.0f;
  // The head and the loss a block of rows at a time, each block's logits still in cache for the
  // cross-entropy and, in training, for the head's gradient of n_final (dn = dlogits · head),
  // which would otherwise re-read all rows × vocab logits from memory. Blocks are the units of an
  // OpenMP loop whose products run on one thread each. The logit gradients stay in a.logits for
  // the head's weight gradient in backward().
  const int64_t blocks = (rows + kHeadRows - 1) / kHeadRows;
  if (keep_logit_grads) a.d_n_final.resize(rows * d);
  a.block_loss.assign(size_t(blocks), 0.0);
  const float* n_final = a.n_final.data();
  float* logits = a.logits.data();
  float* d_n_final = keep_logit_grads ? a.d_n_final.data() : nullptr;
  double* block_loss = a.block_loss.data();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * kHeadRows, n = std::min(kHeadRows, rows - r0);
    float* lg = logits + r0 * v;
    kernels::matmul(n, v, d, MatRef::f32(n_final + r0 * d, d), MatRef::f32(head.f32(), d, true), lg, v);
    block_loss[b] = kernels::cross_entropy_forward_backward(lg, targets + r0, n, v, d_n_final ? lg : nullptr, ce_scale);
    if (d_n_final) kernels::matmul(n, d, v, MatRef::f32(lg, v), MatRef::f32(head.f32(), d), d_n_final + r0 * d, d);
  }
  double ce_sum = 0;
  for (double l : a.block_loss) ce_sum += l;  // in block order, whatever thread computed each
  loss.ce = loss.targets > 0 ? ce_sum / double(loss.targets) : 0.0;
  return loss;
}

void TrainableDecoder::backward(const int32_t* inputs, int batch, int seq, float scale) {
  const model::ModelConfig& c = cfg_;
  Activations& a = *act_;
  const int64_t rows = int64_t(batch) * seq, d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), v = c.vocab_size;
  const kernels::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};

  // Head: logits = n_final · headᵀ (a.logits now holds d logits).
  Tensor& d_head = c.tie_word_embeddings ? d_embed_ : d_lm_head_;
  std::vector<float> dn(rows * d), dx(rows * d), dh(rows * d);
  // dn = dlogits · head came with the forward (a.d_n_final).
  // d_head += dlogitsᵀ · n_final, computed as its transpose n_finalᵀ · dlogits [d, vocab] (dlogits
  // read row-major: 1.4x faster in oneDNN than with the transposed [vocab, rows] operand), then
  // added transposed, in blocks of 64 vocabulary rows.
  float* head_t = sized(a.d_head_t, size_t(d * v));
  kernels::matmul(d, v, rows, MatRef::f32(a.n_final.data(), d, true), MatRef::f32(a.logits.data(), v), head_t, v);
  float* dh_out = d_head.f32();
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < v; j0 += 64)
    kernels::transpose(head_t + j0, d, std::min<int64_t>(64, v - j0), v, dh_out + j0 * d, d, true);
  kernels::rmsnorm_backward(a.x_final.data(), final_norm_.f32(), a.d_n_final.data(), dx.data(), d_final_norm_.f32(),
                            rows, d, c.rms_norm_eps);

  std::vector<float> dq(rows * qd), dk(rows * kvd), dv(rows * kvd), datt(rows * qd);
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& l = *layers_[i];
    Activations::PerLayer& s = a.layers[i];
    // x_out = h + moe(n2): dx flows to h directly and through the MoE and the post norm.
    if (runner_) runner_->backward(int(i), *l.moe, s.n2.data(), s.moe, dx.data(), scale, dn.data(), l.d_moe);
    else l.moe->backward(s.n2.data(), s.moe, dx.data(), scale, dn.data(), l.d_moe);
    kernels::rmsnorm_backward(s.h.data(), l.post_norm.f32(), dn.data(), dh.data(), l.d_post_norm.f32(), rows, d,
                              c.rms_norm_eps);
    add_into(dh.data(), dx.data(), rows * d);
    // h = x + o_proj(att): dh flows to x directly and through attention.
    linear_backward(s.att.data(), rows, l.wo, dh.data(), datt.data(), false, l.dwo, l.dbo);
    for (int b = 0; b < batch; ++b) {
      const int64_t r0 = int64_t(b) * seq;
      kernels::attention_backward(s.q.data() + r0 * qd, s.k.data() + r0 * kvd, s.v.data() + r0 * kvd,
                                  s.att.data() + r0 * qd, s.lse.data() + r0 * c.num_attention_heads,
                                  datt.data() + r0 * qd, dq.data() + r0 * qd, dk.data() + r0 * kvd,
                                  dv.data() + r0 * kvd, seq, shape);
      kernels::rope_backward(dq.data() + r0 * qd, seq, c.num_attention_heads, c.head_dim, 0, c.rope_theta);
      kernels::rope_backward(dk.data() + r0 * kvd, seq, c.num_key_value_heads, c.head_dim, 0, c.rope_theta);
    }
    linear_backward(s.n1.data(), rows, l.wq, dq.data(), dn.data(), false, l.dwq, l.dbq);
    linear_backward(s.n1.data(), rows, l.wk, dk.data(), dn.data(), true, l.dwk, l.dbk);
    linear_backward(s.n1.data(), rows, l.wv, dv.data(), dn.data(), true, l.dwv, l.dbv);
    kernels::rmsnorm_backward(s.x.data(), l.input_norm.f32(), dn.data(), dx.data(), l.d_input_norm.f32(), rows, d,
                              c.rms_norm_eps);
    add_into(dx.data(), dh.data(), rows * d);
  }
  kernels::embedding_backward(inputs, rows, dx.data(), d, d_embed_.f32());
}

LossParts TrainableDecoder::forward_backward(const int32_t* inputs, const int32_t* targets, int batch, int seq,
                                             float scale) {
  LossParts loss = forward(inputs, targets, batch, seq, true, scale);
  backward(inputs, batch, seq, scale);
  return loss;
}

LossParts TrainableDecoder::evaluate(const int32_t* inputs, const int32_t* targets, int batch, int seq) {
  return forward(inputs, targets, batch, seq, false, 1.0f);
}

std::vector<std::vector<int64_t>> TrainableDecoder::expert_counts() const {
  std::vector<std::vector<int64_t>> counts;
  for (const auto& s : act_->layers) {
    std::vector<int64_t> c(cfg_.num_experts, 0);
    for (int32_t e : s.moe.routing.expert) ++c[e];
    counts.push_back(std::move(c));
  }
  return counts;
}

const std::vector<float>& TrainableDecoder::last_logits() const { return act_->logits; }

}  // namespace moge::train
