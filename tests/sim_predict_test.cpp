// predict(): Pangu Pro MoE on the 800I A2 profile runs and gives finite, positive numbers; a step
// is the sum of its parts; a model that does not fit says so; MoGE's busiest device is never
// slower than top-k's.
#include <algorithm>
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "moge/core/error.h"
#include "moge/sim/predict.h"
#include "sim_test_util.h"
#include "test_util.h"

namespace moge::sim {
namespace {

model::ModelConfig pangu() { return model::ModelConfig::from_file(test::source_path("tests/data/pangu_pro_moe/config.json")); }
HardwareProfile a2() { return HardwareProfile::from_file(test::source_path("docs/sim/profiles/ascend-800i-a2.json")); }

// The hand-arithmetic model: d 128, 4 query heads and 2 KV heads of 32, 8 experts in 2 groups,
// top-2 (MoGE), expert width 64, shared 256, 2 layers.
model::ModelConfig small_moge() {
  const nlohmann::json cfg = {{"vocab_size", 1000},  {"hidden_size", 128},   {"num_hidden_layers", 2},
                              {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"num_experts", 8},
                              {"num_experts_per_tok", 2}, {"num_expert_groups", 2}, {"routing_mode", "grouped"},
                              {"moe_intermediate_size", 64}, {"shared_expert_intermediate_size", 256},
                              {"max_position_embeddings", 4096}};
  return model::ModelConfig::from_json_text(cfg.dump(), "hand");
}

Prediction run(const model::ModelConfig& c, const HardwareProfile& hw, const std::string& plan_text, const Workload& w) {
  const ParallelPlan plan = ParallelPlan::parse(plan_text);
  const UniformLoad load(c.moe_config().router, plan.expert_ep);
  return predict(c, hw, plan, w, load);
}

// The test profile as moge's CPU engine: per-call costs with a 1 us kernel overhead (a thread
// team's fork/join), and `type` matmuls of up to `group_rows` rows grouped into one team.
nlohmann::json per_call_engine(const char* type, int group_rows) {
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 1;
  j["device"]["linear_group_max_rows"] = {{type, group_rows}};
  return j;
}

void expect_sane(const StepPrediction& s, const char* what) {
  for (double v : {s.seconds, s.tokens_per_s_per_device, s.time.attention, s.time.experts, s.time.shared, s.time.lm_head})
    EXPECT_TRUE(std::isfinite(v) && v > 0) << what << ": " << v;
  EXPECT_TRUE(std::isfinite(s.time.comm) && s.time.comm >= 0) << what;
  EXPECT_NEAR(s.seconds, s.time.total(), 1e-12 * s.seconds) << what;
}

TEST(SimPredict, PanguProMoEOn800IA2) {
  Workload w;
  w.batch = 456;
  w.prompt = 2048;
  w.gen = 256;
  w.weights = WeightType::int8;
  const Prediction r = run(pangu(), a2(), "attn=dp2tp4,experts=ep4tp2,shared=tp8", w);
  EXPECT_EQ(r.devices, 8);
  expect_sane(r.prefill, "prefill");
  expect_sane(r.decode, "decode");
  EXPECT_GT(r.prefill.time.comm, 0);
  EXPECT_EQ(r.prefill.sequences, 2);  // one a DP group
  EXPECT_EQ(r.prefill.tokens, 2 * 2048);
  EXPECT_EQ(r.decode.tokens, 456);
  EXPECT_DOUBLE_EQ(r.decode.context, 2048 + 128);
  EXPECT_DOUBLE_EQ(r.decode.tokens_per_s_per_device, 456 / (r.decode.seconds * 8));
  // MoGE on ep4: exactly T·K/4 pairs a device in every layer.
  EXPECT_DOUBLE_EQ(r.decode.max_expert_pairs, 456.0 * 8 / 4);
  EXPECT_TRUE(r.memory.fits()) << r.memory.total() / (1 << 30) << " GiB";
  EXPECT_GT(r.memory.weights, 5e9);
  EXPECT_GT(r.memory.kv_cache, 1e9);
  EXPECT_NO_THROW(check_memory_fit(r));
}

TEST(SimPredict, OneDeviceHasNoCommunication) {
  Workload w;
  w.batch = 4;
  w.prompt = 128;
  w.gen = 16;
  const Prediction r = run(pangu(), HardwareProfile::from_json_text(test::sim_test_profile().dump(), "t.json"), "", w);
  EXPECT_EQ(r.prefill.time.comm, 0.0);
  EXPECT_EQ(r.decode.time.comm, 0.0);
  expect_sane(r.decode, "decode");
}

TEST(SimPredict, ModelThatDoesNotFitSaysWhy) {
  Workload w;  // bf16 Pangu (72B parameters, 144 GB) on one 64 GiB device
  const Prediction r = run(pangu(), a2(), "", w);
  EXPECT_FALSE(r.memory.fits());
  try {
    check_memory_fit(r);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("does not fit"), std::string::npos) << m;
    EXPECT_NE(m.find("weights"), std::string::npos) << m;
    EXPECT_NE(m.find("64.00 GiB"), std::string::npos) << m;
  }
}

TEST(SimPredict, PlanErrorsComeThroughPredict) {
  Workload w;
  EXPECT_THROW(run(pangu(), a2(), "attn=dp16,experts=ep16,shared=tp16", w), Error);
  w.batch = 0;
  EXPECT_THROW(run(pangu(), a2(), "", w), Error);
}

TEST(SimPredict, MoGEBusiestDeviceNeverSlowerThanTopk) {
  model::ModelConfig moge = pangu(), topk = pangu();
  topk.routing_mode = moe::RoutingMode::topk;
  Workload w;
  w.weights = WeightType::int8;
  for (int64_t batch : {1, 16, 456}) {
    w.batch = batch;
    const Prediction a = run(moge, a2(), "attn=dp2tp4,experts=ep4tp2,shared=tp8", w);
    const Prediction b = run(topk, a2(), "attn=dp2tp4,experts=ep4tp2,shared=tp8", w);
    EXPECT_LE(a.decode.time.experts, b.decode.time.experts * (1 + 1e-12)) << batch;
    EXPECT_LT(a.decode.max_expert_pairs, b.decode.max_expert_pairs) << batch;
    EXPECT_EQ(a.decode.time.attention, b.decode.time.attention);
  }
}

TEST(SimPredict, QuantizedWeightsAreSmallerAndFasterToDecode) {
  Workload w;
  w.batch = 8;
  const char* plan = "attn=dp2tp4,experts=ep4tp2,shared=tp8";
  w.weights = WeightType::bf16;
  const Prediction bf16 = run(pangu(), a2(), plan, w);
  w.weights = WeightType::int8;
  const Prediction int8 = run(pangu(), a2(), plan, w);
  w.weights = WeightType::int4;
  const Prediction int4 = run(pangu(), a2(), plan, w);
  EXPECT_LT(int8.memory.weights, bf16.memory.weights);
  EXPECT_LT(int4.memory.weights, int8.memory.weights);
  EXPECT_LT(int8.decode.seconds, bf16.decode.seconds);
  EXPECT_LT(int4.decode.seconds, int8.decode.seconds);
}

TEST(SimPredict, OverlapHidesCommunicationBehindExperts) {
  Workload w;
  w.weights = WeightType::int8;
  const char* plan = "attn=dp2tp4,experts=ep4tp2,shared=tp8";
  const Prediction plain = run(pangu(), a2(), plan, w);
  w.overlap_comm = true;
  const Prediction overlapped = run(pangu(), a2(), plan, w);
  EXPECT_LT(overlapped.prefill.time.comm, plain.prefill.time.comm);
  EXPECT_GE(overlapped.prefill.time.comm, 0.0);
  EXPECT_EQ(overlapped.prefill.time.experts, plain.prefill.time.experts);
  EXPECT_NEAR(overlapped.prefill.time.comm,
              std::max(0.0, plain.prefill.time.comm - plain.prefill.time.experts - plain.prefill.time.shared), 1e-9);
}

TEST(SimPredict, ElementwiseKernelsAndPerExpertLaunchesByHand) {
  // d 128, 4 query heads and 2 KV heads of 32, 8 experts in 2 groups, top-2 (MoGE), expert width
  // 64, shared 256, 2 layers; one device, one sequence decoding (T = 1, 2 pairs a layer).
  const model::ModelConfig c = small_moge();
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 1;
  Workload w;
  w.prompt = 16;
  w.gen = 2;
  const Prediction plain = run(c, HardwareProfile::from_json_text(j.dump(), "t.json"), "attn=dp1", w);
  // Bytes a layer, activations 2 bytes: RMSNorm 2·128·2 = 512, RoPE 2·(4+2)·32·2 = 768, residual
  // add 3·128·2 = 768, RMSNorm 512, softmax/top-k 2·8·2 = 32, permute 2·2·128·2 = 1024, SwiGLU
  // 3·2·64·2 = 768 and shared 3·256·2 = 1536, combine (2+1)·128·2 = 768, add 768: 7456 bytes at
  // 1000 GB/s · 0.8 (default memory efficiency), plus 10 kernels of 1 us; two layers.
  EXPECT_NEAR(plain.decode.time.elementwise, 2 * (7456 / 0.8e12 + 10e-6), 1e-15);
  // One launch per touched expert and kernel: MoGE at T = 1 touches 8·(1 - (1 - 2/8)^1) = 2
  // experts a layer, 4 kernels each at 1 us: 8 us a layer, 16 us in all.
  j["device"]["kernels_per_expert"] = 4;
  const Prediction launches = run(c, HardwareProfile::from_json_text(j.dump(), "t.json"), "attn=dp1", w);
  EXPECT_NEAR(launches.decode.time.experts - plain.decode.time.experts, 16e-6, 1e-15);
  EXPECT_EQ(launches.decode.time.elementwise, plain.decode.time.elementwise);
}

TEST(SimPredict, PerCallEngineByHand) {
  // small_moge() as moge's CPU engine runs it (linear_group_max_rows): int8 GEMVs (memory 0.9
  // of 1000 GB/s) with their own fixed cost of 3 us a call; other kernels (the default
  // efficiency, memory 0.8) 1 us, among them the router, an f32 matmul [8, 128].
  const model::ModelConfig c = small_moge();
  nlohmann::json j = per_call_engine("int8", 16);
  j["efficiency"]["gemv"][0]["overhead_us"] = 3;
  const HardwareProfile hw = HardwareProfile::from_json_text(j.dump(), "t.json");
  Workload w;
  w.prompt = 16;
  w.gen = 2;
  w.weights = WeightType::int8;
  const Prediction r = run(c, hw, "attn=dp1", w);

  // Decode: 2 pairs on 2 experts (1 row each) and the shared expert's 1 row, all at most 16 rows:
  // one call for gate|up, bytes 2·128·128 + 2·256·2 + 128·512 + 640·2 = 100608, one for down,
  // 2·64·128 + 2·192·2 + 256·128 + 384·2 = 50688, each + 3 us; split by weight rows, experts
  // 2·64 : shared 256. Router: 128·8·4 + 136·2 = 4368 bytes at 0.8e12 + 1 us. Two layers.
  const double grouped = (100608 + 50688) / 0.9e12 + 6e-6, router1 = 4368 / 0.8e12 + 1e-6;
  EXPECT_NEAR(r.decode.time.experts, 2 * (router1 + grouped / 3), 1e-15);
  EXPECT_NEAR(r.decode.time.shared, 2 * (grouped * 2 / 3), 1e-15);

  // Prefill of 16 tokens: an expert's rows are Binomial(16, 1/4), never above 16, so all group:
  // 32 pairs over E = 8·(1 - (3/4)^16) touched experts (5 rows each, rounded up: the int8 GEMV
  // row) and the shared expert's 16 rows. gate|up: E·128·128 + 32·256·2 + 128·512 + 16·640·2;
  // down: E·64·128 + 32·192·2 + 256·128 + 16·384·2. Router: 4096 + 16·136·2 = 8448 bytes.
  const double E = 8 * (1 - std::pow(0.75, 16));
  const double up = E * 128 * 128 + 32 * 256 * 2 + 128 * 512 + 16 * 640 * 2, down = E * 64 * 128 + 32 * 192 * 2 + 256 * 128 + 16 * 384 * 2;
  const double prefill = (up + down) / 0.9e12 + 6e-6, router16 = 8448 / 0.8e12 + 1e-6;
  const double e_share = E * 64 / (E * 64 + 256);
  EXPECT_NEAR(r.prefill.time.experts, 2 * (router16 + prefill * e_share), 1e-14);
  EXPECT_NEAR(r.prefill.time.shared, 2 * prefill * (1 - e_share), 1e-14);

  // f32 weights never group: in decode each expert's row (Binomial(1, 1/4): 8 · 1/4 = 2 experts)
  // runs gate, up and down as calls of their own, 128·64·4 + 192·2 = 33152 bytes each, and the
  // shared expert's three of 128·256·4 + 384·2 = 131840 bytes; the default efficiency, 1 us each.
  w.weights = WeightType::f32;
  const Prediction f = run(c, hw, "attn=dp1", w);
  EXPECT_NEAR(f.decode.time.experts, 2 * (router1 + 2 * 3 * (33152 / 0.8e12 + 1e-6)), 1e-15);
  EXPECT_NEAR(f.decode.time.shared, 2 * 3 * (131840 / 0.8e12 + 1e-6), 1e-15);
}

TEST(SimPredict, ExpertParallelBf16ExpertsRunOnAmxTilesWhereTheProfileMeasuredThem) {
  // small_moge() on moge's CPU engine with bf16 weights (linear_group_max_rows: bf16 16), kernel
  // overhead 1 us; the test profile has no bf16 GEMV row (the default efficiency, memory 0.8).
  // `amx` adds an amx_tiles table: compute 0.1, memory 0.5, 2 us a call.
  const model::ModelConfig c = small_moge();
  nlohmann::json j = per_call_engine("bf16", 16);
  const HardwareProfile plain = HardwareProfile::from_json_text(j.dump(), "plain.json");
  j["efficiency"]["amx_tiles"] = {{{"type", "bf16"}, {"compute", 0.1}, {"memory", 0.5}, {"overhead_us", 2}}};
  const HardwareProfile amx = HardwareProfile::from_json_text(j.dump(), "amx.json");
  Workload w;
  w.batch = 1;
  w.prompt = 16;
  w.gen = 2;
  w.weights = WeightType::bf16;
  const std::string ep2 = "attn=dp2,experts=ep2,shared=tp2";
  const Prediction before = run(c, plain, ep2, w), after = run(c, amx, ep2, w);

  // Decode: 1 token, MoGE top-2 over ep2: 1 pair a device, over its 4 experts (Binomial(1, 1/4)
  // rows: 1 expert of 1 row expected). Router: f32 [8, 128], 128·8·4 + 136·2 = 4368 bytes at 0.8e12
  // + 1 us. Two layers.
  const double router1 = 4368 / 0.8e12 + 1e-6;
  // Without the table (as before): the expert's row groups (1 <= 16 rows): gate|up one call of
  // 128·128·2 + 256·2 = 33280 bytes, down 64·128·2 + 192·2 = 16768, each + 1 us.
  EXPECT_NEAR(before.decode.time.experts, 2 * (router1 + (33280 + 16768) / 0.8e12 + 2e-6), 1e-15);
  // With it: gate, up and down each one AMX call of 16 rows: bytes 128·64·2 + 16·192·2 = 22528 at
  // 0.5e12 (FLOPs 2·16·128·64 = 262144 at 10e12 take less), + 2 us.
  EXPECT_NEAR(after.decode.time.experts, 2 * (router1 + 3 * (22528 / 0.5e12 + 2e-6)), 1e-15);
  // Nothing else changes: the shared expert is not packed.
  for (auto [b, a] : {std::pair{&before.decode, &after.decode}, {&before.prefill, &after.prefill}}) {
    EXPECT_DOUBLE_EQ(b->time.attention, a->time.attention);
    EXPECT_DOUBLE_EQ(b->time.shared, a->time.shared);
    EXPECT_DOUBLE_EQ(b->time.comm, a->time.comm);
    EXPECT_DOUBLE_EQ(b->time.elementwise, a->time.elementwise);
    EXPECT_DOUBLE_EQ(b->time.lm_head, a->time.lm_head);
  }
  // Prefill, 16 tokens a sequence on each of 2 attention groups: 32 tokens, 32 pairs a device,
  // each expert Binomial(32, 1/4) rows, all costed on AMX rounded up to 16 (never grouped).
  double amx_prefill = 0;
  for (int r = 1; r <= 32; ++r) {
    const double prob = std::exp(std::lgamma(33) - std::lgamma(r + 1) - std::lgamma(33 - r) + r * std::log(0.25) +
                                 (32 - r) * std::log(0.75));
    const double r16 = (r + 15) / 16 * 16;
    // gate and up: 2·r16·128·64 FLOPs, 128·64·2 + r16·192·2 bytes; down the same.
    const double call = std::max(2 * r16 * 128 * 64 / 10e12, (128 * 64 * 2 + r16 * 192 * 2) / 0.5e12) + 2e-6;
    amx_prefill += 4 * prob * 3 * call;
  }
  const double router32 = std::max(2.0 * 32 * 128 * 8 / 12.5e12, (4096 + 32 * 136 * 2) / 0.8e12) + 1e-6;
  EXPECT_NEAR(after.prefill.time.experts, 2 * (router32 + amx_prefill), 1e-12);

  // Prefill of 1024 tokens a sequence, 2048 pairs a device: each expert Binomial(2048, 1/4) rows
  // (512 ± 20, all above 384), run as a piece of 384 rows and one of the rest (moe/layer.cpp).
  Workload big = w;
  big.prompt = 1024;
  const Prediction pieces = run(c, amx, ep2, big);
  auto amx_call = [](double rows) {  // one of gate, up, down: rows rounded up to 16
    const double r16 = std::ceil(rows / 16) * 16;
    return std::max(2 * r16 * 128 * 64 / 10e12, (128 * 64 * 2 + r16 * 192 * 2) / 0.5e12) + 2e-6;
  };
  double amx_pieces = 0;
  for (int r = 385; r <= 2048; ++r) {
    const double prob = std::exp(std::lgamma(2049) - std::lgamma(r + 1) - std::lgamma(2049 - r) + r * std::log(0.25) +
                                 (2048 - r) * std::log(0.75));
    const double rest = r > 768 ? 0 : 3 * amx_call(r - 384);  // never above 768 in practice
    amx_pieces += 4 * prob * (3 * amx_call(384) + rest);
  }
  const double router2048 = std::max(2.0 * 2048 * 128 * 8 / 12.5e12, (4096 + 2048 * 136 * 2) / 0.8e12) + 1e-6;
  EXPECT_NEAR(pieces.prefill.time.experts, 2 * (router2048 + amx_pieces), 1e-9);

  // Each piece's SwiGLU forks a team on its own (rows · 64 > 16384, like the engine's per-piece
  // call). At 1536 tokens a sequence an expert gets Binomial(3072, 1/4) rows, 768 ± 24: pieces of
  // 384 and 384 (and a tail of under 256 rows above 768, which does not fork), so two teams where
  // the whole expert's SwiGLU (not packed: one call of 768 rows) forks one. Everything else in
  // the element-wise time is the same: 2 layers · 4 experts · 1 us more.
  Workload longer = w;
  longer.prompt = 1536;
  EXPECT_NEAR(run(c, amx, ep2, longer).prefill.time.elementwise - run(c, plain, ep2, longer).prefill.time.elementwise,
              2 * 4 * 1e-6, 1e-11);

  // Where the engine does not pack, the table changes nothing: one device (no expert
  // parallelism), and int8 weights.
  for (const std::string plan : {"attn=dp1", "attn=dp2,experts=ep2,shared=tp2"})
    for (const WeightType type : {WeightType::bf16, WeightType::int8}) {
      if (type == WeightType::bf16 && plan != "attn=dp1") continue;
      Workload v = w;
      v.weights = type;
      const Prediction b = run(c, plain, plan, v), a = run(c, amx, plan, v);
      EXPECT_DOUBLE_EQ(b.decode.seconds, a.decode.seconds) << plan;
      EXPECT_DOUBLE_EQ(b.prefill.seconds, a.prefill.seconds) << plan;
    }
}

TEST(SimPredict, PerCallEngineForksTeamsOnlyPastEachKernelsThreshold) {
  // small_moge() on moge's CPU engine (linear_group_max_rows present): an element-wise kernel
  // pays the kernel overhead (1 us, a thread team's fork/join) only past its own threshold; every
  // kernel moves its bytes at 1000 GB/s · 0.8 (default memory efficiency), activations 2 bytes.
  const model::ModelConfig c = small_moge();
  nlohmann::json j = per_call_engine("int8", 4);
  const HardwareProfile hw = HardwareProfile::from_json_text(j.dump(), "t.json");
  Workload w;
  w.prompt = 512;
  w.gen = 2;
  const Prediction r = run(c, hw, "attn=dp1", w);

  // Decode, T = 1, 2 pairs. Bytes: RMSNorm 2 · (2·128·2) = 1024; bias adds q 2·128·2 = 512, k and
  // v 2 · (2·64·2) = 512, o 512; RoPE q 2·128·2 = 512, k 2·64·2 = 256; residual adds 2 · 3·128·2
  // = 1536; softmax 2·8·2 = 32; route_probs (8 + 2·2)·2 = 24; gather 2·2·128·2 = 1024; combine
  // (2 + 1)·128·2 = 768; SwiGLU 3·2·64·2 = 768, shared 3·256·2 = 1536: 9016 bytes. Teams: only
  // route_probs, gather and combine, which always fork (RoPE of one token, a 128-wide norm, an
  // 8-expert softmax, a 64-wide SwiGLU run on the calling thread): 3 us. Two layers.
  EXPECT_NEAR(r.decode.time.elementwise, 2 * (9016 / 0.8e12 + 3e-6), 1e-15);

  // Prefill of 512 tokens, 1024 pairs. Bytes: RMSNorm 2 · 262144; bias q 262144, k and v 2 ·
  // 131072, o 262144; RoPE q 262144, k 131072; residual adds 2 · 393216; softmax 16384;
  // route_probs (4096 + 2048)·2 = 12288; gather 524288; combine 393216; SwiGLU 3·1024·64·2 =
  // 393216, shared 3·512·256·2 = 786432: 4616192 bytes. Teams: the two RMSNorms (65536 > 16384
  // elements), RoPE twice (512 tokens), route_probs, gather, combine, the shared SwiGLU (131072 >
  // 16384): 8. Not the bias adds (65536 and 32768 elements: a team only above 65536), nor the
  // softmax (4096, above 4096 only), nor a routed expert's SwiGLU (Binomial(512, 1/4) rows, mean
  // 128, need more than 256 for 64 · rows > 16384).
  EXPECT_NEAR(r.prefill.time.elementwise, 2 * (4616192 / 0.8e12 + 8e-6), 1e-15);

  // Prefill of 2048 tokens: every byte count 4 times the above, and every kernel forks: RMSNorm
  // 2, bias adds 4, RoPE 2, softmax, route_probs, gather, combine, the shared SwiGLU, and all 8
  // routed experts' SwiGLUs (rows ~ 512 ± 20, all above 256): 21 teams.
  w.prompt = 2048;
  const Prediction big = run(c, hw, "attn=dp1", w);
  EXPECT_NEAR(big.prefill.time.elementwise, 2 * (4 * 4616192 / 0.8e12 + 21e-6), 1e-14);
}

TEST(SimPredict, PerCallDecodeAttentionAddsItsArithmeticToTheCachesColdRead) {
  // small_moge() decoding after prompts of 512 and 1024 (gen 2: contexts 513 and 1025), KV cache
  // 2 bytes an element, the default efficiency (compute 0.5 of 100 TFLOP/s, memory 0.8 of 1000
  // GB/s): 512 more cached positions a layer, 2 layers. Arithmetic: 4 · 4 query heads · 32 · 512 =
  // 262144 FLOPs more a layer; the cache read once per KV head: 512 · 2 (K, V) · 2 KV heads · 32 ·
  // 2 bytes = 131072 bytes more. moge's kernel (a per-call profile) adds the two: 262144 / 50e12 +
  // 131072 / 0.8e12 a layer; a fused kernel takes the larger (the read): 131072 / 0.8e12.
  const model::ModelConfig c = small_moge();
  nlohmann::json j = test::sim_test_profile();
  const HardwareProfile fused = HardwareProfile::from_json_text(j.dump(), "t.json");
  j["device"]["linear_group_max_rows"] = {{"int8", 4}};
  const HardwareProfile engine = HardwareProfile::from_json_text(j.dump(), "t.json");
  Workload w;
  w.gen = 2;
  auto decode_attention = [&](const HardwareProfile& hw, int64_t prompt) {
    w.prompt = prompt;
    return run(c, hw, "attn=dp1", w).decode.time.attention;
  };
  EXPECT_NEAR(decode_attention(engine, 1024) - decode_attention(engine, 512), 2 * (262144 / 50e12 + 131072 / 0.8e12),
              1e-15);
  EXPECT_NEAR(decode_attention(fused, 1024) - decode_attention(fused, 512), 2 * 131072 / 0.8e12, 1e-15);
  // An attention row with per_position_ns 2 (a position's cost beyond its FLOPs, per query head):
  // 4 query heads · 512 positions · 2 ns = 4.096 us more a layer, on the engine only.
  j["efficiency"]["attention"] = {{{"type", "bf16"}, {"compute", 0.5}, {"memory", 0.8}, {"per_position_ns", 2}}};
  const HardwareProfile engine2 = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_NEAR(decode_attention(engine2, 1024) - decode_attention(engine2, 512),
              2 * (262144 / 50e12 + 131072 / 0.8e12 + 4 * 512 * 2e-9), 1e-15);
  nlohmann::json f = test::sim_test_profile();
  f["efficiency"]["attention"] = j["efficiency"]["attention"];
  const HardwareProfile fused2 = HardwareProfile::from_json_text(f.dump(), "t.json");
  EXPECT_NEAR(decode_attention(fused2, 1024) - decode_attention(fused2, 512), 2 * 131072 / 0.8e12, 1e-15);
}

TEST(SimPredict, WeightsThatFitTheCacheStreamAtItsBandwidth) {
  // small_moge() (bf16 weights) and its lm_head: one decode row of [1000, 128] bf16, the
  // default efficiency (memory 0.8): 1000·128·2 + (128 + 1000)·2 = 258256 bytes at 0.8 of the
  // bandwidth. Its weights, well under 1 GiB, fit a 1 GiB cache of 4000 GB/s; not a 1 MiB one.
  const model::ModelConfig c = small_moge();
  nlohmann::json j = test::sim_test_profile();
  j["device"]["cache_mib"] = 1024;
  j["device"]["cache_bandwidth_gb_s"] = 4000;
  Workload w;
  w.prompt = 16;
  w.gen = 2;
  const Prediction in = run(c, HardwareProfile::from_json_text(j.dump(), "t.json"), "attn=dp1", w);
  EXPECT_TRUE(in.in_cache);
  EXPECT_NEAR(in.decode.time.lm_head, 258256 / (4000e9 * 0.8), 1e-18);
  j["device"]["cache_mib"] = 1;
  const Prediction out = run(c, HardwareProfile::from_json_text(j.dump(), "t.json"), "attn=dp1", w);
  EXPECT_FALSE(out.in_cache);
  EXPECT_NEAR(out.decode.time.lm_head, 258256 / (1000e9 * 0.8), 1e-18);
}

}  // namespace
}  // namespace moge::sim
