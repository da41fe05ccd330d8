#include "moge/sim/sweep.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/sim/load.h"

namespace moge::sim {
namespace {

// Pangu Pro MoE's fixed choices (MOGE.md §3) for the shapes the paper's ranges leave open.
constexpr int kHeadDim = 128, kGroups = 8, kTopK = 8, kSharedWidthRatio = 4, kWidthStep = 256;
constexpr int64_t kVocab = 153376;
constexpr double kTargetParams = 72e9, kMinParams = 60e9, kMaxParams = 80e9;

model::ModelConfig make_shape(int hidden, int heads, int kv_heads, int layers, int experts, int width) {
  const nlohmann::json j = {{"vocab_size", kVocab},
                            {"hidden_size", hidden},
                            {"num_hidden_layers", layers},
                            {"num_attention_heads", heads},
                            {"num_key_value_heads", kv_heads},
                            {"head_dim", kHeadDim},
                            {"num_experts", experts},
                            {"num_experts_per_tok", kTopK},
                            {"num_expert_groups", kGroups},
                            {"moe_intermediate_size", width},
                            {"shared_expert_intermediate_size", kSharedWidthRatio * width},
                            {"rms_norm_eps", 1e-5},
                            {"rope_theta", 1.6e7},
                            {"max_position_embeddings", 131072}};
  return model::ModelConfig::from_json_text(j.dump(), "sweep shape");
}

std::vector<int> divisors(int n) {
  std::vector<int> out;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0) out.push_back(i);
  return out;
}

}  // namespace

std::string shape_name(const model::ModelConfig& c) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "literal" + string&&.
  std::string s;
  for (const auto& [label, value] : {std::pair{"d", c.hidden_size}, {" h", c.num_attention_heads},
                                     {"/", c.num_key_value_heads}, {" L", c.num_hidden_layers},
                                     {" E", c.num_experts}, {"x", c.moe_intermediate_size}}) {
    s += label;
    s += std::to_string(value);
  }
  return s;
}

std::vector<SweepShape> paper_shapes() {
  std::vector<SweepShape> out;
  for (int hidden : {4096, 5120, 6144, 8192})
    for (int heads : {32, 48, 64})
      for (int kv : {8, 16})
        for (int layers : {40, 48, 56, 64})
          for (int experts : {32, 48, 64}) {
            // Parameters are affine in the expert width w (experts and shared expert): solve for
            // 72B, round to the step, keep it only if it lands in 60–80B.
            const double p0 = double(make_shape(hidden, heads, kv, layers, experts, kWidthStep).total_parameters());
            const double p1 = double(make_shape(hidden, heads, kv, layers, experts, 2 * kWidthStep).total_parameters());
            const double per_step = p1 - p0;
            const long steps = std::lround(1 + (kTargetParams - p0) / per_step);
            if (steps < 1) continue;
            const model::ModelConfig c = make_shape(hidden, heads, kv, layers, experts, int(steps) * kWidthStep);
            const double total = double(c.total_parameters());
            if (total < kMinParams || total > kMaxParams) continue;
            out.push_back({shape_name(c), c});
          }
  return out;
}

std::vector<ParallelPlan> enumerate_plans(int max_devices) {
  check(max_devices >= 1, "enumerate_plans: at least one device");
  std::vector<ParallelPlan> out;
  for (int d : divisors(max_devices))
    for (int a : divisors(d))
      for (int e : divisors(d))
        for (int s : divisors(d)) {
          ParallelPlan p;
          p.attn_dp = a;
          p.attn_tp = d / a;
          p.expert_ep = e;
          p.expert_tp = d / e;
          p.shared_dp = s;
          p.shared_tp = d / s;
          out.push_back(p);
        }
  return out;
}

int64_t Sweep::feasible() const {
  return std::count_if(results.begin(), results.end(), [](const SweepResult& r) { return r.best >= 0; });
}

std::string Sweep::nothing_fits_reason(const SweepOptions& o) const {
  int64_t never_fit = 0, too_slow = 0;
  double fastest = std::numeric_limits<double>::infinity();
  const SweepResult* fastest_of = nullptr;
  int64_t fastest_batch = 0;
  for (const SweepResult& r : results) {
    bool any_fit = false;
    for (const SweepPoint& p : r.points) {
      if (!p.fits) continue;
      any_fit = true;
      if (p.decode_seconds < fastest) {
        fastest = p.decode_seconds;
        fastest_of = &r;
        fastest_batch = p.batch;
      }
    }
    (any_fit ? too_slow : never_fit) += 1;
  }
  char limit[32];
  std::snprintf(limit, sizeof limit, "%.3g ms", o.latency_limit_s * 1e3);
  std::string why = "no configuration has a decode latency under " + std::string(limit) +
                    " and fits in memory: of " + std::to_string(results.size()) + " (shape, plan) pairs (" +
                    std::to_string(invalid) + " more the plans cannot split), " + std::to_string(never_fit) +
                    " fit at no batch and " + std::to_string(too_slow) + " fit but exceed the limit at every batch";
  if (fastest_of) {
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.3g ms", fastest * 1e3);
    why += "; the fastest that fits takes " + std::string(ms) + " a token (" + shapes[fastest_of->shape].name +
           ", plan " + fastest_of->plan.to_string() + ", batch " + std::to_string(fastest_batch) + ")";
  }
  return why;
}

Sweep run_sweep(const std::vector<SweepShape>& shapes, const HardwareProfile& profile, const SweepOptions& o) {
  check(!shapes.empty(), "sweep: no model shapes");
  check(!o.batches.empty(), "sweep: no batch sizes");
  for (int64_t b : o.batches) check(b >= 1, "sweep: batch sizes must be positive (got " + std::to_string(b) + ")");
  check(o.latency_limit_s > 0, "sweep: the latency limit must be positive");
  Sweep out;
  out.shapes = shapes;
  const std::vector<ParallelPlan> plans = enumerate_plans(profile.total_devices());
  for (int s = 0; s < int(shapes.size()); ++s) {
    const model::ModelConfig& c = shapes[s].config;
    // One load model per expert-parallel degree, shared by the plans: its cache (top-k Monte
    // Carlo) is the expensive part.
    std::map<int, std::unique_ptr<UniformLoad>> loads;
    for (const ParallelPlan& plan : plans) {
      try {
        plan.validate(c, profile);
      } catch (const Error&) {
        ++out.invalid;
        continue;
      }
      auto& load = loads[plan.expert_ep];
      if (!load) load = std::make_unique<UniformLoad>(c.moe_config().router, plan.expert_ep, o.seed);
      SweepResult r;
      r.shape = s;
      r.plan = plan;
      for (int64_t batch : o.batches) {
        Workload w = o.workload;
        w.batch = batch;
        const Prediction p = predict(c, profile, plan, w, *load);
        SweepPoint pt;
        pt.batch = batch;
        pt.decode_seconds = p.decode.seconds;
        pt.tokens_per_s_per_device = p.decode.tokens_per_s_per_device;
        pt.memory_bytes = p.memory.total();
        pt.fits = p.memory.fits();
        pt.under_limit = p.decode.seconds < o.latency_limit_s;
        if (pt.ok() && (r.best < 0 || pt.tokens_per_s_per_device > r.points[r.best].tokens_per_s_per_device))
          r.best = int(r.points.size());
        r.points.push_back(pt);
      }
      out.results.push_back(std::move(r));
    }
  }
  // Feasible first, by best throughput; ties keep enumeration order (fewer devices first).
  std::stable_sort(out.results.begin(), out.results.end(), [](const SweepResult& a, const SweepResult& b) {
    if ((a.best >= 0) != (b.best >= 0)) return a.best >= 0;
    return a.best_throughput() > b.best_throughput();
  });
  return out;
}

std::vector<LatencyThroughput> pareto_front(std::vector<LatencyThroughput> points) {
  // By latency, then the highest throughput first: a point is on the front when it beats the
  // throughput of every faster (or equally fast) point before it.
  std::sort(points.begin(), points.end(), [](const LatencyThroughput& a, const LatencyThroughput& b) {
    return a.latency_s != b.latency_s ? a.latency_s < b.latency_s : a.tokens_per_s > b.tokens_per_s;
  });
  std::vector<LatencyThroughput> front;
  for (const LatencyThroughput& p : points)
    if (front.empty() || p.tokens_per_s > front.back().tokens_per_s) front.push_back(p);
  return front;
}

}  // namespace moge::sim
