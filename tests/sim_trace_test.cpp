// Trace replay (sim/trace.h): replaying a uniform-random top-k trace gives UniformLoad's expected
// maximum within the statistical error of both; a MoGE trace (one expert a group a token) gives
// max == mean exactly; a hand-checked small trace; malformed trace files name the file and field.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/sim/load.h"
#include "moge/sim/trace.h"

namespace moge::sim {
namespace {

// Each token picks K distinct experts of N uniformly (partial Fisher-Yates over a Mersenne
// twister with a fixed seed).
model::RoutingTrace uniform_topk_trace(int64_t tokens, int experts, int top_k, int layers, uint64_t seed) {
  std::mt19937_64 gen(seed);
  model::RoutingTrace t;
  t.top_k = top_k;
  t.num_experts = experts;
  std::vector<int32_t> ids(experts);
  for (int l = 0; l < layers; ++l) {
    std::vector<int32_t> layer;
    layer.reserve(tokens * top_k);
    for (int64_t i = 0; i < tokens; ++i) {
      std::iota(ids.begin(), ids.end(), 0);
      for (int k = 0; k < top_k; ++k) {
        std::uniform_int_distribution<int> pick(k, experts - 1);
        std::swap(ids[k], ids[pick(gen)]);
        layer.push_back(ids[k]);
      }
    }
    t.expert.push_back(std::move(layer));
  }
  return t;
}

// MoGE: experts in `groups` contiguous groups, each token one expert of every group.
model::RoutingTrace moge_trace(int64_t tokens, int experts, int groups, uint64_t seed) {
  std::mt19937_64 gen(seed);
  const int per_group = experts / groups;
  std::uniform_int_distribution<int> pick(0, per_group - 1);
  model::RoutingTrace t;
  t.top_k = groups;
  t.num_experts = experts;
  t.expert.emplace_back();
  for (int64_t i = 0; i < tokens; ++i)
    for (int g = 0; g < groups; ++g) t.expert[0].push_back(g * per_group + pick(gen));
  return t;
}

moe::RouterConfig topk_router(int experts, int top_k) {
  moe::RouterConfig r;
  r.num_experts = experts;
  r.num_groups = 1;
  r.top_k = top_k;
  r.mode = moe::RoutingMode::topk;
  return r;
}

TEST(SimTrace, UniformTraceAgreesWithUniformLoad) {
  // Tolerance: 4 standard errors of the difference. The replay's error is the spread of the
  // busiest device's pairs over batches / sqrt(batches); UniformLoad's Monte Carlo draws ~1e7
  // pairs (at least 150 trials; 20000 at T·K = 128), the Gaussian limit (T·K > 65536) is
  // within 1% of the excess over the mean (sim_load_test.cpp), added to the tolerance.
  struct Case {
    int64_t tokens;
    int experts, top_k, devices;
    int64_t batches;
    double uniform_trials;  // 0: the Gaussian limit
  };
  for (const Case& c : {Case{16, 64, 8, 8, 4000, 20000}, Case{1, 64, 8, 4, 20000, 20000},
                        Case{456, 64, 8, 4, 400, 2741}, Case{40000, 16, 2, 4, 100, 0}}) {
    const TraceLoad replay(uniform_topk_trace(c.tokens * c.batches, c.experts, c.top_k, 1, 42), c.devices);
    const UniformLoad uniform(topk_router(c.experts, c.top_k), c.devices);
    const ReplayStats r = replay.replay(0, c.tokens);
    const ExpertLoad u = uniform.layer(0, c.tokens);
    ASSERT_EQ(r.batches, c.batches);
    ASSERT_FALSE(r.wrapped);
    EXPECT_EQ(r.load.mean_pairs, u.mean_pairs);
    const double se = r.max_pairs_stddev *
                      std::sqrt(1.0 / double(c.batches) + (c.uniform_trials > 0 ? 1.0 / c.uniform_trials : 0.0));
    const double model_error = c.uniform_trials > 0 ? 0.0 : 0.01 * (u.max_pairs - u.mean_pairs);
    EXPECT_NEAR(r.load.max_pairs, u.max_pairs, 4 * se + model_error)
        << c.tokens << " tokens, " << c.experts << " experts, top-" << c.top_k << ", " << c.devices << " devices";
    EXPECT_GT(r.load.max_pairs, r.load.mean_pairs);  // uniform top-k is never perfectly balanced
  }
}

TEST(SimTrace, MoGETraceIsExactlyBalanced) {
  // 64 experts in 8 groups, one expert a group a token: every device holding whole groups gets
  // exactly T·K/D pairs in every batch.
  const model::RoutingTrace trace = moge_trace(4096, 64, 8, 7);
  for (int devices : {1, 2, 4, 8}) {
    const TraceLoad load(trace, devices);
    for (int64_t tokens : {1, 7, 64, 456}) {
      const ReplayStats r = load.replay(0, tokens);
      const double exact = double(tokens) * 8 / devices;
      EXPECT_EQ(r.load.max_pairs, exact) << devices << " devices, " << tokens << " tokens";
      EXPECT_EQ(r.load.mean_pairs, exact);
      EXPECT_EQ(r.max_pairs_stddev, 0.0);
      EXPECT_LE(r.load.experts_touched, 64.0 / devices);
    }
    // One token touches exactly one expert of each of the device's groups.
    EXPECT_EQ(load.layer(0, 1).experts_touched, 8.0 / devices);
  }
}

TEST(SimTrace, SmallTraceByHand) {
  // 4 experts, top-1, 2 devices (experts 0,1 | 2,3); tokens route to 0, 0, 1, 3.
  model::RoutingTrace t;
  t.top_k = 1;
  t.num_experts = 4;
  t.expert = {{0, 0, 1, 3}, {2, 2, 2, 2}};
  TraceLoad load(t, 2);
  // T = 2: batches {0,0} -> device 0 has 2 pairs, 1 expert; {1,3} -> 1 and 1, tie: 1 expert.
  ReplayStats r = load.replay(0, 2);
  EXPECT_EQ(r.batches, 2);
  EXPECT_DOUBLE_EQ(r.load.max_pairs, 1.5);
  EXPECT_DOUBLE_EQ(r.load.mean_pairs, 1.0);
  EXPECT_DOUBLE_EQ(r.load.experts_touched, 1.0);
  EXPECT_DOUBLE_EQ(r.max_pairs_stddev, 0.5);
  // T = 3: one batch {0,0,1} (the fourth token is left over): 3 pairs on device 0, 2 experts.
  r = load.replay(0, 3);
  EXPECT_EQ(r.batches, 1);
  EXPECT_DOUBLE_EQ(r.load.max_pairs, 3.0);
  EXPECT_DOUBLE_EQ(r.load.experts_touched, 2.0);
  // T = 6 > 4 tokens: wraps around to 0,0,1,3,0,0: device 0 has 5 pairs.
  r = load.replay(0, 6);
  EXPECT_TRUE(r.wrapped);
  EXPECT_DOUBLE_EQ(r.load.max_pairs, 5.0);
  // Layer 1 sends everything to expert 2, on device 1.
  EXPECT_DOUBLE_EQ(load.layer(1, 4).max_pairs, 4.0);
  EXPECT_DOUBLE_EQ(load.layer(1, 4).experts_touched, 1.0);
  // A 4-layer model over the 2-layer trace: layers 0, 1 replay trace layer 0; 2, 3 layer 1.
  load.set_model_layers(4);
  EXPECT_EQ(load.trace_layer(0), 0);
  EXPECT_EQ(load.trace_layer(1), 0);
  EXPECT_EQ(load.trace_layer(2), 1);
  EXPECT_EQ(load.trace_layer(3), 1);
  EXPECT_DOUBLE_EQ(load.layer(3, 4).max_pairs, 4.0);
  // Devices must divide the experts.
  EXPECT_THROW(TraceLoad(t, 3), Error);
}

class SimTraceFile : public ::testing::Test {
 protected:
  std::filesystem::path dir_ = std::filesystem::temp_directory_path() /
                               ("moge_sim_trace_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                "_" + std::to_string(reinterpret_cast<uintptr_t>(this)));
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  // The error read_routing_trace throws for `text`, which must name the file.
  std::string error_of(const std::string& text) {
    const std::string path = write("bad.json", text);
    try {
      read_routing_trace(path);
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      return what;
    }
    ADD_FAILURE() << "accepted: " << text;
    return "";
  }
};

TEST_F(SimTraceFile, ReadsWhatGenerateWrites) {
  // The layout tools/moge/routing_report.cpp writes.
  const nlohmann::json j = {{"top_k", 2}, {"num_experts", 4}, {"tokens", 3}, {"layers", {{0, 1, 2, 3, 1, 2}}}};
  const model::RoutingTrace t = read_routing_trace(write("t.json", j.dump() + "\n"));
  EXPECT_EQ(t.top_k, 2);
  EXPECT_EQ(t.num_experts, 4);
  EXPECT_EQ(t.tokens(), 3);
  EXPECT_EQ(t.expert, (std::vector<std::vector<int32_t>>{{0, 1, 2, 3, 1, 2}}));
}

TEST_F(SimTraceFile, MalformedTracesNameTheField) {
  auto has = [](const std::string& what, const std::string& part) {
    EXPECT_NE(what.find(part), std::string::npos) << "'" << what << "' lacks '" << part << "'";
  };
  has(error_of("{\"top_k\": 2, "), "invalid JSON");
  has(error_of("[1, 2]"), "JSON object");
  has(error_of(R"({"num_experts": 4, "tokens": 1, "layers": [[0, 1]]})"), "field 'top_k' is missing");
  has(error_of(R"({"top_k": "2", "num_experts": 4, "tokens": 1, "layers": [[0, 1]]})"), "field 'top_k' must be");
  has(error_of(R"({"top_k": 8, "num_experts": 4, "tokens": 1, "layers": [[0, 1]]})"), "field 'top_k' (8) exceeds");
  has(error_of(R"({"top_k": 2, "num_experts": 4, "tokens": 1})"), "field 'layers' is missing");
  has(error_of(R"({"top_k": 2, "num_experts": 4, "tokens": 1, "layers": []})"), "field 'layers' must be");
  has(error_of(R"({"top_k": 2, "num_experts": 4, "tokens": 2, "layers": [[0, 1, 2, 3], [0, 1]]})"),
      "field 'layers[1]' has 2 expert ids, expected tokens · top_k = 4");
  has(error_of(R"({"top_k": 2, "num_experts": 4, "tokens": 1, "layers": [[0, 4]]})"),
      "field 'layers[0]'[1] is 4, not an expert id in [0, 4)");
  has(error_of(R"({"top_k": 2, "num_experts": 4, "tokens": 1, "layers": [[0, "x"]]})"), "'layers[0]'[1]");
  try {
    read_routing_trace((dir_ / "missing.json").string());
    ADD_FAILURE() << "a missing file was accepted";
  } catch (const Error& e) {
    has(e.what(), "missing.json");
  }
}

}  // namespace
}  // namespace moge::sim
