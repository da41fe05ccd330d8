#pragma once
// HardwareProfile: what the simulator knows of a machine, read from a JSON profile
// (docs/sim/profiles/*.json; fields documented in docs/simulator.md): devices a node, per device
// the peak FLOP/s by compute type, memory bandwidth and capacity, efficiency tables for GEMM and
// GEMV by shape bucket and type, and the cost of a collective per interconnect tier.
// from_json_text() validates every field and throws moge::Error naming the file and the field.
#include <cstdint>
#include <string>
#include <vector>

namespace moge::sim {

// The arithmetic a kernel runs in: bf16 (also f16), int8 (W8A8), f32, or int4 (W4A8: int8
// arithmetic on 4-bit weights; a profile may give it its own peak and table rows, since unpacking
// the nibbles costs a CPU extra work; where it does not, int8's apply).
enum class ComputeType { bf16, int8, f32, int4 };
ComputeType parse_compute_type(const std::string& name);  // throws Error naming the value
const char* compute_type_name(ComputeType t);

// Fractions of the peaks a kernel reaches: of the FLOP/s and of the memory bandwidth.
struct Efficiency {
  double compute = 1.0;
  double memory = 1.0;
  double overhead_s = 0;  // fixed seconds a call (the bucket's, else the device's kernel overhead)
  // Decode attention on a per-call engine: seconds per query head and cached position beyond what
  // its FLOPs cost (moge's attend_row: each position's dot product ends in a horizontal sum, and
  // the softmax's exp; the same at any head width). A row's `per_position_ns`; 0 unless given.
  double per_position_s = 0;
};

// One row of an efficiency table: applies to kernels of `type` whose row count (tokens, or
// token-expert pairs per expert) is at most max_rows (0 = no bound). Rows are tried in file order.
// overhead_s: the fixed time of one call of such a kernel (a CPU's thread-team fork/join,
// oneDNN's dispatch), measured as the time a call takes beyond what its FLOPs and bytes explain;
// negative when the row does not give one (the device's kernel_overhead_s applies).
struct EfficiencyBucket {
  ComputeType type = ComputeType::bf16;
  int64_t max_rows = 0;
  Efficiency efficiency;
  double overhead_s = -1;
};

// Kernel classes with their own efficiency table. amx_tiles: moge's bf16 GEMM on AMX tiles
// (kernels/amx_bf16.h), which expert-parallel devices run their packed bf16 routed experts on at
// every row count (no GEMV): its rows are the real rows rounded up to 16.
enum class KernelClass { gemm, gemv, attention, amx_tiles };
const char* kernel_class_name(KernelClass k);

// A collective on one interconnect tier costs steps·latency + bytes_moved / bandwidth, where a
// ring takes p-1 latency steps and a direct (full-mesh or switched) algorithm one (cost.h).
struct LinkTier {
  double latency_s = 0;
  double bandwidth_bytes_s = 0;  // per device, one direction, as a collective sees it
  bool direct = false;           // algorithm: "direct" (true) or "ring" (false)
};

struct HardwareProfile {
  std::string name;
  std::string source;  // the file it came from
  int devices_per_node = 1;
  int nodes = 1;
  int devices_per_card = 1;  // a card carrying several devices (300I Duo: 2); for per-card figures
  // Per device.
  double peak_flops_bf16 = 0, peak_flops_int8 = 0, peak_flops_f32 = 0;  // FLOP/s (OP/s for int8)
  double peak_flops_int4 = 0;  // W4A8; 0: peak_flops_int8
  double memory_bandwidth_bytes_s = 0;
  // A last-level cache that keeps a small model's weights from one step to the next: when all of
  // a device's weights and KV cache fit in cache_bytes, every kernel streams at
  // cache_bandwidth_bytes_s instead of memory_bandwidth_bytes_s (0: no such level).
  double cache_bytes = 0, cache_bandwidth_bytes_s = 0;
  double memory_capacity_bytes = 0;
  double memory_reserved_bytes = 0;  // held by the runtime, not available to the model
  int activation_bytes = 2;          // bytes per activation element the kernels read and write
  double kernel_overhead_s = 0;      // fixed time every kernel adds (launch, synchronisation)
  // Kernels the software runs per routed expert it touches, each paying kernel_overhead_s: 0 when
  // a device's experts run as one grouped matmul (Ascend's GroupedMatmul); moge on a CPU runs 4
  // (gate, up, SwiGLU, down a expert, moe/mlp.cpp).
  double kernels_per_expert = 0;
  // Seconds per input activation element a matmul call spends preparing its activations before
  // the product, by compute type (moge: converting f32 to bf16 for oneDNN, quantizing rows to
  // int8 for W8A8/W4A8; one thread, so it does not shrink with the device's cores). 0: none.
  double activation_prep_s[4] = {0, 0, 0, 0};
  // How the software issues the matmuls. per_call false: fused QKV and gate|up projections and
  // a device's routed experts as one grouped matmul (Ascend's GroupedMatmul). per_call true
  // (moge's CPU engine, the profile's device.linear_group_max_rows): every projection its own
  // call (q, k, v, o; gate, up, down of each expert and of the shared expert), except that an MoE
  // layer's calls of at most linear_group_max_rows[type] rows run together as one call
  // (kernels::linear_group); -1: that type never groups.
  bool per_call = false;
  int64_t linear_group_max_rows[4] = {-1, -1, -1, -1};
  double activation_prep(ComputeType t) const { return activation_prep_s[int(t)]; }
  int64_t group_max_rows(ComputeType t) const { return linear_group_max_rows[int(t)]; }
  // A matmul with at most gemv_max_rows rows is a GEMV (weight-streaming), else a GEMM.
  int64_t gemv_max_rows = 16;
  Efficiency default_efficiency;
  std::vector<EfficiencyBucket> gemm, gemv, attention;
  // efficiency.amx_tiles (bf16 rows only): measured where the CPU has AMX-BF16 (calibrate). Empty:
  // the profile does not know the kernel, and expert-parallel bf16 experts are costed as oneDNN
  // GEMMs/GEMVs like any other bf16 matmul.
  std::vector<EfficiencyBucket> amx_tiles;
  bool has_amx_tiles() const { return !amx_tiles.empty(); }
  LinkTier intra_node, inter_node;
  std::vector<std::string> sources, assumptions;

  int total_devices() const { return devices_per_node * nodes; }
  double peak_flops(ComputeType t) const;
  // The first bucket of the class's table matching type and rows (int4: else int8's), else
  // default_efficiency; overhead_s is the bucket's, else kernel_overhead_s.
  Efficiency efficiency(KernelClass k, ComputeType t, int64_t rows) const;

  static HardwareProfile from_json_text(const std::string& text, const std::string& source);
  static HardwareProfile from_file(const std::string& path);
};

}  // namespace moge::sim
