#pragma once
// Sampler: picks the next token from logits. temperature 0 = greedy (ties -> lowest id).
// Otherwise, in llama.cpp's order: repetition penalty on recent tokens, top-k, temperature,
// softmax, top-p (nucleus), then a draw from a seeded generator.
#include <cstdint>
#include <vector>

#include "moge/core/rng.h"

namespace moge::infer {

struct SamplerConfig {
  float temperature = 0.8f;
  int top_k = 40;               // 0 = all
  float top_p = 0.95f;          // 1 = all
  float repetition_penalty = 1.0f;  // > 1 discourages tokens seen in the last `penalty_window`
  int penalty_window = 64;
  uint64_t seed = 0;

  void validate() const;  // throws Error naming the flag (--temp, --top-k, ...)
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) { cfg.validate(); }

  // `history`: the tokens so far (prompt and generated), for the repetition penalty.
  int32_t sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history);

 private:
  SamplerConfig cfg_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace moge::infer
