#pragma once
// The per-operator cost model (Calculon-style roofline) on one device of a HardwareProfile:
//   compute op:  t = max(FLOPs / (peak(type) · eff.compute), bytes / (bandwidth · eff.memory))
//                    + the kernel's fixed cost (its bucket's overhead, else the profile's kernel
//                    overhead; 0 unless given)
//                    + for a matmul, prep(type) · its input activation elements (the profile's
//                    activation_prep_ns: moge converts or quantizes them before the product)
//   collective:  t = steps · latency + (p − 1)/p · S / bandwidth   (all-reduce: twice that)
// where eff comes from the profile's table for the kernel class and row count, S is the size of
// the full (gathered / unreduced) buffer, p the group size, steps p − 1 for a ring and 1 for a
// direct algorithm, and the tier intra-node when the group fits in one node.
#include <cstdint>
#include <string>
#include <vector>

#include "moge/sim/hardware.h"

namespace moge::sim {

// How weights are stored; what a matmul on them computes in (f32, bf16, or int8 for W8A8 and
// W4A8) and streams per weight (4, 2, 1, and 18/32 bytes: moge's int4 blocks of 32 4-bit weights
// plus an f16 scale; int8's per-row scales are ignored).
enum class WeightType { f32, bf16, int8, int4 };
WeightType parse_weight_type(const std::string& name);  // f32|bf16|int8|int4; Error otherwise
const char* weight_type_name(WeightType t);
ComputeType compute_type_of(WeightType t);
double weight_bytes_per_element(WeightType t);

struct OpCost {
  double flops = 0;
  double bytes = 0;  // read and written in device memory
  double seconds = 0;
  bool memory_bound = false;
};

// The roofline of one kernel.
OpCost roofline(const HardwareProfile& p, KernelClass k, ComputeType type, int64_t rows, double flops, double bytes);

// A kernel whose reads from memory do not overlap its arithmetic: the two times added instead of
// their maximum, t = FLOPs / (peak(type) · eff.compute) + bytes / (bandwidth · eff.memory) + the
// fixed cost. moge's decode attention (kernels/attention.cpp attend_row): one thread a query
// head walks its cached rows with a dot product, a softmax and an axpy; the first head of a KV
// group reads the rows from memory, the others from the core's cache, and the step's other
// kernels evict them again before the next step (measured on tiny-moge's shape at 528
// positions: 23 us a call with the cache hot, 37-57 us with it cold).
OpCost serial_cost(const HardwareProfile& p, KernelClass k, ComputeType type, int64_t rows, double flops, double bytes);

// The row counts of the oneDNN executions moge's engine runs for one kernels::linear call of
// `rows` rows on `w` weights (kernels/weight.cpp linear, kernels/matmul.h), in the order run:
//   bf16 (served weights, Rows::padded): one execution of kernels::padded_row_count(rows) rows,
//     the count itself up to 48, above it rounded UP to a multiple of 16 that oneDNN blocks well
//     (the padding rows are computed like the others);
//   f32 (Rows::bucketed): up to 64 rows exactly; above, a multiple of 32 and a tail below 32, two
//     executions when the count is not a multiple of 32 (oneDNN reads and packs the weight in each);
//   int8, int4 (moge's own kernels): exactly `rows`, one call.
// `moge sim calibrate` counts a measured call's FLOPs and bytes over the same executions.
std::vector<int64_t> engine_matmul_rows(WeightType w, int64_t rows);

// y[rows, out] = x[rows, in] · Wᵀ: a GEMV when rows ≤ profile.gemv_max_rows, else a GEMM.
// FLOPs 2·rows·in·out; bytes in·out·weight_bytes + (rows·in + rows·out)·activation_bytes.
// On a per_call profile (moge's CPU engine), the call is the executions of engine_matmul_rows,
// each costed as a kernel of its rows (its bucket, its fixed cost, the weight read again); the
// activation preparation stays on the `rows` real rows (matmul.cpp converts only those).
OpCost matmul_cost(const HardwareProfile& p, WeightType w, int64_t rows, int64_t in, int64_t out);

// moge's bf16 GEMM on AMX tiles (kernels/amx_bf16.h), which expert-parallel devices run their
// packed bf16 routed experts on (model::ExpertSlice::own_memory), at any row count: it computes
// the rows rounded up to 16 (amx_tile_rows), in steps of 16 rows of one kernel. One kernel of
// the profile's amx_tiles table, the bucket of the real rows: FLOPs 2·rows16·in·out, bytes
// in·out·2 + rows16·(in + out)·activation_bytes, plus bf16's preparation on the real rows (the
// kernel converts them to bf16 first). Needs p.has_amx_tiles().
int64_t amx_tile_rows(int64_t rows);
OpCost amx_matmul_cost(const HardwareProfile& p, int64_t rows, int64_t in, int64_t out);

// A grouped matmul over `experts` experts sharing `pairs` rows (token-expert pairs): FLOPs
// 2·pairs·in·out, weights read once per expert; the shape bucket is pairs per expert (rounded up).
OpCost grouped_matmul_cost(const HardwareProfile& p, WeightType w, double pairs, double experts, int64_t in,
                           int64_t out);

// One part of a grouped call: `pairs` rows over `experts` weights of [out, in].
struct GroupPart {
  double pairs, experts;
  int64_t in, out;
};
// Several parts as ONE kernel call (moge's linear_group runs the routed and the shared experts'
// GEMVs of a layer in one thread team): FLOPs, bytes and prepared activations summed, the bucket
// of the most rows per weight, one fixed cost.
OpCost grouped_call_cost(const HardwareProfile& p, WeightType w, const std::vector<GroupPart>& parts);

enum class Collective { all_gather, reduce_scatter, all_reduce, all_to_all };
const char* collective_name(Collective c);

// Seconds for a collective over `group` devices on `bytes` (the full buffer); 0 for group 1.
double collective_seconds(const HardwareProfile& p, Collective c, int group, double bytes);

}  // namespace moge::sim
