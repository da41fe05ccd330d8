#pragma once
// A random model in the exact Hugging Face layout: for benchmarks, tests, and as the starting
// point of training. Weights: embeddings N(0, 1/d); linear weights N(0, 1/fan_in); the router
// gate N(0, 1/d); biases 0; norms and router_scale 1. Deterministic for a seed, whatever the threads.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moge/core/dtype.h"
#include "moge/core/tensor.h"
#include "moge/model/config.h"

namespace moge::model {

// Every tensor of a checkpoint of this config, HF names and shapes, in file order.
std::vector<std::pair<std::string, Shape>> checkpoint_tensors(const ModelConfig& cfg);

// Fills t (f32, shaped as checkpoint tensor number `index` named `name`) with that tensor's
// random init for `seed`: what write_random_model writes (before any bf16 rounding).
void init_checkpoint_tensor(Tensor& t, const std::string& name, size_t index, uint64_t seed);

// Writes DIR/config.json (config_json verbatim) and sharded safetensors (shards of at most
// shard_bytes) in f32 or bf16. Progress on stderr. Throws Error naming the directory.
void write_random_model(const ModelConfig& cfg, const std::string& config_json, const std::string& dir, DType dtype,
                        uint64_t seed, size_t shard_bytes = size_t(2) << 30);

}  // namespace moge::model
