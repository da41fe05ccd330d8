#include "moge/parallel/expert_parallel.h"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "moge/core/clock.h"
#include "moge/core/error.h"
#include "moge/model/safetensors.h"
#include "moge/moe/balance.h"
#include "moge/moe/dispatch.h"

namespace moge::parallel {
namespace {

using Clock = std::chrono::steady_clock;

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Pins the calling thread to one online CPU, chosen by `turn` modulo their number, for its
// lifetime, then gives back the thread's former CPU set. Does nothing where the system refuses
// (a cpuset without that CPU): the run is then timed wherever it lands.
class PinnedToCpu {
 public:
  explicit PinnedToCpu(int turn) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1 || sched_getaffinity(0, sizeof(former_), &former_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(int(turn % cpus), &one);
    pinned_ = sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~PinnedToCpu() {
    if (pinned_) sched_setaffinity(0, sizeof(former_), &former_);
  }
  PinnedToCpu(const PinnedToCpu&) = delete;
  PinnedToCpu& operator=(const PinnedToCpu&) = delete;

 private:
  cpu_set_t former_{};
  bool pinned_ = false;
};

// y[t] += w · rows[pick(t·K + i)] over a token's entries in entry order: the order
// MoeLayer::forward's combine_rows sums in.
template <class Pick>
void combine(int64_t tokens, int k, int d, const float* weight, const float* rows, Pick&& pick, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    float* yt = y + t * d;
    for (int i = 0; i < k; ++i) {
      const float* src = rows + pick(t * k + i) * d;
      const float w = weight[t * k + i];
      for (int j = 0; j < d; ++j) yt[j] += w * src[j];
    }
  }
}

// Per device: `per_token` times the tokens of its slice (token_slice).
std::vector<int64_t> slice_counts(int64_t tokens, int devices, int64_t per_token) {
  std::vector<int64_t> counts;
  for (int p = 0; p < devices; ++p) {
    auto [a, b] = token_slice(tokens, p, devices);
    counts.push_back((b - a) * per_token);
  }
  return counts;
}

std::vector<int64_t> scaled(const std::vector<int64_t>& counts, int64_t by) {
  std::vector<int64_t> out(counts);
  for (int64_t& c : out) c *= by;
  return out;
}

}  // namespace

DispatchScheme parse_dispatch_scheme(const std::string& name) {
  if (name == "all_gather") return DispatchScheme::all_gather;
  if (name == "all_to_all") return DispatchScheme::all_to_all;
  throw Error("--dispatch: '" + name + "' is not a dispatch scheme (all_gather, all_to_all)");
}

const char* dispatch_scheme_name(DispatchScheme scheme) {
  return scheme == DispatchScheme::all_gather ? "all_gather" : "all_to_all";
}

DispatchScheme default_dispatch_scheme(moe::RoutingMode mode) {
  return mode == moe::RoutingMode::grouped ? DispatchScheme::all_gather : DispatchScheme::all_to_all;
}

std::pair<int64_t, int64_t> token_slice(int64_t tokens, int device, int devices) {
  return {tokens * device / devices, tokens * (device + 1) / devices};
}

ExpertParallelMoe::ExpertParallelMoe(Comm& comm, const Placement& placement, int num_layers, DispatchScheme scheme)
    : comm_(comm), placement_(placement), scheme_(scheme), load_(size_t(num_layers)), call_expert_s_(size_t(num_layers)) {
  for (int e = 0; e < placement.num_experts(); ++e) device_of_.push_back(placement.owner(e));
  check(comm.size() == placement.devices(), "expert parallelism: " + std::to_string(comm.size()) +
                                                " ranks for a placement on " + std::to_string(placement.devices()) +
                                                " devices");
}

LayerLoad& LayerLoad::operator+=(const LayerLoad& o) {
  calls += o.calls, tokens += o.tokens, pairs += o.pairs, experts_touched += o.experts_touched;
  compute_s += o.compute_s, wait_s += o.wait_s, comm_s += o.comm_s;
  is_sum += o.is_sum, balancedness_sum += o.balancedness_sum, max_vio_sum += o.max_vio_sum;
  expert_cpu_s += o.expert_cpu_s, expert_step_s += o.expert_step_s, expert_balanced_s += o.expert_balanced_s;
  return *this;
}

void ExpertParallelMoe::reset_load() {
  load_.assign(load_.size(), LayerLoad{});
  for (std::vector<double>& calls : call_expert_s_) calls.clear();
}

std::vector<std::vector<LayerLoad>> ExpertParallelMoe::gather_loads() {
  // Every device ran the same layer calls: one all_gather of every call's expert time.
  std::vector<double> mine;
  for (const std::vector<double>& calls : call_expert_s_) mine.insert(mine.end(), calls.begin(), calls.end());
  const size_t n = mine.size(), devices = size_t(comm_.size());
  std::vector<double> all(n * devices);
  std::vector<int64_t> counts(devices, int64_t(n));
  comm_.all_gather_v(mine.data(), all.data(), counts, packed_displacements(counts));
  std::vector<LayerLoad> settled = load_;
  size_t at = 0;
  for (size_t layer = 0; layer < settled.size(); ++layer) {
    LayerLoad& l = settled[layer];
    l.expert_step_s = l.expert_balanced_s = 0;
    for (size_t call = 0; call < call_expert_s_[layer].size(); ++call, ++at) {
      double most = 0, sum = 0;
      for (size_t d = 0; d < devices; ++d) {
        most = std::max(most, all[d * n + at]);
        sum += all[d * n + at];
      }
      l.expert_step_s += most;
      l.expert_balanced_s += sum / double(devices);
    }
  }
  return parallel::gather_loads(comm_, settled);
}

void ExpertParallelMoe::run(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                            moe::MoeCache& cache) {
  check(moe.config().router.num_experts == placement_.num_experts(),
        "expert parallelism: the model has " + std::to_string(moe.config().router.num_experts) +
            " experts, the placement " + std::to_string(placement_.num_experts()));
  LayerLoad& load = load_.at(size_t(layer));
  layer_ = layer;
  ++load.calls;
  load.tokens += tokens;
  if (scheme_ == DispatchScheme::all_gather) run_all_gather(load, moe, x, tokens, y, cache);
  else run_all_to_all(load, moe, x, tokens, y, cache);
  // cache.routing now holds every token's experts, the same on every device.
  const moe::BalanceMetrics m = moe::measure_balance(cache.routing.expert.data(), tokens, cache.routing.top_k,
                                                     placement_.num_experts(), device_of_, placement_.devices());
  load.is_sum += m.imbalance_score;
  load.balancedness_sum += m.balancedness;
  load.max_vio_sum += m.max_vio;
}

std::vector<std::vector<LayerLoad>> gather_loads(Comm& comm, const std::vector<LayerLoad>& mine) {
  constexpr int kFields = 13;
  std::vector<double> packed;
  for (const LayerLoad& l : mine)
    packed.insert(packed.end(), {double(l.calls), double(l.tokens), double(l.pairs), double(l.experts_touched),
                                 l.compute_s, l.wait_s, l.comm_s, l.is_sum, l.balancedness_sum, l.max_vio_sum,
                                 l.expert_cpu_s, l.expert_step_s, l.expert_balanced_s});
  std::vector<double> all(packed.size() * size_t(comm.size()));
  comm.all_gather(packed.data(), int64_t(packed.size()), all.data());
  std::vector<std::vector<LayerLoad>> out(size_t(comm.size()), std::vector<LayerLoad>(mine.size()));
  for (size_t d = 0; d < out.size(); ++d)
    for (size_t i = 0; i < mine.size(); ++i) {
      const double* f = all.data() + (d * mine.size() + i) * kFields;
      out[d][i] = {int64_t(f[0]), int64_t(f[1]), int64_t(f[2]), int64_t(f[3]), f[4], f[5], f[6], f[7], f[8], f[9],
                   f[10], f[11], f[12]};
    }
  return out;
}

void ExpertParallelMoe::run_own_experts(LayerLoad& load, const moe::MoeLayer& moe, const float* xs, float* ye,
                                        moe::MoeCache& cache) {
  const ExpertRange own = placement_.experts(comm_.rank());
  const moe::Dispatch& dp = cache.dispatch;
  load.pairs += dp.offsets[size_t(own.end)] - dp.offsets[size_t(own.begin)];
  for (int e = own.begin; e < own.end; ++e) load.experts_touched += dp.expert_rows(e) > 0 ? 1 : 0;
  double mine = 0;
  if (isolate_rounds_ == 0) {
    const double cpu0 = thread_cpu_seconds();
    moe.run_experts(xs, ye, cache, own.begin, own.end);
    mine = thread_cpu_seconds() - cpu0;
  } else {
    // One device at a time, the others in the barrier, in rounds of turns; each expert is timed
    // on its own and its least time kept (every round computes the same ye), and the device's
    // time is their sum. Interference only adds time, and this VM's speed drifts by up to 2-3x in
    // spells of ~100 ms: an expert (a few ms) needs one quiet run in `rounds`, a whole device
    // (tens of ms) would need a quiet spell as long as all its experts.
    // Every turn of a round runs on CPU (round mod CPUs), so all devices are timed on the same
    // CPU in a round and every expert on every CPU over the rounds: one CPU can stay 1.5x slower
    // than the other for seconds here (its host core busy with another guest's work), and left
    // where the scheduler keeps it, a device's thread would read that CPU's slowness as the
    // device's work. Only the device's own thread is pinned: exact for one thread a device.
    const int64_t base = dp.offsets[size_t(own.begin)];
    const int d = moe.config().d_model;
    std::vector<double> best(size_t(own.end - own.begin), 1e30);
    for (int round = 0; round < isolate_rounds_; ++round)
      for (int turn = 0; turn < comm_.size(); ++turn) {
        comm_.barrier();
        if (turn != comm_.rank()) continue;
        const PinnedToCpu pin(round);
        // A device with a core of its own finds its buffers (the bf16 rows the GEMMs read, the
        // activations) in that core's cache. Here the other devices' turns and the move to this
        // CPU have evicted them, and the first expert timed paid for bringing them back: 10-12%
        // more a row than the device's other experts (sim-mid, p 2048, D 8), in proportion to
        // that expert's rows. One untimed pass over the device's experts first.
        moe.run_experts(xs, ye, cache, own.begin, own.end);
        for (int e = own.begin; e < own.end; ++e) {
          if (dp.expert_rows(e) == 0) continue;
          const int64_t r0 = dp.offsets[size_t(e)] - base;
          const double cpu0 = thread_cpu_seconds();
          moe.run_experts(xs + r0 * d, ye + r0 * d, cache, e, e + 1);
          best[size_t(e - own.begin)] = std::min(best[size_t(e - own.begin)], thread_cpu_seconds() - cpu0);
        }
      }
    for (double t : best)
      if (t < 1e30) mine += t;
  }
  load.expert_cpu_s += mine;
  call_expert_s_[size_t(layer_)].push_back(mine);
}

void ExpertParallelMoe::gather_slices(float* y, const std::vector<int64_t>& counts, LayerLoad& load) {
  const std::vector<int64_t> displs = packed_displacements(counts);
  const size_t me = size_t(comm_.rank());
  std::vector<float> mine(y + displs[me], y + displs[me] + counts[me]);  // send and receive must not overlap
  const auto t = Clock::now();
  comm_.all_gather_v(mine.data(), y, counts, displs);
  load.comm_s += seconds_since(t);
}

void ExpertParallelMoe::run_all_gather(LayerLoad& load, const moe::MoeLayer& moe, const float* x, int64_t tokens,
                                       float* y, moe::MoeCache& cache) {
  const moe::MoeConfig& cfg = moe.config();
  const int d = cfg.d_model, devices = comm_.size(), me = comm_.rank();
  const auto start = Clock::now();
  moe.route(x, tokens, cache.routing);
  cache.dispatch = moe::make_dispatch(cache.routing, cfg.router.num_experts);
  const moe::Dispatch& dp = cache.dispatch;

  // This device's experts: their rows of the dispatch, gathered, through the experts.
  const ExpertRange own = placement_.experts(me);
  const int64_t r0 = dp.offsets[size_t(own.begin)], r1 = dp.offsets[size_t(own.end)];
  rows_in_.resize(size_t((r1 - r0) * d));
  rows_out_.resize(rows_in_.size());
  moe::gather_rows(dp, x, d, rows_in_.data(), {r0, r1});
  run_own_experts(load, moe, rows_in_.data(), rows_out_.data(), cache);

  // Partial outputs of all tokens: the shared expert on this device's slice, plus its experts'.
  partial_.assign(size_t(tokens * d), 0.0f);
  const auto [s0, s1] = token_slice(tokens, me, devices);
  moe.run_shared(x + s0 * d, s1 - s0, partial_.data() + s0 * d, cache);
  moe::combine_rows(dp, rows_out_.data(), cache.routing.weight.data(), d, partial_.data(), {r0, r1});
  load.compute_s += seconds_since(start);

  auto t = Clock::now();
  comm_.barrier();
  load.wait_s += seconds_since(t);
  const std::vector<int64_t> counts = slice_counts(tokens, devices, d);
  t = Clock::now();
  comm_.reduce_scatter_sum_v(partial_.data(), y + s0 * d, counts);
  load.comm_s += seconds_since(t);
  gather_slices(y, counts, load);
}

void ExpertParallelMoe::run_all_to_all(LayerLoad& load, const moe::MoeLayer& moe, const float* x, int64_t tokens,
                                       float* y, moe::MoeCache& cache) {
  const moe::MoeConfig& cfg = moe.config();
  const int d = cfg.d_model, k = cfg.router.top_k, n = cfg.router.num_experts;
  const int devices = comm_.size(), me = comm_.rank();
  const auto [s0, s1] = token_slice(tokens, me, devices);
  const int64_t local = s1 - s0, entries = local * k;
  auto start = Clock::now();

  // Route this device's tokens; order their (token, expert) entries by destination device.
  moe::Routing routing;
  moe.route(x + s0 * d, local, routing);
  std::vector<int64_t> send_rows(size_t(devices), 0), position(static_cast<size_t>(entries));
  for (int64_t e = 0; e < entries; ++e) ++send_rows[size_t(placement_.owner(routing.expert[size_t(e)]))];
  std::vector<int64_t> send_at = packed_displacements(send_rows);
  send_expert_.resize(size_t(entries));
  rows_in_.resize(size_t(entries * d));
  for (int64_t e = 0; e < entries; ++e) {
    const int32_t expert = routing.expert[size_t(e)];
    const int64_t at = send_at[size_t(placement_.owner(expert))]++;
    position[size_t(e)] = at;
    send_expert_[size_t(at)] = expert;
    std::memcpy(rows_in_.data() + at * d, x + (s0 + e / k) * d, d * sizeof(float));
  }
  load.compute_s += seconds_since(start);

  // Exchange counts, then the experts' ids and the rows.
  auto t = Clock::now();
  comm_.barrier();
  load.wait_s += seconds_since(t);
  t = Clock::now();
  std::vector<int64_t> ones(size_t(devices), 1), recv_rows(static_cast<size_t>(devices));
  const std::vector<int64_t> unit_displs = packed_displacements(ones);
  comm_.all_to_all_v(send_rows.data(), ones, unit_displs, recv_rows.data(), ones, unit_displs);
  const std::vector<int64_t> send_displs = packed_displacements(send_rows), recv_displs = packed_displacements(recv_rows);
  int64_t received = 0;
  for (int64_t c : recv_rows) received += c;
  recv_expert_.resize(size_t(received));
  recv_in_.resize(size_t(received * d));
  comm_.all_to_all_v(send_expert_.data(), send_rows, send_displs, recv_expert_.data(), recv_rows, recv_displs);
  comm_.all_to_all_v(rows_in_.data(), scaled(send_rows, d), scaled(send_displs, d), recv_in_.data(),
                     scaled(recv_rows, d), scaled(recv_displs, d));
  load.comm_s += seconds_since(t);

  // Received rows through this device's experts: sorted by expert (stable: sources in device
  // order, each in its token order), computed, put back in the order they came.
  start = Clock::now();
  moe::Dispatch& dp = cache.dispatch;
  dp.tokens = received;
  dp.top_k = 1;
  dp.offsets.assign(size_t(n) + 1, 0);
  for (int32_t e : recv_expert_) ++dp.offsets[size_t(e) + 1];
  for (int e = 0; e < n; ++e) dp.offsets[size_t(e) + 1] += dp.offsets[size_t(e)];
  dp.token.resize(size_t(received));
  dp.row_of.resize(size_t(received));
  std::vector<int64_t> fill(dp.offsets.begin(), dp.offsets.end() - 1);
  for (int64_t r = 0; r < received; ++r) {
    const int64_t row = fill[size_t(recv_expert_[size_t(r)])]++;
    dp.token[size_t(row)] = int32_t(r);
    dp.row_of[size_t(r)] = int32_t(row);
  }
  const ExpertRange own = placement_.experts(me);
  check(received == dp.offsets[size_t(own.end)] - dp.offsets[size_t(own.begin)],
        "expert parallelism: device " + std::to_string(me) + " received rows for experts it does not hold");
  std::vector<float> sorted_in(size_t(received * d)), sorted_out(size_t(received * d));
  moe::gather_rows(dp, recv_in_.data(), d, sorted_in.data());
  run_own_experts(load, moe, sorted_in.data(), sorted_out.data(), cache);
  recv_out_.resize(size_t(received * d));
  for (int64_t r = 0; r < received; ++r)
    std::memcpy(recv_out_.data() + r * d, sorted_out.data() + int64_t(dp.row_of[size_t(r)]) * d, d * sizeof(float));
  load.compute_s += seconds_since(start);

  // Results back to where the tokens live.
  t = Clock::now();
  comm_.barrier();
  load.wait_s += seconds_since(t);
  t = Clock::now();
  rows_out_.resize(size_t(entries * d));
  comm_.all_to_all_v(recv_out_.data(), scaled(recv_rows, d), scaled(recv_displs, d), rows_out_.data(),
                     scaled(send_rows, d), scaled(send_displs, d));
  load.comm_s += seconds_since(t);

  // Home: shared expert plus the weighted results, in the single-device order.
  start = Clock::now();
  moe.run_shared(x + s0 * d, local, y + s0 * d, cache);
  combine(local, k, d, routing.weight.data(), rows_out_.data(), [&](int64_t entry) { return position[size_t(entry)]; },
          y + s0 * d);
  load.compute_s += seconds_since(start);

  // Every device's slice everywhere (attention is replicated), and the whole routing for traces.
  gather_slices(y, slice_counts(tokens, devices, d), load);
  const std::vector<int64_t> entry_counts = slice_counts(tokens, devices, k);
  cache.routing.tokens = tokens;
  cache.routing.top_k = k;
  cache.routing.expert.resize(size_t(tokens * k));
  cache.routing.weight.resize(size_t(tokens * k));
  cache.routing.probs.clear();
  const std::vector<int64_t> entry_displs = packed_displacements(entry_counts);
  t = Clock::now();
  comm_.all_gather_v(routing.expert.data(), cache.routing.expert.data(), entry_counts, entry_displs);
  comm_.all_gather_v(routing.weight.data(), cache.routing.weight.data(), entry_counts, entry_displs);
  load.comm_s += seconds_since(t);
}

void check_checkpoint_placement(const std::string& dir, const model::ModelConfig& cfg, const Placement& placement) {
  check(cfg.num_experts == placement.num_experts(),
        dir + ": the model has " + std::to_string(cfg.num_experts) + " experts, the placement " +
            std::to_string(placement.num_experts()));
  const model::Checkpoint ckpt(dir);
  for (int layer = 0; layer < cfg.num_hidden_layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.experts.";
    std::vector<int> present;
    for (int e = 0; e < cfg.num_experts; ++e) {
      bool all = true;
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
        all = all && ckpt.has(prefix + std::to_string(e) + "." + proj + ".weight");
      if (all) present.push_back(e);
    }
    for (int device = 0; device < placement.devices(); ++device)
      placement.check_covers(device, present, "checkpoint " + dir + ", layer " + std::to_string(layer));
  }
}

ExpertParallelModel::ExpertParallelModel(const std::string& dir, kernels::WeightFormat format, Comm& comm,
                                         const DispatchScheme* scheme)
    : cfg_(model::ModelConfig::from_file(dir + "/config.json")),
      placement_(cfg_.moe_config().router, comm.size()),
      model_((check_checkpoint_placement(dir, cfg_, placement_),
              model::Model::load(dir, format,
                                 {placement_.experts(comm.rank()).begin, placement_.experts(comm.rank()).end,
                                  /*own_memory=*/true}))),
      runner_(comm, placement_, cfg_.num_hidden_layers,
              scheme ? *scheme : default_dispatch_scheme(cfg_.moe_config().router.mode)) {
  model_.set_moe_runner(&runner_);
}

}  // namespace moge::parallel
