#include "moge/infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "moge/core/error.h"

namespace moge::infer {

void SamplerConfig::validate() const {
  check(temperature >= 0, "--temp must be >= 0");
  check(top_k >= 0, "--top-k must be >= 0");
  check(top_p > 0 && top_p <= 1, "--top-p must be in (0, 1]");
  check(repetition_penalty > 0, "--repeat-penalty must be > 0");
  check(penalty_window >= 0, "--repeat-last-n must be >= 0");
}

int32_t Sampler::sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  candidates_.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], int32_t(i)};

  if (cfg_.repetition_penalty != 1.0f) {  // as in CTRL / llama.cpp: shrink positive, grow negative
    const size_t start = history.size() > size_t(cfg_.penalty_window) ? history.size() - cfg_.penalty_window : 0;
    std::vector<bool> seen(vocab, false);
    for (size_t i = start; i < history.size(); ++i)
      if (history[i] >= 0 && history[i] < vocab) seen[history[i]] = true;
    for (auto& [logit, id] : candidates_)
      if (seen[id]) logit = logit > 0 ? logit / cfg_.repetition_penalty : logit * cfg_.repetition_penalty;
  }

  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (cfg_.temperature == 0.0f) return std::min_element(candidates_.begin(), candidates_.end(), by_logit)->second;

  size_t keep = cfg_.top_k > 0 ? std::min<size_t>(cfg_.top_k, candidates_.size()) : candidates_.size();
  std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  candidates_.resize(keep);

  const float max_logit = candidates_.front().first;
  double sum = 0;
  for (auto& [logit, id] : candidates_) sum += (logit = std::exp((logit - max_logit) / cfg_.temperature));
  // Nucleus: the smallest prefix whose probability reaches top_p.
  double mass = 0;
  size_t n = 0;
  while (n < candidates_.size()) {
    mass += candidates_[n++].first / sum;
    if (mass >= cfg_.top_p) break;
  }
  double r = rng_.uniform() * (cfg_.top_p < 1 ? mass : 1.0) * sum;
  for (size_t i = 0; i < n; ++i) {
    r -= candidates_[i].first;
    if (r <= 0) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

}  // namespace moge::infer
