#pragma once
// --devices for the commands that run a model (generate, logits, bench): expert parallelism over
// in-process devices or MPI ranks (parallel/expert_parallel.h), and the per-device, per-layer
// load report of such a run.
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "moge/parallel/expert_parallel.h"

namespace moge::cli {

// "" or "1": one device, no expert parallelism; "D": D in-process devices; "mpi": one device a
// rank of the mpirun that started us.
struct DevicesSpec {
  enum class Kind { single, local, mpi } kind = Kind::single;
  int count = 1;  // local: D
};
DevicesSpec parse_devices(const std::string& text);  // Error naming --devices on nonsense

// Adds --devices and --dispatch to `cmd`.
void add_devices_options(CLI::App* cmd, std::string& devices, std::string& dispatch);

// Runs fn(comm, device) on every device: comm is null for a single device. Local devices share
// `threads` OpenMP threads (at least one each). Under MPI a rank that throws prints one line and
// ends every rank; local devices' errors are rethrown here once, naming the device.
void run_on(const DevicesSpec& spec, int threads, const std::function<void(parallel::Comm* comm, int device)>& fn);

// One device's model: the whole model (comm null), or this device's expert-parallel share.
// dispatch: "" for the routing mode's default scheme.
class DeviceModel {
 public:
  DeviceModel(const std::string& dir, kernels::WeightFormat format, parallel::Comm* comm, const std::string& dispatch);
  const model::Model& model() const { return ep_ ? ep_->model() : single_; }
  parallel::ExpertParallelMoe* runner() { return ep_ ? &ep_->runner() : nullptr; }
  // Every device's loads on every device (a collective); empty for a single device.
  std::vector<std::vector<parallel::LayerLoad>> gather_loads();
  std::string scheme() const;

 private:
  parallel::Comm* comm_;
  model::Model single_;
  std::unique_ptr<parallel::ExpertParallelModel> ep_;
};

// The run's load of every device and layer ([device][layer], from parallel::gather_loads): a
// table, JSON, and a device x layer heat map of token-expert pairs (SVG).
void print_device_loads(const std::vector<std::vector<parallel::LayerLoad>>& loads, const std::string& scheme,
                        std::FILE* out);
nlohmann::json device_loads_json(const std::vector<std::vector<parallel::LayerLoad>>& loads,
                                 const std::string& scheme);
void write_device_heatmap(const std::string& path, const std::vector<std::vector<parallel::LayerLoad>>& loads,
                          const std::string& title);

// The routed experts' time against perfect balance: Σ over calls and layers of the slowest
// device's expert time over Σ of the devices' mean (LayerLoad::expert_step_s / _balanced_s).
double expert_time_over_balanced(const std::vector<std::vector<parallel::LayerLoad>>& loads);

// The same from the least disturbed run: per device and layer, the least routed-expert time
// over the repetitions (each a [device][layer] load); then Σ over layers of the slowest device's
// over Σ of the devices' mean. The usual defence of a benchmark against interference (another
// process, a noisy neighbour of the VM), which the max over devices would otherwise amplify.
double expert_time_over_balanced_best(const std::vector<std::vector<std::vector<parallel::LayerLoad>>>& repetitions);
// Σ over the repetitions.
std::vector<std::vector<parallel::LayerLoad>> sum_loads(
    const std::vector<std::vector<std::vector<parallel::LayerLoad>>>& repetitions);

}  // namespace moge::cli
