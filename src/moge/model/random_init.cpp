#include "moge/model/random_init.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/rng.h"
#include "moge/model/safetensors.h"

namespace moge::model {

std::vector<std::pair<std::string, Shape>> checkpoint_tensors(const ModelConfig& c) {
  const int64_t d = c.hidden_size, v = c.vocab_size, n = c.num_experts, f = c.moe_intermediate_size,
                s = c.shared_expert_intermediate_size;
  std::vector<std::pair<std::string, Shape>> t;
  t.push_back({"model.embed_tokens.weight", {v, d}});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {d}});
    for (auto [name, out, in] : {std::tuple{"q_proj", c.q_dim(), d}, std::tuple{"k_proj", c.kv_dim(), d},
                                 std::tuple{"v_proj", c.kv_dim(), d}, std::tuple{"o_proj", d, c.q_dim()}}) {
      t.push_back({p + "self_attn." + name + ".weight", {out, in}});
      t.push_back({p + "self_attn." + name + ".bias", {out}});
    }
    t.push_back({p + "post_attention_layernorm.weight", {d}});
    t.push_back({p + "mlp.gate.weight", {n, d}});
    t.push_back({p + "mlp.router_scale", {1, n}});
    for (int64_t j = 0; j < n; ++j) {
      const std::string e = p + "mlp.experts." + std::to_string(j) + ".";
      t.push_back({e + "gate_proj.weight", {f, d}});
      t.push_back({e + "up_proj.weight", {f, d}});
      t.push_back({e + "down_proj.weight", {d, f}});
    }
    if (s > 0) {
      t.push_back({p + "mlp.shared_expert.gate_proj.weight", {s, d}});
      t.push_back({p + "mlp.shared_expert.up_proj.weight", {s, d}});
      t.push_back({p + "mlp.shared_expert.down_proj.weight", {d, s}});
    }
  }
  t.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {v, d}});
  return t;
}

namespace {

// Fills t (f32) for tensor `name`; chunks have their own generators so threads do not matter.
void fill(Tensor& t, const std::string& name, uint64_t seed) {
  float* p = t.f32();
  const int64_t n = t.numel();
  if (name.ends_with("layernorm.weight") || name.ends_with("norm.weight") || name.ends_with("router_scale")) {
    t.fill(1.0f);
    return;
  }
  if (name.ends_with(".bias")) return;  // zeros
  // Every matrix N(0, 1/fan_in), the embedding N(0, 1/d) too: with tied embeddings it is the
  // output layer, and the logits of a unit-RMS hidden state then start with unit variance.
  const float sd = float(1.0 / std::sqrt(double(t.dim(-1))));
  constexpr int64_t kChunk = 1 << 16;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
    Rng rng(seed * 0x9e3779b97f4a7c15ull + uint64_t(c));
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) p[i] = rng.normal() * sd;
  }
}

}  // namespace

void init_checkpoint_tensor(Tensor& t, const std::string& name, size_t index, uint64_t seed) {
  fill(t, name, seed + 1000003ull * index);
}

void write_random_model(const ModelConfig& cfg, const std::string& config_json, const std::string& dir, DType dtype,
                        uint64_t seed, size_t shard_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  check(!ec, dir + ": cannot create directory: " + ec.message());
  write_file_atomically(dir + "/config.json", config_json);

  auto names = checkpoint_tensors(cfg);
  std::vector<Tensor> storage;
  storage.reserve(names.size());
  std::vector<NamedTensor> tensors;
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& [name, shape] = names[i];
    Tensor t(shape);
    init_checkpoint_tensor(t, name, i, seed);
    storage.push_back(dtype == DType::f32 ? std::move(t) : t.to(dtype));
    tensors.push_back({name, dtype == DType::f32 ? StDType::F32 : StDType::BF16, shape, storage.back().raw()});
    if (i % 64 == 0 || i + 1 == names.size())
      std::fprintf(stderr, "\rinit: %zu/%zu tensors", i + 1, names.size());
  }
  std::fprintf(stderr, "\rinit: writing %s%20s\n", dir.c_str(), "");
  write_sharded(dir, tensors, shard_bytes);
}

}  // namespace moge::model
