#pragma once
// Trace replay: the expert load a recorded routing trace (`moge generate --trace FILE`, format in
// tools/moge/routing_report.h) puts on expert-parallel devices, as a LoadModel the cost model can
// use instead of UniformLoad's analytic uniform routing.
//   TraceLoad load(read_routing_trace("t.json"), /*devices=*/4);
//   load.layer(3, 456)   // layer 3's load per step of 456 tokens, averaged over the trace
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "moge/model/model.h"
#include "moge/sim/load.h"

namespace moge::sim {

// Reads and validates a routing trace: {"top_k", "num_experts", "tokens", "layers": [[ids]...]}
// with every layer holding tokens·top_k expert ids in [0, num_experts). Throws moge::Error naming
// the file and the field at fault. `source` names the text in errors.
model::RoutingTrace parse_routing_trace(const std::string& text, const std::string& source);
model::RoutingTrace read_routing_trace(const std::string& path);

// A layer's replayed load with its spread, for reports and tests.
struct ReplayStats {
  ExpertLoad load;                 // averages over batches
  double max_pairs_stddev = 0;     // standard deviation over batches of the busiest device's pairs
  int64_t batches = 0;             // batches of `tokens` the trace was cut into
  bool wrapped = false;            // the trace is shorter than a batch: tokens were reused
};

// Experts on `devices` devices in contiguous blocks (expert e on device e / (N/devices)), as
// moe::contiguous_placement and the engine's expert parallelism place them. A step of T tokens
// is replayed as consecutive batches of T trace tokens, [0, T), [T, 2T), ...: per batch the pairs
// of each device, their max and mean, and the distinct experts the busiest device touches (the
// most, among devices tied for the max), each averaged over the batches. A trace shorter than
// T is one batch that wraps around to its first token (wrapped = true: repeated tokens keep the
// trace's imbalance instead of averaging it out, so the max is then an overestimate).
// Model layer l replays trace layer l·(trace layers)/layers when the model has `layers` layers
// (set_model_layers; by default the trace's own count, layer l -> l).
class TraceLoad : public LoadModel {
 public:
  TraceLoad(model::RoutingTrace trace, int devices, std::string source = "trace");
  // Maps the model's `layers` layers onto the trace's proportionally (a trace recorded on a model
  // with fewer layers stands for a deeper one).
  void set_model_layers(int layers);

  ExpertLoad layer(int layer, int64_t tokens) const override;
  ReplayStats replay(int layer, int64_t tokens) const;

  const model::RoutingTrace& trace() const { return trace_; }
  int trace_layer(int model_layer) const;

 private:
  model::RoutingTrace trace_;
  int devices_;
  int model_layers_;
  std::string source_;
  mutable std::mutex mutex_;
  mutable std::map<std::pair<int, int64_t>, ReplayStats> cache_;  // by (trace layer, tokens)
};

}  // namespace moge::sim
