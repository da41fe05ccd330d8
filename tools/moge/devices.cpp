#include "devices.h"

#include <omp.h>

#include <algorithm>
#include <exception>

#include "moge/core/error.h"
#include "moge/parallel/local_comm.h"
#include "moge/parallel/mpi_comm.h"
#include "moge/report/svg.h"

namespace moge::cli {

DevicesSpec parse_devices(const std::string& text) {
  if (text.empty() || text == "1") return {};
  if (text == "mpi") return {DevicesSpec::Kind::mpi, 0};
  try {
    size_t used = 0;
    const int d = std::stoi(text, &used);
    if (used == text.size() && d >= 1 && d <= 1024) return {d == 1 ? DevicesSpec::Kind::single : DevicesSpec::Kind::local, d};
  } catch (const std::exception&) {
  }
  throw Error("--devices: '" + text + "' is neither a device count (1..1024) nor 'mpi'");
}

void add_devices_options(CLI::App* cmd, std::string& devices, std::string& dispatch) {
  cmd->add_option("--devices", devices,
                  "expert parallelism: D in-process devices, or 'mpi' (one device a rank, under mpirun)");
  cmd->add_option("--dispatch", dispatch,
                  "expert-parallel scheme: all_gather (the paper's; default for MoGE) or all_to_all "
                  "(default for top-k / group-limited)");
}

void run_on(const DevicesSpec& spec, int threads, const std::function<void(parallel::Comm*, int)>& fn) {
  if (spec.kind == DevicesSpec::Kind::single) {
    fn(nullptr, 0);
    return;
  }
  if (spec.kind == DevicesSpec::Kind::local) {
    const int total = threads > 0 ? threads : omp_get_max_threads();
    parallel::run_on_devices(spec.count, [&](parallel::Comm& comm, int device) { fn(&comm, device); },
                             std::max(1, total / spec.count));
    return;
  }
  parallel::MpiSession session;
  int rank = 0, size = 1;
  try {
    parallel::MpiComm comm;
    rank = comm.rank(), size = comm.size();
    fn(&comm, rank);
    comm.barrier();
  } catch (const std::exception& e) {
    const bool ours = dynamic_cast<const Error*>(&e) != nullptr;
    std::fflush(stdout);
    std::fprintf(stderr, "moge: %s: rank %d of %d: %s\n", ours ? "error" : "internal error", rank, size, e.what());
    std::fflush(stderr);
    parallel::abort_world(ours ? 1 : 2);
  }
}

DeviceModel::DeviceModel(const std::string& dir, kernels::WeightFormat format, parallel::Comm* comm,
                         const std::string& dispatch)
    : comm_(comm) {
  if (!comm) {
    single_ = model::Model::load(dir, format);
    return;
  }
  if (dispatch.empty()) {
    ep_ = std::make_unique<parallel::ExpertParallelModel>(dir, format, *comm);
  } else {
    const parallel::DispatchScheme scheme = parallel::parse_dispatch_scheme(dispatch);
    ep_ = std::make_unique<parallel::ExpertParallelModel>(dir, format, *comm, &scheme);
  }
}

std::vector<std::vector<parallel::LayerLoad>> DeviceModel::gather_loads() {
  return ep_ ? ep_->runner().gather_loads() : std::vector<std::vector<parallel::LayerLoad>>{};
}

std::string DeviceModel::scheme() const {
  return ep_ ? parallel::dispatch_scheme_name(ep_->runner().scheme()) : "none";
}

double expert_time_over_balanced(const std::vector<std::vector<parallel::LayerLoad>>& loads) {
  double step = 0, balanced = 0;
  for (const parallel::LayerLoad& l : loads.at(0)) {  // the same on every device
    step += l.expert_step_s;
    balanced += l.expert_balanced_s;
  }
  return balanced > 0 ? step / balanced : 1.0;
}

double expert_time_over_balanced_best(const std::vector<std::vector<std::vector<parallel::LayerLoad>>>& repetitions) {
  if (repetitions.empty() || repetitions[0].empty()) return 1.0;
  const size_t devices = repetitions[0].size(), layers = repetitions[0][0].size();
  double step = 0, balanced = 0;
  for (size_t i = 0; i < layers; ++i) {
    double slowest = 0, sum = 0;
    for (size_t d = 0; d < devices; ++d) {
      double best = repetitions[0][d][i].expert_cpu_s;
      for (const auto& r : repetitions) best = std::min(best, r[d][i].expert_cpu_s);
      slowest = std::max(slowest, best);
      sum += best;
    }
    step += slowest;
    balanced += sum / double(devices);
  }
  return balanced > 0 ? step / balanced : 1.0;
}

std::vector<std::vector<parallel::LayerLoad>> sum_loads(
    const std::vector<std::vector<std::vector<parallel::LayerLoad>>>& repetitions) {
  std::vector<std::vector<parallel::LayerLoad>> total;
  for (const auto& r : repetitions) {
    if (total.empty()) total.assign(r.size(), std::vector<parallel::LayerLoad>(r.empty() ? 0 : r[0].size()));
    for (size_t d = 0; d < r.size(); ++d)
      for (size_t i = 0; i < r[d].size(); ++i) total[d][i] += r[d][i];
  }
  return total;
}

void print_device_loads(const std::vector<std::vector<parallel::LayerLoad>>& loads, const std::string& scheme,
                        std::FILE* out) {
  const size_t devices = loads.size(), layers = devices ? loads[0].size() : 0;
  std::fprintf(out, "\nexpert parallelism: %zu devices, %s dispatch\n", devices, scheme.c_str());
  std::fprintf(out, "| layer | pairs per device | experts touched per call (mean per device) | IS (mean per call) | "
                    "balancedness | MaxVio | compute ms (max dev) | wait ms (mean) | comm ms (mean) |\n"
                    "|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < layers; ++i) {
    std::string pairs;
    double touched = 0, compute_max = 0, wait = 0, comm = 0;
    for (size_t d = 0; d < devices; ++d) {
      const parallel::LayerLoad& l = loads[d][i];
      if (d > 0) pairs += ' ';
      pairs += std::to_string(l.pairs);
      touched += l.calls ? double(l.experts_touched) / double(l.calls) : 0;
      compute_max = std::max(compute_max, l.compute_s);
      wait += l.wait_s;
      comm += l.comm_s;
    }
    const parallel::LayerLoad& l0 = loads[0][i];
    const double calls = std::max<double>(1, double(l0.calls));
    std::fprintf(out, "| %zu | %s | %.2f | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f |\n", i, pairs.c_str(),
                 touched / double(devices), l0.is_sum / calls, l0.balancedness_sum / calls, l0.max_vio_sum / calls,
                 1e3 * compute_max, 1e3 * wait / double(devices), 1e3 * comm / double(devices));
  }
  std::fprintf(out, "routed experts: time %.3f x the perfectly balanced time (slowest device / mean, "
                    "thread CPU time a call, summed; 1 = perfect balance)\n",
               expert_time_over_balanced(loads));
}

nlohmann::json device_loads_json(const std::vector<std::vector<parallel::LayerLoad>>& loads,
                                 const std::string& scheme) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& device : loads) {
    nlohmann::json layers = nlohmann::json::array();
    for (const parallel::LayerLoad& l : device)
      layers.push_back({{"calls", l.calls},           {"tokens", l.tokens},        {"pairs", l.pairs},
                        {"experts_touched", l.experts_touched}, {"compute_s", l.compute_s},
                        {"wait_s", l.wait_s},         {"comm_s", l.comm_s},
                        {"is_mean", l.calls ? l.is_sum / double(l.calls) : 0.0},
                        {"balancedness_mean", l.calls ? l.balancedness_sum / double(l.calls) : 0.0},
                        {"max_vio_mean", l.calls ? l.max_vio_sum / double(l.calls) : 0.0},
                        {"expert_cpu_s", l.expert_cpu_s}, {"expert_step_s", l.expert_step_s},
                        {"expert_balanced_s", l.expert_balanced_s}});
    devices.push_back(layers);
  }
  return {{"devices", loads.size()}, {"dispatch", scheme}, {"per_device_layer", devices},
          {"expert_time_over_balanced", expert_time_over_balanced(loads)}};
}

void write_device_heatmap(const std::string& path, const std::vector<std::vector<parallel::LayerLoad>>& loads,
                          const std::string& title) {
  std::vector<std::vector<double>> values(loads.size());
  for (size_t d = 0; d < loads.size(); ++d)
    for (const parallel::LayerLoad& l : loads[d]) values[d].push_back(double(l.pairs));
  report::write_heatmap_svg(path, title, "layer", "device", values, {}, {}, "token-expert pairs");
}

}  // namespace moge::cli
