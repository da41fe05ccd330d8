#pragma once
// Generator: one sequence's decoding loop over a Model and its KV cache. set_context() reuses
// the cached prefix it shares with the new context (multi-turn chat re-renders the whole
// conversation each turn), prefills the rest in one pass, then generate() decodes token by token.
#include <cstdint>
#include <functional>
#include <vector>

#include "moge/infer/sampler.h"
#include "moge/model/model.h"

namespace moge::infer {

struct GenerationStats {
  int64_t prompt_tokens = 0;  // tokens prefilled by the last set_context (after the reused prefix)
  int64_t generated = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

class Generator {
 public:
  Generator(const model::Model& model, int64_t context_size);

  // Makes `tokens` the sequence; only the part after the common prefix with the cache is run.
  void set_context(const std::vector<int32_t>& tokens);
  // Samples up to `max_tokens` tokens after the context. on_token(id) is called for each and may
  // return false to stop; a token for which is_stop(id) holds ends generation without being
  // passed on (nor kept in the context). Stops at the end of the context window too.
  void generate(Sampler& sampler, int max_tokens, const std::function<bool(int32_t)>& is_stop,
                const std::function<bool(int32_t)>& on_token);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  const GenerationStats& stats() const { return stats_; }

 private:
  const model::Model& model_;
  model::KvCache cache_;
  std::vector<int32_t> tokens_;  // what the cache holds, plus at most one token not yet run
  std::vector<float> logits_;    // of the last token run
  GenerationStats stats_;
};

}  // namespace moge::infer
