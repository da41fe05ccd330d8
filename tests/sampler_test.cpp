// infer::Sampler: greedy, top-k, top-p, temperature and repetition penalty, checked against
// probabilities computed here by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "moge/core/error.h"
#include "moge/infer/sampler.h"

namespace moge::infer {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f};

TEST(Sampler, GreedyTakesTheLowestIdOfTheMaximum) {
  Sampler s({0.0f, 0, 1.0f, 1.0f, 64, 1});
  EXPECT_EQ(s.sample(kLogits.data(), 6, {}), 1);
}

TEST(Sampler, FrequenciesFollowTheSoftmaxAtTemperature) {
  const float temp = 0.7f;
  Sampler s({temp, 0, 1.0f, 1.0f, 64, 42});
  std::vector<double> p(6);
  double z = 0;
  for (int i = 0; i < 6; ++i) z += (p[i] = std::exp(kLogits[i] / temp));
  std::vector<int> counts(6, 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) ++counts[s.sample(kLogits.data(), 6, {})];
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(counts[i] / double(draws), p[i] / z, 0.01) << "token " << i;
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  Sampler top2({1.0f, 2, 1.0f, 1.0f, 64, 7});
  for (int i = 0; i < 2000; ++i) {
    int32_t t = top2.sample(kLogits.data(), 6, {});
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  // p = softmax: tokens 1 and 3 hold ~0.33 each, token 2 ~0.12: top_p 0.6 keeps exactly {1, 3}.
  Sampler nucleus({1.0f, 0, 0.6f, 1.0f, 64, 7});
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) ++seen[nucleus.sample(kLogits.data(), 6, {})];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 800);
  EXPECT_GT(seen[3], 800);
}

TEST(Sampler, RepetitionPenaltyMovesGreedyAwayFromSeenTokens) {
  Sampler s({0.0f, 0, 1.0f, 2.0f, 64, 1});
  // 1 and 3 seen: their 3.0 becomes 1.5, so 2 (logit 2.0) wins.
  EXPECT_EQ(s.sample(kLogits.data(), 6, {1, 3}), 2);
  // Outside the window the penalty does not apply.
  Sampler windowed({0.0f, 0, 1.0f, 2.0f, 1, 1});
  EXPECT_EQ(windowed.sample(kLogits.data(), 6, {1, 3}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  Sampler a({1.0f, 0, 0.9f, 1.0f, 64, 5}), b({1.0f, 0, 0.9f, 1.0f, 64, 5});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(kLogits.data(), 6, {}), b.sample(kLogits.data(), 6, {}));
}

TEST(Sampler, BadSettingsNameTheFlag) {
  auto message = [](SamplerConfig c) {
    try {
      Sampler s(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message({-1.0f, 0, 1.0f, 1.0f, 64, 1}).find("--temp"), std::string::npos);
  EXPECT_NE(message({1.0f, -2, 1.0f, 1.0f, 64, 1}).find("--top-k"), std::string::npos);
  EXPECT_NE(message({1.0f, 0, 0.0f, 1.0f, 64, 1}).find("--top-p"), std::string::npos);
  EXPECT_NE(message({1.0f, 0, 1.0f, 0.0f, 64, 1}).find("--repeat-penalty"), std::string::npos);
}

}  // namespace
}  // namespace moge::infer
