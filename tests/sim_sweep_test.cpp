// The configuration sweep (sim/sweep.h): the plans it enumerates, the paper's shapes, and on
// small synthetic profiles the best plan that hand arithmetic gives: with 1-second collectives
// only the one-device plan meets a 100 ms limit; with memory for 40% of the experts only a
// plan over all 4 devices fits; with an impossible limit the sweep says why nothing qualifies.
#include <algorithm>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/sim/sweep.h"
#include "sim_test_util.h"

namespace moge::sim {
namespace {

// 2 layers of 8 experts (MoGE: 4 groups of 2, top-4), expert width 512 on hidden 256: the
// routed experts are 2·8·3·256·512 bf16 = 12.6 MB, everything else about 4 MB.
model::ModelConfig tiny() {
  const nlohmann::json j = {{"vocab_size", 1024},        {"hidden_size", 256},
                            {"num_hidden_layers", 2},    {"num_attention_heads", 4},
                            {"num_key_value_heads", 2},  {"head_dim", 64},
                            {"num_experts", 8},          {"num_experts_per_tok", 4},
                            {"num_expert_groups", 4},    {"moe_intermediate_size", 512},
                            {"shared_expert_intermediate_size", 512},
                            {"max_position_embeddings", 4096}};
  return model::ModelConfig::from_json_text(j.dump(), "tiny");
}
constexpr double kExpertBytes = 2.0 * 8 * 3 * 256 * 512 * 2;

// sim_test_profile on one node of 4 devices, with the interconnect latency and memory given.
HardwareProfile profile(double latency_us, double capacity_gib) {
  nlohmann::json j = test::sim_test_profile();
  j["nodes"] = 1;
  j["device"]["memory_capacity_gib"] = capacity_gib;
  for (const char* tier : {"intra_node", "inter_node"}) {
    j["interconnect"][tier]["latency_us"] = latency_us;
    j["interconnect"][tier]["bandwidth_gb_s"] = 1e9;
  }
  return HardwareProfile::from_json_text(j.dump(), "sweep-test.json");
}

SweepOptions options(double limit_s) {
  SweepOptions o;
  o.batches = {1, 4, 16};
  o.latency_limit_s = limit_s;
  o.workload.prompt = 64;
  o.workload.gen = 16;
  return o;
}

TEST(SimSweep, ShapeNameSaysWidthHeadsLayersAndExperts) {
  EXPECT_EQ(shape_name(tiny()), "d256 h4/2 L2 E8x512");
}

TEST(SimSweep, EnumeratesEveryFactorization) {
  // D = 1: 1 plan; D = 2: 2·2·2; D = 4: 3·3·3; D = 8: 4·4·4.
  EXPECT_EQ(enumerate_plans(4).size(), 1u + 8 + 27);
  const std::vector<ParallelPlan> plans = enumerate_plans(8);
  EXPECT_EQ(plans.size(), 1u + 8 + 27 + 64);
  std::set<std::string> names;
  for (const ParallelPlan& p : plans) {
    names.insert(p.to_string());
    EXPECT_EQ(p.expert_ep * p.expert_tp, p.devices());
    EXPECT_EQ(p.shared_dp * p.shared_tp, p.devices());
  }
  EXPECT_EQ(names.size(), plans.size());
  EXPECT_TRUE(names.count("attn=dp2tp4,experts=ep4tp2,shared=dp1tp8"));  // the paper's plan
}

TEST(SimSweep, PaperShapesStayInTheRanges) {
  const std::vector<SweepShape> shapes = paper_shapes();
  EXPECT_GE(shapes.size(), 100u);
  for (const SweepShape& s : shapes) {
    const model::ModelConfig& c = s.config;
    EXPECT_GE(c.total_parameters(), 60e9) << s.name;
    EXPECT_LE(c.total_parameters(), 80e9) << s.name;
    EXPECT_TRUE(c.hidden_size >= 4096 && c.hidden_size <= 8192) << s.name;
    EXPECT_TRUE(c.num_hidden_layers >= 40 && c.num_hidden_layers <= 64) << s.name;
    EXPECT_TRUE(c.num_experts >= 32 && c.num_experts <= 64) << s.name;
    EXPECT_EQ(c.moe_intermediate_size % 256, 0) << s.name;
    EXPECT_EQ(c.routing_mode, moe::RoutingMode::grouped);
  }
}

TEST(SimSweep, SlowCollectivesLeaveTheOneDevicePlan) {
  // Every plan over D ≥ 2 devices all-gathers and reduce-scatters over D each layer: with 1 s a
  // collective that is ≥ 2 s a layer, 4 s a token. One device has no collectives and a decode
  // step of microseconds, and reads its weights once a step whatever the batch, so its best
  // batch is the largest.
  const Sweep s = run_sweep({{"tiny", tiny()}}, profile(1e6, 64), options(0.1));
  EXPECT_EQ(s.feasible(), 1);
  const SweepResult& best = s.results[0];
  EXPECT_EQ(best.plan.devices(), 1);
  ASSERT_GE(best.best, 0);
  EXPECT_EQ(best.points[best.best].batch, 16);
  for (const SweepResult& r : s.results) {
    if (r.plan.devices() == 1) continue;
    for (const SweepPoint& p : r.points) {
      EXPECT_GE(p.decode_seconds, 4.0) << r.plan.to_string();
    }
  }
  // The reported throughput is predict()'s.
  const UniformLoad load(tiny().moe_config().router, 1);
  Workload w = options(0.1).workload;
  w.batch = 16;
  const Prediction p = predict(tiny(), profile(1e6, 64), best.plan, w, load);
  EXPECT_DOUBLE_EQ(best.best_throughput(), p.decode.tokens_per_s_per_device);
}

TEST(SimSweep, TightMemoryNeedsEveryDevice) {
  // Memory for 40% of the routed experts: a plan over 1 or 2 devices holds at least half of
  // them and cannot fit; 4 devices hold a quarter each plus ~1.2 MB of the rest.
  const double capacity_gib = 0.4 * kExpertBytes / (1024.0 * 1024 * 1024);
  const Sweep s = run_sweep({{"tiny", tiny()}}, profile(0, capacity_gib), options(1.0));
  ASSERT_GT(s.feasible(), 0);
  for (const SweepResult& r : s.results) {
    if (r.plan.devices() < 4) {
      for (const SweepPoint& p : r.points) {
        EXPECT_FALSE(p.fits) << r.plan.to_string() << " batch " << p.batch;
      }
    }
    if (r.best >= 0) {
      EXPECT_EQ(r.plan.devices(), 4) << r.plan.to_string();
    }
  }
  // Ranked: no feasible result beats the first.
  for (const SweepResult& r : s.results) EXPECT_LE(r.best_throughput(), s.results[0].best_throughput());
}

TEST(SimSweep, NothingQualifiesSaysWhy) {
  const SweepOptions fast = options(1e-9);
  const Sweep s = run_sweep({{"tiny", tiny()}}, profile(0, 64), fast);
  EXPECT_EQ(s.feasible(), 0);
  const std::string why = s.nothing_fits_reason(fast);
  EXPECT_NE(why.find("no configuration has a decode latency under 1e-06 ms and fits in memory"), std::string::npos)
      << why;
  EXPECT_NE(why.find("0 fit at no batch and 36 fit but exceed the limit at every batch"), std::string::npos) << why;
  EXPECT_NE(why.find("the fastest that fits takes"), std::string::npos) << why;

  const SweepOptions slow = options(1.0);
  const Sweep none = run_sweep({{"tiny", tiny()}}, profile(0, 1e-6), slow);
  EXPECT_EQ(none.feasible(), 0);
  const std::string no_fit = none.nothing_fits_reason(slow);
  EXPECT_NE(no_fit.find("36 fit at no batch and 0 fit but exceed"), std::string::npos) << no_fit;
  EXPECT_EQ(no_fit.find("fastest"), std::string::npos) << no_fit;
}

TEST(SimSweep, ParetoFrontByHand) {
  // (latency s, tokens/s): (1, 10) and (2, 30) and (4, 40) are on the front; (3, 25) is beaten by
  // (2, 30), (2, 20) ties (2, 30) on latency and loses, (5, 40) ties (4, 40) on throughput but is
  // slower, and the duplicate (1, 10) appears once.
  const std::vector<LatencyThroughput> front =
      pareto_front({{3, 25}, {1, 10}, {2, 20}, {4, 40}, {2, 30}, {5, 40}, {1, 10}});
  ASSERT_EQ(front.size(), 3u);
  EXPECT_EQ(front[0].latency_s, 1);
  EXPECT_EQ(front[0].tokens_per_s, 10);
  EXPECT_EQ(front[1].latency_s, 2);
  EXPECT_EQ(front[1].tokens_per_s, 30);
  EXPECT_EQ(front[2].latency_s, 4);
  EXPECT_EQ(front[2].tokens_per_s, 40);
  EXPECT_TRUE(pareto_front({}).empty());
}

TEST(SimSweep, RejectsBadOptions) {
  SweepOptions o = options(0.1);
  o.batches = {};
  EXPECT_THROW(run_sweep({{"tiny", tiny()}}, profile(0, 64), o), Error);
  o = options(0.1);
  o.batches = {0};
  EXPECT_THROW(run_sweep({{"tiny", tiny()}}, profile(0, 64), o), Error);
  EXPECT_THROW(run_sweep({{"tiny", tiny()}}, profile(0, 64), options(0)), Error);
  EXPECT_THROW(run_sweep({}, profile(0, 64), options(0.1)), Error);
}

}  // namespace
}  // namespace moge::sim
