#pragma once
// The configuration search (MOGE.md §5): over model shapes, the parallel plans a profile allows
// and decode batch sizes, the best decode throughput per device of each (shape, plan) whose
// per-token latency is under a limit and whose memory fits, ranked.
//   Sweep s = run_sweep(paper_shapes(), profile, options);   s.results[0] is the best
#include <cstdint>
#include <string>
#include <vector>

#include "moge/model/config.h"
#include "moge/sim/hardware.h"
#include "moge/sim/plan.h"
#include "moge/sim/predict.h"

namespace moge::sim {

struct SweepShape {
  std::string name;  // e.g. "d5120 h40/8 L48 E64x1344"
  model::ModelConfig config;
};

// The paper's ranges (MOGE.md §5): hidden 4096–8192, query heads 32–64, KV heads 8–16, layers
// 40–64, routed experts 32–64, 60–80B parameters. Grid: hidden {4096, 5120, 6144, 8192} × query
// heads {32, 48, 64} × KV heads {8, 16} × layers {40, 48, 56, 64} × experts {32, 48, 64}; the
// rest as Pangu Pro MoE (head_dim 128, vocabulary 153376, MoGE with 8 groups and top-8, shared
// expert 4× an expert's width). Each shape's expert width is the multiple of 256 that brings the
// total nearest 72B (Pangu Pro MoE's size); shapes that cannot land in 60–80B are left out.
std::vector<SweepShape> paper_shapes();

// A short name of a shape: hidden, query/KV heads, layers, experts × expert width.
std::string shape_name(const model::ModelConfig& c);

// Every plan over D devices for each D dividing max_devices: attention dp·tp = D, experts
// ep·tp = D, shared dp·tp = D, all factorizations.
std::vector<ParallelPlan> enumerate_plans(int max_devices);

struct SweepOptions {
  std::vector<int64_t> batches = {1, 8, 16, 32, 64, 128, 256, 512};
  double latency_limit_s = 0.05;  // decode per-token latency must be below this
  Workload workload;              // batch ignored: each of `batches` in turn
  uint64_t seed = 1;              // of the top-k load Monte Carlo
};

// One batch of one (shape, plan).
struct SweepPoint {
  int64_t batch = 0;
  double decode_seconds = 0;  // per-token latency
  double tokens_per_s_per_device = 0;
  double memory_bytes = 0;    // a device needs
  bool fits = false;
  bool under_limit = false;
  bool ok() const { return fits && under_limit; }
};

struct SweepResult {
  int shape = 0;  // index into Sweep::shapes
  ParallelPlan plan;
  std::vector<SweepPoint> points;  // one per batch, in options order
  int best = -1;                   // the ok point of highest throughput, -1 if none
  double best_throughput() const { return best < 0 ? 0.0 : points[best].tokens_per_s_per_device; }
};

struct Sweep {
  std::vector<SweepShape> shapes;
  std::vector<SweepResult> results;  // every valid (shape, plan); feasible first, by best throughput
  int64_t invalid = 0;               // (shape, plan) pairs the plan cannot split (plan.validate)
  int64_t feasible() const;          // results with an ok point
  // Why nothing qualified, when nothing did: counts of results that never fit, that fit but never
  // met the limit, and the fastest latency seen among those that fit.
  std::string nothing_fits_reason(const SweepOptions& options) const;
};

// A point of a throughput-latency plane: per-token latency and throughput per device.
struct LatencyThroughput {
  double latency_s = 0;
  double tokens_per_s = 0;
};

// The Pareto front (lower latency and higher throughput are better): the points no other point
// beats on both with at least one strictly better, by ascending latency (so throughput rises
// along it); of equal points, one.
std::vector<LatencyThroughput> pareto_front(std::vector<LatencyThroughput> points);

// Throws Error for empty shapes or batches, a non-positive batch or limit.
Sweep run_sweep(const std::vector<SweepShape>& shapes, const HardwareProfile& profile, const SweepOptions& options);

}  // namespace moge::sim
