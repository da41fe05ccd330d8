// The roofline cost model's unit cases, each against arithmetic written out here.
#include <gtest/gtest.h>

#include "moge/core/error.h"
#include "moge/sim/cost.h"
#include "sim_test_util.h"

namespace moge::sim {
namespace {

HardwareProfile profile() { return HardwareProfile::from_json_text(test::sim_test_profile().dump(), "test.json"); }

TEST(SimCost, LargeGemmIsComputeBound) {
  // 4096³ bf16 GEMM: FLOPs 2·4096³ = 137438953472 at 100e12 · 0.5 (default efficiency) = 2.749 ms;
  // bytes 4096²·2 (weight) + 2·4096²·2 (x, y) = 100663296 at 1e12 · 0.8 = 0.126 ms.
  const OpCost c = matmul_cost(profile(), WeightType::bf16, 4096, 4096, 4096);
  EXPECT_DOUBLE_EQ(c.flops, 137438953472.0);
  EXPECT_DOUBLE_EQ(c.bytes, 100663296.0);
  EXPECT_NEAR(c.seconds, 137438953472.0 / 50e12, 1e-15);
  EXPECT_FALSE(c.memory_bound);
}

TEST(SimCost, SerialCostAddsTheArithmeticAndTheRead) {
  // An attention kernel (the default efficiency: compute 0.5 of 100 TFLOP/s bf16, memory 0.8 of
  // 1000 GB/s) of 1e9 FLOPs and 4e8 bytes: 1e9 / 50e12 = 20 us of arithmetic, 4e8 / 0.8e12 = 500 us
  // of reads. The roofline takes the larger, 500 us; serial_cost the sum, 520 us.
  const OpCost r = roofline(profile(), KernelClass::attention, ComputeType::bf16, 1, 1e9, 4e8);
  const OpCost s = serial_cost(profile(), KernelClass::attention, ComputeType::bf16, 1, 1e9, 4e8);
  EXPECT_NEAR(r.seconds, 500e-6, 1e-15);
  EXPECT_NEAR(s.seconds, 520e-6, 1e-15);
  EXPECT_TRUE(s.memory_bound);
  EXPECT_DOUBLE_EQ(s.flops, 1e9);
  EXPECT_DOUBLE_EQ(s.bytes, 4e8);
  // A row's fixed cost is added once: an attention row with overhead_us 3 -> 523 us.
  nlohmann::json j = test::sim_test_profile();
  j["efficiency"]["attention"] = {{{"type", "bf16"}, {"compute", 0.5}, {"memory", 0.8}, {"overhead_us", 3}}};
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_NEAR(serial_cost(p, KernelClass::attention, ComputeType::bf16, 1, 1e9, 4e8).seconds, 523e-6, 1e-15);
}

TEST(SimCost, SmallGemmUsesItsBucketAndIsMemoryBound) {
  // 32 rows (> gemv_max_rows 16: a GEMM; ≤ 64: the bf16 bucket, compute 0.25, memory 0.5).
  // FLOPs 2·32·1024·1024 = 67108864 -> 67108864 / 25e12 = 2.684 us;
  // bytes 1024·1024·2 + 32·(1024 + 1024)·2 = 2228224 -> 2228224 / 0.5e12 = 4.456 us.
  const OpCost c = matmul_cost(profile(), WeightType::bf16, 32, 1024, 1024);
  EXPECT_DOUBLE_EQ(c.bytes, 2228224.0);
  EXPECT_NEAR(c.seconds, 2228224.0 / 0.5e12, 1e-18);
  EXPECT_TRUE(c.memory_bound);
}

TEST(SimCost, GemvStreamsTheWeights) {
  // One row, 8192 x 8192 int8 (W8A8): the gemv table's int8 row (compute 0.2, memory 0.9).
  // bytes 8192²·1 + (8192 + 8192)·2 = 67141632 -> / 0.9e12 = 74.60 us (compute: 2·8192² / 40e12 = 3.4 us).
  const OpCost c = matmul_cost(profile(), WeightType::int8, 1, 8192, 8192);
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * 8192 * 8192);
  EXPECT_DOUBLE_EQ(c.bytes, 67141632.0);
  EXPECT_NEAR(c.seconds, 67141632.0 / 0.9e12, 1e-18);
  EXPECT_TRUE(c.memory_bound);
  // int4 blocks: 18 bytes per 32 weights -> 8192²·18/32 + 32768 = 37781504 bytes.
  EXPECT_NEAR(matmul_cost(profile(), WeightType::int4, 1, 8192, 8192).seconds, 37781504.0 / 0.9e12, 1e-18);
}

TEST(SimCost, GroupedMatmulReadsEachTouchedExpertOnce) {
  // 40 pairs over 4 experts (10 rows each: a GEMV), 1024 -> 512, int8: bytes 4·1024·512 + 40·1536·2.
  const OpCost c = grouped_matmul_cost(profile(), WeightType::int8, 40, 4, 1024, 512);
  EXPECT_DOUBLE_EQ(c.bytes, 4.0 * 1024 * 512 + 40.0 * 1536 * 2);
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * 40 * 1024 * 512);
  EXPECT_NEAR(c.seconds, c.bytes / 0.9e12, 1e-18);
}

TEST(SimCost, Collectives) {
  const HardwareProfile p = profile();
  // 4 devices fit a node: direct, one latency step: 10 us + 3/4 · 64 MiB / 100e9 = 513.3 us.
  const double s = 64.0 * 1024 * 1024;
  EXPECT_NEAR(collective_seconds(p, Collective::all_gather, 4, s), 10e-6 + 0.75 * s / 100e9, 1e-15);
  EXPECT_NEAR(collective_seconds(p, Collective::reduce_scatter, 4, s), 10e-6 + 0.75 * s / 100e9, 1e-15);
  EXPECT_NEAR(collective_seconds(p, Collective::all_reduce, 4, s), 2 * (10e-6 + 0.75 * s / 100e9), 1e-15);
  // 8 devices span both nodes: ring, 7 steps of 20 us + 7/8 · 8 MB / 10e9 = 140 us + 700 us.
  EXPECT_NEAR(collective_seconds(p, Collective::all_gather, 8, 8e6), 840e-6, 1e-15);
  EXPECT_EQ(collective_seconds(p, Collective::all_gather, 1, s), 0.0);
}

TEST(SimCost, KernelOverheadAddsToEveryKernel) {
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 5;
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_NEAR(matmul_cost(p, WeightType::int8, 1, 8192, 8192).seconds, 67141632.0 / 0.9e12 + 5e-6, 1e-15);
}

TEST(SimCost, BucketOverheadReplacesTheKernelOverhead) {
  // The int8 GEMV row's own fixed cost (3 us) is charged instead of the device's (5 us); the bf16
  // GEMM bucket, without one, keeps the device's.
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 5;
  j["efficiency"]["gemv"][0]["overhead_us"] = 3;
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_NEAR(matmul_cost(p, WeightType::int8, 1, 8192, 8192).seconds, 67141632.0 / 0.9e12 + 3e-6, 1e-15);
  EXPECT_NEAR(matmul_cost(p, WeightType::bf16, 32, 1024, 1024).seconds, 2228224.0 / 0.5e12 + 5e-6, 1e-15);
}

TEST(SimCost, ActivationPreparationIsPerInputElement) {
  // bf16 at 2 ns an input element: 32 rows x 1024 in = 32768 elements = 65.536 us on top of the
  // bucket's 4.456 us; int8 has none given, so it is unchanged.
  nlohmann::json j = test::sim_test_profile();
  j["device"]["activation_prep_ns"] = {{"bf16", 2}};
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_NEAR(matmul_cost(p, WeightType::bf16, 32, 1024, 1024).seconds, 2228224.0 / 0.5e12 + 32768 * 2e-9, 1e-15);
  EXPECT_NEAR(matmul_cost(p, WeightType::int8, 1, 8192, 8192).seconds, 67141632.0 / 0.9e12, 1e-15);
}

TEST(SimCost, GroupedCallSumsItsPartsWithOneFixedCost) {
  // Two parts in one int8 call: 8 pairs over 4 experts [512, 1024] (2 rows each) and 1 row of a
  // [2048, 1024]: bytes 4·1024·512 + 8·1536·2 + 1024·2048 + 3072·2 = 4225024, at 0.9e12, plus
  // one kernel overhead of 5 us and 1 ns an input element: 8·1024 + 1·1024 = 9216 elements.
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 5;
  j["device"]["activation_prep_ns"] = {{"int8", 1}};
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  const OpCost c = grouped_call_cost(p, WeightType::int8, {{8, 4, 1024, 512}, {1, 1, 1024, 2048}});
  EXPECT_DOUBLE_EQ(c.bytes, 4225024.0);
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * 8 * 1024 * 512 + 2.0 * 1024 * 2048);
  EXPECT_NEAR(c.seconds, 4225024.0 / 0.9e12 + 5e-6 + 9216e-9, 1e-15);
  // The same parts as two calls pay the fixed cost twice.
  const double apart = grouped_matmul_cost(p, WeightType::int8, 8, 4, 1024, 512).seconds +
                       matmul_cost(p, WeightType::int8, 1, 1024, 2048).seconds;
  EXPECT_NEAR(apart - c.seconds, 5e-6, 1e-15);
}

// moge's engine (a per_call profile): how kernels::linear splits a call into oneDNN executions.
nlohmann::json engine_profile_json() {
  nlohmann::json j = test::sim_test_profile();
  j["device"]["kernel_overhead_us"] = 1;
  j["device"]["linear_group_max_rows"] = {{"int8", 4}};
  j["device"]["activation_prep_ns"] = {{"bf16", 1}};
  return j;
}
HardwareProfile engine_profile() { return HardwareProfile::from_json_text(engine_profile_json().dump(), "t.json"); }

TEST(SimCost, EngineRowsPadBf16AndSplitF32) {
  // bf16: kernels::padded_row_count (exact up to 48; above, a multiple of 16 oneDNN blocks well).
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 40), (std::vector<int64_t>{40}));
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 53), (std::vector<int64_t>{64}));
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 64), (std::vector<int64_t>{64}));
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 65), (std::vector<int64_t>{80}));
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 96), (std::vector<int64_t>{96}));
  EXPECT_EQ(engine_matmul_rows(WeightType::bf16, 477), (std::vector<int64_t>{480}));
  EXPECT_EQ(engine_matmul_rows(WeightType::f32, 53), (std::vector<int64_t>{53}));
  EXPECT_EQ(engine_matmul_rows(WeightType::f32, 85), (std::vector<int64_t>{64, 21}));
  EXPECT_EQ(engine_matmul_rows(WeightType::f32, 128), (std::vector<int64_t>{128}));
  EXPECT_EQ(engine_matmul_rows(WeightType::int8, 85), (std::vector<int64_t>{85}));
  EXPECT_EQ(engine_matmul_rows(WeightType::int4, 477), (std::vector<int64_t>{477}));
}

TEST(SimCost, Bf16ComputesThePaddedCount) {
  // 40 rows of [1024, 1024] bf16: exact, the bf16 bucket (<= 64 rows: memory 0.5, compute 0.25):
  // bytes 1024·1024·2 + 40·2048·2 = 2260992 -> 4.521984 us (compute 2·40·1024² / 25e12 = 3.36 us),
  // plus 1 us and 40·1024 ns of preparation.
  const HardwareProfile p = engine_profile();
  EXPECT_NEAR(matmul_cost(p, WeightType::bf16, 40, 1024, 1024).seconds, 2260992 / 0.5e12 + 1e-6 + 40960e-9, 1e-15);
  // 65 rows run as 80: FLOPs 2·80·1024² = 167772160 at 100e12 · 0.5 (the default: no bucket above
  // 64) = 3.355443 us; bytes 1024²·2 + 80·2048·2 = 2424832 at 0.8e12 = 3.03104 us: compute-bound.
  // One fixed cost; the preparation of the 65 real rows only.
  const OpCost c = matmul_cost(p, WeightType::bf16, 65, 1024, 1024);
  EXPECT_DOUBLE_EQ(c.flops, 167772160.0);
  EXPECT_DOUBLE_EQ(c.bytes, 2424832.0);
  EXPECT_NEAR(c.seconds, 167772160 / 50e12 + 1e-6 + 65 * 1024e-9, 1e-15);
  EXPECT_FALSE(c.memory_bound);
  // 80 rows cost the same as 65 plus 15 rows of preparation.
  EXPECT_NEAR(matmul_cost(p, WeightType::bf16, 80, 1024, 1024).seconds - c.seconds, 15 * 1024e-9, 1e-15);
}

TEST(SimCost, AmxTilesComputeRowsRoundedUpToSixteen) {
  // engine_profile() with an amx_tiles table: up to 16 rows compute 0.1 / memory 0.5 + 2 us,
  // above 3 us at 0.4 / 0.8; bf16 preparation 1 ns an input element.
  nlohmann::json j = engine_profile_json();
  j["efficiency"]["amx_tiles"] = {{{"type", "bf16"}, {"max_rows", 16}, {"compute", 0.1}, {"memory", 0.5}, {"overhead_us", 2}},
                                  {{"type", "bf16"}, {"compute", 0.4}, {"memory", 0.8}, {"overhead_us", 3}}};
  const HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  ASSERT_TRUE(p.has_amx_tiles());
  EXPECT_FALSE(engine_profile().has_amx_tiles());
  EXPECT_EQ(amx_tile_rows(0), 0);
  EXPECT_EQ(amx_tile_rows(1), 16);
  EXPECT_EQ(amx_tile_rows(16), 16);
  EXPECT_EQ(amx_tile_rows(17), 32);
  // 1 row of [512, 1024] runs 16: FLOPs 2·16·1024·512 = 16777216 at 100e12 · 0.1 = 1.6777 us;
  // bytes 1024·512·2 + 16·1536·2 = 1097728 at 1e12 · 0.5 = 2.195456 us: memory-bound; + 2 us
  // + the one real row's preparation, 1024 ns. No GEMV, no padded_row_count.
  const OpCost one = amx_matmul_cost(p, 1, 1024, 512);
  EXPECT_DOUBLE_EQ(one.flops, 16777216.0);
  EXPECT_DOUBLE_EQ(one.bytes, 1097728.0);
  EXPECT_TRUE(one.memory_bound);
  EXPECT_NEAR(one.seconds, 1097728 / 0.5e12 + 2e-6 + 1024e-9, 1e-15);
  // 17 rows run 32, the second bucket: FLOPs 33554432 at 40e12 = 0.83886 us; bytes 1048576 +
  // 32·1536·2 = 1146880 at 0.8e12 = 1.4336 us; + 3 us + 17·1024 ns.
  const OpCost c17 = amx_matmul_cost(p, 17, 1024, 512);
  EXPECT_DOUBLE_EQ(c17.flops, 33554432.0);
  EXPECT_NEAR(c17.seconds, 1146880 / 0.8e12 + 3e-6 + 17 * 1024e-9, 1e-15);
  // 32 rows: the same product, 15 more rows prepared.
  EXPECT_NEAR(amx_matmul_cost(p, 32, 1024, 512).seconds - c17.seconds, 15 * 1024e-9, 1e-15);
  EXPECT_EQ(amx_matmul_cost(p, 0, 1024, 512).seconds, 0.0);
}

TEST(SimCost, F32AboveSixtyFourRowsIsABulkAndATail) {
  // 85 rows of [512, 512] f32 (25 TFLOP/s, the default efficiency 0.5 / 0.8; no preparation):
  // 64 rows: FLOPs 2·64·512² = 33554432 -> 2.684355 us; bytes 512²·4 + 64·1024·2 = 1179648 ->
  // 1.47456 us; 21 rows: FLOPs 11010048 -> 0.880804 us; bytes 1048576 + 21·1024·2 = 1091584 ->
  // 1.36448 us (memory-bound). Each execution reads the weight and pays the fixed cost (1 us).
  const OpCost c = matmul_cost(engine_profile(), WeightType::f32, 85, 512, 512);
  EXPECT_DOUBLE_EQ(c.flops, 33554432.0 + 11010048.0);
  EXPECT_DOUBLE_EQ(c.bytes, 1179648.0 + 1091584.0);
  EXPECT_NEAR(c.seconds, 33554432 / 12.5e12 + 1091584 / 0.8e12 + 2e-6, 1e-15);
  // Fused-kernel profiles (no linear_group_max_rows) cost the 85 rows as one kernel.
  const OpCost fused = matmul_cost(profile(), WeightType::f32, 85, 512, 512);
  EXPECT_DOUBLE_EQ(fused.flops, 2.0 * 85 * 512 * 512);
}

TEST(SimCost, WeightTypes) {
  EXPECT_EQ(parse_weight_type("int4"), WeightType::int4);
  EXPECT_EQ(compute_type_of(WeightType::int4), ComputeType::int4);
  EXPECT_THROW(parse_weight_type("fp8"), Error);
}

}  // namespace
}  // namespace moge::sim
