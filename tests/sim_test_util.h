#pragma once
// A small hardware profile whose numbers make hand arithmetic easy, for the simulator's tests.
#include <string>

#include <nlohmann/json.hpp>

namespace moge::test {

// 4 devices a node, 2 nodes; bf16 100 TFLOP/s, int8 200, f32 25; 1000 GB/s; 64 GiB.
// Efficiency: default compute 0.5 / memory 0.8; GEMM bf16 up to 64 rows 0.25 / 0.5; GEMV int8
// 0.2 / 0.9. Intra-node: 10 us, 100 GB/s, direct; inter-node: 20 us, 10 GB/s, ring.
inline nlohmann::json sim_test_profile() {
  return nlohmann::json::parse(R"({
    "name": "test",
    "devices_per_node": 4,
    "nodes": 2,
    "device": {
      "peak_tflops": {"bf16": 100, "int8": 200, "f32": 25},
      "memory_bandwidth_gb_s": 1000,
      "memory_capacity_gib": 64,
      "activation_bytes": 2
    },
    "efficiency": {
      "default": {"compute": 0.5, "memory": 0.8},
      "gemv_max_rows": 16,
      "gemm": [{"type": "bf16", "max_rows": 64, "compute": 0.25, "memory": 0.5}],
      "gemv": [{"type": "int8", "compute": 0.2, "memory": 0.9}]
    },
    "interconnect": {
      "intra_node": {"latency_us": 10, "bandwidth_gb_s": 100, "algorithm": "direct"},
      "inter_node": {"latency_us": 20, "bandwidth_gb_s": 10, "algorithm": "ring"}
    },
    "sources": ["made up for the tests"]
  })");
}

}  // namespace moge::test
