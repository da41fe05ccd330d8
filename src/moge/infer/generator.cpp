#include "moge/infer/generator.h"

#include <algorithm>
#include <chrono>

#include "moge/core/clock.h"
#include "moge/core/error.h"

namespace moge::infer {

Generator::Generator(const model::Model& model, int64_t context_size)
    : model_(model), cache_(model.config(), context_size), logits_(model.config().vocab_size) {}

void Generator::set_context(const std::vector<int32_t>& tokens) {
  check(!tokens.empty(), "the prompt encodes to no tokens");
  check(int64_t(tokens.size()) <= cache_.capacity, "the prompt has " + std::to_string(tokens.size()) +
                                                       " tokens, more than the context size " +
                                                       std::to_string(cache_.capacity));
  // Reuse the cached prefix, but always run at least the last token to get its logits.
  int64_t keep = 0;
  while (keep < cache_.length && keep + 1 < int64_t(tokens.size()) && tokens_[keep] == tokens[keep]) ++keep;
  cache_.length = keep;
  tokens_ = tokens;
  auto t0 = std::chrono::steady_clock::now();
  model_.forward(tokens.data() + keep, int64_t(tokens.size()) - keep, cache_, logits_.data(), 1);
  stats_ = {int64_t(tokens.size()) - keep, 0, seconds_since(t0), 0};
}

void Generator::generate(Sampler& sampler, int max_tokens, const std::function<bool(int32_t)>& is_stop,
                         const std::function<bool(int32_t)>& on_token) {
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < max_tokens; ++i) {
    const int32_t next = sampler.sample(logits_.data(), int64_t(logits_.size()), tokens_);
    if (is_stop(next)) break;
    tokens_.push_back(next);
    ++stats_.generated;
    if (!on_token(next) || i + 1 == max_tokens || cache_.length >= cache_.capacity) break;
    model_.forward(&next, 1, cache_, logits_.data());
  }
  stats_.decode_seconds = seconds_since(t0);
}

}  // namespace moge::infer
