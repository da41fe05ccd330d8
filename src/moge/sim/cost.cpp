#include "moge/sim/cost.h"

#include <algorithm>
#include <cmath>

#include "moge/core/error.h"
#include "moge/kernels/matmul.h"

namespace moge::sim {

WeightType parse_weight_type(const std::string& name) {
  if (name == "f32") return WeightType::f32;
  if (name == "bf16") return WeightType::bf16;
  if (name == "int8") return WeightType::int8;
  if (name == "int4") return WeightType::int4;
  throw Error("unknown weight type '" + name + "' (expected f32, bf16, int8 or int4)");
}

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::f32: return "f32";
    case WeightType::bf16: return "bf16";
    case WeightType::int8: return "int8";
    case WeightType::int4: return "int4";
  }
  return "?";
}

ComputeType compute_type_of(WeightType t) {
  switch (t) {
    case WeightType::f32: return ComputeType::f32;
    case WeightType::bf16: return ComputeType::bf16;
    case WeightType::int8: return ComputeType::int8;  // W8A8
    case WeightType::int4: return ComputeType::int4;  // W4A8: int8 arithmetic, int4's own peak if given
  }
  return ComputeType::bf16;
}

double weight_bytes_per_element(WeightType t) {
  switch (t) {
    case WeightType::f32: return 4;
    case WeightType::bf16: return 2;
    case WeightType::int8: return 1;
    case WeightType::int4: return 18.0 / 32.0;
  }
  return 2;
}

namespace {

// An op's compute and memory times at the profile's efficiency for `rows`, plus its overhead:
// overlapped (the larger of the two) or one after the other (their sum).
OpCost timed(const HardwareProfile& p, KernelClass k, ComputeType type, int64_t rows, double flops, double bytes,
             bool overlapped) {
  const Efficiency e = p.efficiency(k, type, rows);
  OpCost c;
  c.flops = flops;
  c.bytes = bytes;
  const double t_compute = flops / (p.peak_flops(type) * e.compute);
  const double t_memory = bytes / (p.memory_bandwidth_bytes_s * e.memory);
  c.memory_bound = t_memory >= t_compute;
  c.seconds = (overlapped ? std::max(t_compute, t_memory) : t_compute + t_memory) + e.overhead_s;
  return c;
}

}  // namespace

OpCost roofline(const HardwareProfile& p, KernelClass k, ComputeType type, int64_t rows, double flops, double bytes) {
  return timed(p, k, type, rows, flops, bytes, /*overlapped=*/true);
}

OpCost serial_cost(const HardwareProfile& p, KernelClass k, ComputeType type, int64_t rows, double flops, double bytes) {
  return timed(p, k, type, rows, flops, bytes, /*overlapped=*/false);
}

std::vector<int64_t> engine_matmul_rows(WeightType w, int64_t rows) {
  switch (w) {
    case WeightType::bf16: return {kernels::padded_row_count(rows)};  // the engine's own rule
    case WeightType::f32: {  // Rows::bucketed, the engine's own split
      const int64_t bulk = kernels::bucketed_bulk(rows);
      if (bulk == rows) return {rows};
      return {bulk, rows - bulk};
    }
    default: return {rows};
  }
}

OpCost matmul_cost(const HardwareProfile& p, WeightType w, int64_t rows, int64_t in, int64_t out) {
  if (!p.per_call || rows <= 0) return grouped_matmul_cost(p, w, double(rows), 1.0, in, out);
  // moge's engine: each oneDNN execution a kernel of its own rows. Padded bf16 rows are real
  // work (FLOPs, the bucket of the padded count), but only the `rows` real rows are converted to
  // bf16 first, so the preparation is taken back off the padded count.
  OpCost c;
  int64_t executed = 0;
  for (const int64_t r : engine_matmul_rows(w, rows)) {
    const OpCost e = grouped_matmul_cost(p, w, double(r), 1.0, in, out);
    c.flops += e.flops, c.bytes += e.bytes, c.seconds += e.seconds, c.memory_bound = e.memory_bound;
    executed += r;
  }
  c.seconds -= double(executed - rows) * double(in) * p.activation_prep(compute_type_of(w));
  return c;
}

int64_t amx_tile_rows(int64_t rows) { return rows <= 0 ? 0 : (rows + 15) / 16 * 16; }

OpCost amx_matmul_cost(const HardwareProfile& p, int64_t rows, int64_t in, int64_t out) {
  if (rows <= 0) return {};
  const double r16 = double(amx_tile_rows(rows));
  const double flops = 2.0 * r16 * double(in) * double(out);
  const double bytes = double(in) * double(out) * weight_bytes_per_element(WeightType::bf16) +
                       r16 * double(in + out) * p.activation_bytes;
  OpCost c = roofline(p, KernelClass::amx_tiles, ComputeType::bf16, rows, flops, bytes);
  c.seconds += double(rows) * double(in) * p.activation_prep(ComputeType::bf16);
  return c;
}

OpCost grouped_matmul_cost(const HardwareProfile& p, WeightType w, double pairs, double experts, int64_t in,
                           int64_t out) {
  return grouped_call_cost(p, w, {{pairs, experts, in, out}});
}

OpCost grouped_call_cost(const HardwareProfile& p, WeightType w, const std::vector<GroupPart>& parts) {
  int64_t rows = 0;
  double flops = 0, bytes = 0, prepared = 0;
  for (const GroupPart& g : parts) {
    if (g.pairs <= 0 || g.experts <= 0) continue;
    rows = std::max(rows, int64_t(std::ceil(g.pairs / g.experts - 1e-9)));
    flops += 2.0 * g.pairs * double(g.in) * double(g.out);
    bytes += g.experts * double(g.in) * double(g.out) * weight_bytes_per_element(w) +
             g.pairs * double(g.in + g.out) * p.activation_bytes;
    prepared += g.pairs * double(g.in);
  }
  if (rows == 0) return {};
  const KernelClass k = rows <= p.gemv_max_rows ? KernelClass::gemv : KernelClass::gemm;
  OpCost c = roofline(p, k, compute_type_of(w), rows, flops, bytes);
  c.seconds += prepared * p.activation_prep(compute_type_of(w));
  return c;
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::all_gather: return "all_gather";
    case Collective::reduce_scatter: return "reduce_scatter";
    case Collective::all_reduce: return "all_reduce";
    case Collective::all_to_all: return "all_to_all";
  }
  return "?";
}

double collective_seconds(const HardwareProfile& p, Collective c, int group, double bytes) {
  if (group <= 1) return 0;
  const LinkTier& tier = group <= p.devices_per_node ? p.intra_node : p.inter_node;
  const double steps = tier.direct ? 1.0 : double(group - 1);
  const double one_pass = steps * tier.latency_s + double(group - 1) / group * bytes / tier.bandwidth_bytes_s;
  // An all-reduce is a reduce-scatter followed by an all-gather (as the paper runs it).
  return c == Collective::all_reduce ? 2 * one_pass : one_pass;
}

}  // namespace moge::sim
