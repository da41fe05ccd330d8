// Hardware profiles and parallel plans: the shipped profiles load; a bad profile or plan gives one
// Error naming the file and the field, or the plan and the part, at fault.
#include <string>

#include <gtest/gtest.h>

#include "moge/core/error.h"
#include "moge/model/config.h"
#include "moge/sim/hardware.h"
#include "moge/sim/plan.h"
#include "sim_test_util.h"
#include "test_util.h"

namespace moge::sim {
namespace {

using nlohmann::json;

// The message of the Error `f` throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string profile_error(const json& j) {
  return error_of([&] { HardwareProfile::from_json_text(j.dump(), "bad.json"); });
}

model::ModelConfig pangu() { return model::ModelConfig::from_file(test::source_path("tests/data/pangu_pro_moe/config.json")); }

TEST(SimProfile, ShippedProfilesLoad) {
  for (const char* name : {"ascend-800i-a2", "ascend-300i-duo", "h200-8x"}) {
    const HardwareProfile p = HardwareProfile::from_file(test::source_path(std::string("docs/sim/profiles/") + name + ".json"));
    EXPECT_FALSE(p.name.empty());
    EXPECT_FALSE(p.sources.empty()) << name;
    EXPECT_GT(p.peak_flops(ComputeType::int8), p.peak_flops(ComputeType::bf16)) << name;
    EXPECT_GT(p.memory_capacity_bytes, p.memory_reserved_bytes);
  }
  const HardwareProfile a2 = HardwareProfile::from_file(test::source_path("docs/sim/profiles/ascend-800i-a2.json"));
  EXPECT_EQ(a2.total_devices(), 8);
  EXPECT_DOUBLE_EQ(a2.peak_flops_bf16, 280e12);
}

TEST(SimProfile, EfficiencyLookupTakesTheFirstMatchingBucket) {
  const HardwareProfile p = HardwareProfile::from_json_text(test::sim_test_profile().dump(), "t.json");
  EXPECT_EQ(p.efficiency(KernelClass::gemm, ComputeType::bf16, 64).compute, 0.25);
  EXPECT_EQ(p.efficiency(KernelClass::gemm, ComputeType::bf16, 65).compute, 0.5);  // default
  EXPECT_EQ(p.efficiency(KernelClass::gemm, ComputeType::int8, 8).compute, 0.5);   // no int8 row
  EXPECT_EQ(p.efficiency(KernelClass::gemv, ComputeType::int8, 1).memory, 0.9);
  EXPECT_EQ(p.efficiency(KernelClass::attention, ComputeType::bf16, 1).memory, 0.8);
  EXPECT_EQ(p.efficiency(KernelClass::attention, ComputeType::bf16, 1).per_position_s, 0.0);
  // A row's per_position_ns (decode attention's cost a query head and position beyond its FLOPs).
  json j = test::sim_test_profile();
  j["efficiency"]["attention"] = {{{"type", "bf16"}, {"max_rows", 1}, {"compute", 0.1}, {"memory", 0.5},
                                   {"per_position_ns", 4.5}}};
  const HardwareProfile q = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_DOUBLE_EQ(q.efficiency(KernelClass::attention, ComputeType::bf16, 1).per_position_s, 4.5e-9);
  EXPECT_EQ(q.efficiency(KernelClass::attention, ComputeType::bf16, 2).per_position_s, 0.0);  // default
  j["efficiency"]["attention"][0]["per_position_ns"] = -1;
  EXPECT_THROW(HardwareProfile::from_json_text(j.dump(), "t.json"), Error);
}

TEST(SimProfile, Int4HasItsOwnPeakAndRowsElseInt8s) {
  json j = test::sim_test_profile();
  HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_EQ(p.peak_flops(ComputeType::int4), 200e12);                            // int8's peak
  EXPECT_EQ(p.efficiency(KernelClass::gemv, ComputeType::int4, 1).memory, 0.9);  // int8's row
  EXPECT_EQ(p.kernels_per_expert, 0.0);
  j["device"]["peak_tflops"]["int4"] = 50;
  j["device"]["kernels_per_expert"] = 4;
  j["efficiency"]["gemv"].push_back({{"type", "int4"}, {"compute", 0.1}, {"memory", 0.4}});
  p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_EQ(p.peak_flops(ComputeType::int4), 50e12);
  EXPECT_EQ(p.efficiency(KernelClass::gemv, ComputeType::int4, 1).memory, 0.4);
  EXPECT_EQ(p.efficiency(KernelClass::gemv, ComputeType::int8, 1).memory, 0.9);
  EXPECT_EQ(p.kernels_per_expert, 4.0);
  j["device"]["kernels_per_expert"] = -1;
  EXPECT_EQ(profile_error(j), "bad.json: field 'device.kernels_per_expert' must be non-negative (got -1)");
}

TEST(SimProfile, CalibratedProfilesOfThisMachineLoad) {
  // Written by `moge sim calibrate` (docs/simulator.md): one device, two local devices, two MPI ranks.
  for (auto [name, devices] : {std::pair{"this-cpu", 1}, {"this-cpu-2dev", 2}, {"this-cpu-mpi2", 2}}) {
    const HardwareProfile p = HardwareProfile::from_file(test::source_path(std::string("docs/sim/profiles/") + name + ".json"));
    EXPECT_EQ(p.devices_per_node, devices) << name;
    ASSERT_FALSE(p.sources.empty());
    EXPECT_EQ(p.sources[0].rfind("measured by moge sim calibrate on ", 0), 0u) << p.sources[0];
    EXPECT_EQ(p.activation_bytes, 4) << name;  // the CPU engine's f32 activations
    EXPECT_EQ(p.kernels_per_expert, 1.0) << name;  // a SwiGLU per expert's rows
    // moge's engine: a call per projection, expert GEMVs of up to kGemvMaxRows (4) rows grouped.
    EXPECT_TRUE(p.per_call) << name;
    EXPECT_EQ(p.group_max_rows(ComputeType::int8), 4) << name;
    EXPECT_EQ(p.group_max_rows(ComputeType::f32), -1) << name;
    EXPECT_GT(p.activation_prep(ComputeType::bf16), 0.0) << name;
    EXPECT_GE(p.efficiency(KernelClass::gemm, ComputeType::bf16, 64).overhead_s, 0.0) << name;
  }
}

TEST(SimProfile, PerCallEngineFields) {
  json j = test::sim_test_profile();
  HardwareProfile p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_FALSE(p.per_call);  // absent: fused projections, grouped experts
  EXPECT_EQ(p.activation_prep(ComputeType::bf16), 0.0);
  EXPECT_EQ(p.efficiency(KernelClass::gemv, ComputeType::int8, 1).overhead_s, 0.0);  // the device's
  j["device"]["kernel_overhead_us"] = 2;
  j["device"]["activation_prep_ns"] = {{"bf16", 1.5}, {"int8", 0.5}};
  j["device"]["linear_group_max_rows"] = {{"int8", 4}, {"bf16", 8}};
  j["efficiency"]["gemv"][0]["overhead_us"] = 7;
  p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_TRUE(p.per_call);
  EXPECT_DOUBLE_EQ(p.activation_prep(ComputeType::bf16), 1.5e-9);
  EXPECT_DOUBLE_EQ(p.activation_prep(ComputeType::int8), 0.5e-9);
  EXPECT_EQ(p.activation_prep(ComputeType::f32), 0.0);
  EXPECT_EQ(p.group_max_rows(ComputeType::bf16), 8);
  EXPECT_EQ(p.group_max_rows(ComputeType::f32), -1);  // not listed: never grouped
  EXPECT_DOUBLE_EQ(p.efficiency(KernelClass::gemv, ComputeType::int8, 1).overhead_s, 7e-6);
  EXPECT_DOUBLE_EQ(p.efficiency(KernelClass::gemm, ComputeType::bf16, 64).overhead_s, 2e-6);  // no own: device's
  j["device"]["activation_prep_ns"] = {{"fp8", 1}};
  EXPECT_EQ(profile_error(j).rfind("bad.json: field 'device.activation_prep_ns.fp8' is not a compute type", 0), 0u)
      << profile_error(j);
  j["device"]["activation_prep_ns"] = {{"bf16", -1}};
  EXPECT_EQ(profile_error(j), "bad.json: field 'device.activation_prep_ns.bf16' must be non-negative (got -1)");
  j["device"].erase("activation_prep_ns");
  j["device"]["linear_group_max_rows"] = {{"int8", 0}};
  EXPECT_EQ(profile_error(j), "bad.json: field 'device.linear_group_max_rows.int8' must be a positive integer (got 0)");
  j["device"]["linear_group_max_rows"] = {{"int8", 4}};
  j["device"]["cache_mib"] = 300;
  EXPECT_EQ(profile_error(j), "bad.json: field 'device.cache_bandwidth_gb_s' is missing");
  j["device"]["cache_bandwidth_gb_s"] = 50;
  p = HardwareProfile::from_json_text(j.dump(), "t.json");
  EXPECT_DOUBLE_EQ(p.cache_bytes, 300.0 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(p.cache_bandwidth_bytes_s, 50e9);
  j["efficiency"]["gemv"][0]["overhead_us"] = -1;
  EXPECT_EQ(profile_error(j), "bad.json: field 'efficiency.gemv[0].overhead_us' must be non-negative (got -1)");
}

TEST(SimProfile, MissingFieldNamesFileAndField) {
  json j = test::sim_test_profile();
  j["device"].erase("memory_bandwidth_gb_s");
  const std::string e = profile_error(j);
  EXPECT_NE(e.find("bad.json"), std::string::npos) << e;
  EXPECT_NE(e.find("'device.memory_bandwidth_gb_s' is missing"), std::string::npos) << e;

  j = test::sim_test_profile();
  j["interconnect"].erase("inter_node");
  EXPECT_NE(profile_error(j).find("'interconnect.inter_node' is missing"), std::string::npos);

  j = test::sim_test_profile();
  j.erase("sources");
  EXPECT_NE(profile_error(j).find("'sources'"), std::string::npos);
}

TEST(SimProfile, BadValuesNameTheField) {
  json j = test::sim_test_profile();
  j["device"]["peak_tflops"]["int8"] = -1;
  EXPECT_NE(profile_error(j).find("'device.peak_tflops.int8' must be positive"), std::string::npos);
  j = test::sim_test_profile();
  j["efficiency"]["gemm"][0]["compute"] = 1.5;
  EXPECT_NE(profile_error(j).find("'efficiency.gemm[0].compute' must be at most 1"), std::string::npos);
  j = test::sim_test_profile();
  j["efficiency"]["gemv"][0]["type"] = "fp8";
  EXPECT_NE(profile_error(j).find("'efficiency.gemv[0].type' is invalid"), std::string::npos);
  j = test::sim_test_profile();
  j["efficiency"]["amx_tiles"] = {{{"type", "int8"}, {"compute", 0.5}, {"memory", 0.5}}};
  EXPECT_NE(profile_error(j).find("'efficiency.amx_tiles[0].type' must be bf16"), std::string::npos);
  j = test::sim_test_profile();
  j["interconnect"]["intra_node"]["algorithm"] = "tree";
  EXPECT_NE(profile_error(j).find("'interconnect.intra_node.algorithm'"), std::string::npos);
  j = test::sim_test_profile();
  j["devices_per_node"] = "8";
  EXPECT_NE(profile_error(j).find("'devices_per_node' must be a positive integer"), std::string::npos);
  EXPECT_NE(error_of([] { HardwareProfile::from_json_text("{", "x.json"); }).find("x.json: invalid JSON"),
            std::string::npos);
  EXPECT_NE(error_of([] { HardwareProfile::from_file("/nonexistent/p.json"); }).find("/nonexistent/p.json"),
            std::string::npos);
}

TEST(SimPlan, ParsesThePapersPlan) {
  const ParallelPlan p = ParallelPlan::parse("attn=dp2tp4,experts=ep4tp2,shared=tp8");
  EXPECT_EQ(p.attn_dp, 2);
  EXPECT_EQ(p.attn_tp, 4);
  EXPECT_EQ(p.expert_ep, 4);
  EXPECT_EQ(p.expert_tp, 2);
  EXPECT_EQ(p.shared_dp, 1);
  EXPECT_EQ(p.shared_tp, 8);
  EXPECT_EQ(p.devices(), 8);
  EXPECT_EQ(ParallelPlan::parse(p.to_string()).to_string(), p.to_string());
  // Parts left out span the same devices; "" is one device.
  const ParallelPlan q = ParallelPlan::parse("experts=ep4");
  EXPECT_EQ(q.attn_dp, 4);
  EXPECT_EQ(q.shared_tp, 4);
  EXPECT_EQ(ParallelPlan::parse("").devices(), 1);
}

TEST(SimPlan, BadPlansSayWhatIsWrong) {
  EXPECT_NE(error_of([] { ParallelPlan::parse("attn=dp2tp4,experts=ep4"); }).find("spans 4 devices but 'attn' spans 8"),
            std::string::npos);
  EXPECT_NE(error_of([] { ParallelPlan::parse("mlp=tp2"); }).find("unknown part 'mlp'"), std::string::npos);
  EXPECT_NE(error_of([] { ParallelPlan::parse("attn=ep2"); }).find("'ep' is not a degree of this part"),
            std::string::npos);
  EXPECT_NE(error_of([] { ParallelPlan::parse("attn=tp"); }).find("needs a positive number"), std::string::npos);
  EXPECT_NE(error_of([] { ParallelPlan::parse("attn=dp2,attn=tp2"); }).find("given twice"), std::string::npos);
}

TEST(SimPlan, PlanNeedingMoreDevicesThanTheProfileHas) {
  const HardwareProfile a2 = HardwareProfile::from_file(test::source_path("docs/sim/profiles/ascend-800i-a2.json"));
  const ParallelPlan p = ParallelPlan::parse("attn=dp4tp4,experts=ep8tp2,shared=tp16");
  const std::string e = error_of([&] { p.validate(pangu(), a2); });
  EXPECT_NE(e.find("needs 16 devices"), std::string::npos) << e;
  EXPECT_NE(e.find("has 8"), std::string::npos) << e;
}

TEST(SimPlan, DegreesMustDivideWhatTheySplit) {
  const HardwareProfile a2 = HardwareProfile::from_file(test::source_path("docs/sim/profiles/ascend-800i-a2.json"));
  // 40 heads over tp 3; MoGE's 8 groups over ep 3 (and 64 experts).
  EXPECT_NE(error_of([&] { ParallelPlan::parse("attn=tp3,experts=ep3,shared=tp3").validate(pangu(), a2); })
                .find("num_attention_heads (40) is not divisible by 3"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ParallelPlan::parse("attn=dp3,experts=ep3,shared=dp3").validate(pangu(), a2); })
                .find("num_experts (64) is not divisible by 3"),
            std::string::npos);
  EXPECT_NO_THROW(ParallelPlan::parse("attn=dp2tp4,experts=ep4tp2,shared=tp8").validate(pangu(), a2));
}

}  // namespace
}  // namespace moge::sim
