#pragma once
// Expert parallelism for the decoder's MoE blocks (MOGE.md §4, issue 5): every device (a rank of
// a Comm: an in-process device or an MPI process) holds the whole model but only its own routed
// experts (model::ExpertSlice, from a Placement). Attention, norms, the router and the
// embeddings are replicated, so every device holds every token's hidden state when a MoE block
// starts. The block runs in one of two schemes:
//
//  all_gather (the paper's, for MoGE): every device routes all T tokens (the same routing
//    everywhere: the router is replicated and deterministic), runs its own experts on the
//    tokens that chose them, adds the shared expert for its own slice of the tokens
//    (data parallel), and the partial outputs are summed by a reduce-scatter over token
//    slices, then all-gathered (the all-reduce written as the paper writes it). With MoGE every
//    device gets exactly T·K/D token-expert pairs.
//  all_to_all (what top-k MoE needs): each device routes only its slice of the tokens, sends
//    each (token, expert) row to the expert's device, which computes and sends the result back;
//    the slice's outputs are combined at home and all-gathered.
//
// Results: equal to the single-device model up to the order of the final sums (a device order
// instead of a token's expert order in all_gather); the tests state the tolerance.
//
// Measurement: per layer, this device's token-expert pairs, distinct experts touched, and time
// split into compute (experts and shared expert), wait (a barrier before the exchange: the time
// this device waits for the slowest) and communication (the collectives after it).
#include <cstdint>
#include <string>
#include <vector>

#include "moge/model/model.h"
#include "moge/parallel/comm.h"
#include "moge/moe/placement.h"

namespace moge::parallel {

using moe::ExpertRange;
using moe::Placement;

enum class DispatchScheme { all_gather, all_to_all };
DispatchScheme parse_dispatch_scheme(const std::string& name);  // "all_gather" | "all_to_all"
const char* dispatch_scheme_name(DispatchScheme scheme);
// all_gather for grouped (MoGE) routing, all_to_all otherwise.
DispatchScheme default_dispatch_scheme(moe::RoutingMode mode);

// What one device did in one layer, summed over the calls since the last reset.
struct LayerLoad {
  int64_t calls = 0;
  int64_t tokens = 0;           // tokens through the layer (all devices')
  int64_t pairs = 0;            // token-expert pairs this device computed
  int64_t experts_touched = 0;  // distinct experts with at least one pair, summed over calls
  double compute_s = 0, wait_s = 0, comm_s = 0;
  // Balance of each call's routing over the devices (moe/balance.h), summed: divide by calls.
  double is_sum = 0, balancedness_sum = 0, max_vio_sum = 0;
  // The routed experts' own work, in CPU time of the device's thread (immune to devices sharing
  // cores): this device's, and over the calls Σ max_d and Σ mean_d of every device's (the same
  // on every device; filled in by ExpertParallelMoe::gather_loads, 0 before). expert_step_s /
  // expert_balanced_s is the expert part's time against perfect balance (total work / D).
  double expert_cpu_s = 0, expert_step_s = 0, expert_balanced_s = 0;

  LayerLoad& operator+=(const LayerLoad& o);  // the sums of two runs
};

// Every device's loads, on every device (a collective): [device][layer].
std::vector<std::vector<LayerLoad>> gather_loads(Comm& comm, const std::vector<LayerLoad>& mine);

class ExpertParallelMoe : public model::MoeRunner {
 public:
  // `comm` and `placement` must outlive this; comm.size() == placement.devices().
  ExpertParallelMoe(Comm& comm, const Placement& placement, int num_layers, DispatchScheme scheme);

  void run(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
           moe::MoeCache& cache) override;

  DispatchScheme scheme() const { return scheme_; }
  // This device's, per layer; expert_step_s and expert_balanced_s are 0 (they need every
  // device's times: gather_loads).
  const std::vector<LayerLoad>& load() const { return load_; }
  // Every device's loads on every device, [device][layer], with expert_step_s and
  // expert_balanced_s from every device's expert time of each call (a collective: every device
  // calls it, after the same calls).
  std::vector<std::vector<LayerLoad>> gather_loads();
  void reset_load();
  // With rounds > 0, devices take turns running their routed experts, so that each is timed
  // alone (what D devices with their own cores would measure, on a machine with fewer cores than
  // devices), in `rounds` rounds; each expert keeps its least time (a noisy machine's
  // interference only adds time) and a device's time is their sum. Slower (rounds·D barriers a
  // layer, experts run `rounds` times); for the expert time against perfect balance. 0: every
  // device times its one run.
  void set_isolated_expert_timing(int rounds) { isolate_rounds_ = rounds; }

 private:
  void run_all_gather(LayerLoad& load, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                      moe::MoeCache& cache);
  void run_all_to_all(LayerLoad& load, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                      moe::MoeCache& cache);
  // Runs this device's experts over their rows of cache.dispatch (MoeLayer::run_experts),
  // counting their pairs and experts touched and timing them in thread CPU time.
  void run_own_experts(LayerLoad& load, const moe::MoeLayer& moe, const float* xs, float* ye, moe::MoeCache& cache);
  // y (all tokens) from each device's finished slice (counts[p] floats a device, packed in device
  // order; this device's already in place).
  void gather_slices(float* y, const std::vector<int64_t>& counts, LayerLoad& load);

  Comm& comm_;
  const Placement& placement_;
  DispatchScheme scheme_;
  std::vector<LayerLoad> load_;
  // Per layer, this device's routed-expert CPU time of each call since the last reset: gathered
  // by gather_loads, not in the layer, so that no collective stops the devices between their
  // routed experts and the shared expert (on a decode token one device runs the shared expert
  // while the other only waits at the layer's end).
  std::vector<std::vector<double>> call_expert_s_;
  int layer_ = 0;  // the layer of the current run()
  std::vector<int> device_of_;  // expert -> device, for the balance metrics
  int isolate_rounds_ = 0;
  // Scratch reused across calls.
  std::vector<float> rows_in_, rows_out_, partial_, recv_in_, recv_out_;
  std::vector<int32_t> send_expert_, recv_expert_;
};

// The slice of `tokens` that device `device` of `devices` owns: [first, second).
std::pair<int64_t, int64_t> token_slice(int64_t tokens, int device, int devices);

// Throws Error naming the checkpoint, the device and its missing experts unless the checkpoint
// at `dir` holds every device's routed experts in every layer. Reads tensor names only, so every
// rank can check every device before any of them loads or computes.
void check_checkpoint_placement(const std::string& dir, const model::ModelConfig& cfg, const Placement& placement);

// One device of an expert-parallel run: the model with only this device's experts loaded
// (after check_checkpoint_placement), and the runner plugged into it.
class ExpertParallelModel {
 public:
  // scheme: nullptr for default_dispatch_scheme of the model's routing mode.
  ExpertParallelModel(const std::string& dir, kernels::WeightFormat format, Comm& comm,
                      const DispatchScheme* scheme = nullptr);
  ExpertParallelModel(const ExpertParallelModel&) = delete;
  ExpertParallelModel& operator=(const ExpertParallelModel&) = delete;

  const model::Model& model() const { return model_; }
  const Placement& placement() const { return placement_; }
  ExpertParallelMoe& runner() { return runner_; }

 private:
  model::ModelConfig cfg_;
  Placement placement_;
  model::Model model_;
  ExpertParallelMoe runner_;
};

}  // namespace moge::parallel
