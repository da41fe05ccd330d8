// `moge eval`: a model on held-out token shards: validation loss, and how its routing loads the
// devices of an expert-parallel deployment, measured the paper's way (MOGE.md §2): the imbalance
// score IS of every batch of B consecutive tokens (default 16, as the paper's Fig. 2), per layer,
// with balancedness and MaxVio over the whole evaluation.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/core/progress.h"
#include "moge/kernels/cross_entropy.h"
#include "moge/model/model.h"
#include "moge/moe/balance.h"
#include "moge/train/data.h"

namespace moge::cli {

namespace {

struct EvalArgs {
  std::string model, data, type = "f32";
  int seq_len = 128, windows = 64, devices = 8, batch_tokens = 16, threads = 0;
  bool json = false;
};

struct LayerStats {
  double is_mean = 0, is_positive = 0, balancedness_mean = 0;
  double max_vio = 0;  // over the expert loads of the whole evaluation
  std::vector<int64_t> device_load;
};

LayerStats layer_stats(const std::vector<int32_t>& ids, int64_t tokens, int top_k, int experts, int devices,
                       int batch_tokens) {
  const std::vector<int> device_of = moe::contiguous_placement(experts, devices);
  LayerStats s;
  const int64_t batches = tokens / batch_tokens;
  for (int64_t b = 0; b < batches; ++b) {
    auto m = moe::measure_balance(ids.data() + b * batch_tokens * top_k, batch_tokens, top_k, experts, device_of,
                                  devices);
    s.is_mean += m.imbalance_score / double(batches);
    s.is_positive += (m.imbalance_score > 0) / double(batches);
    s.balancedness_mean += m.balancedness / double(batches);
  }
  auto all = moe::measure_balance(ids.data(), tokens, top_k, experts, device_of, devices);
  s.max_vio = all.max_vio;
  s.device_load = all.device_load;
  return s;
}

void run_eval(const EvalArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  check(a.seq_len > 0 && a.windows > 0 && a.batch_tokens > 0, "--seq-len, --windows and --batch-tokens must be positive");
  model::Model m = model::Model::load(a.model, kernels::parse_weight_format(a.type));
  const model::ModelConfig& c = m.config();
  check(a.devices >= 1 && c.num_experts % a.devices == 0,
        "--devices " + std::to_string(a.devices) + " must divide the " + std::to_string(c.num_experts) + " experts");
  train::TokenShard shard(a.data + "/val.bin");
  check(shard.vocab_size() <= c.vocab_size, shard.path() + ": vocabulary larger than the model's");
  train::SequentialBatches windows(shard, 1, a.seq_len);
  model::RoutingTrace trace;
  m.set_routing_trace(&trace);
  std::vector<int32_t> inputs(a.seq_len), targets(a.seq_len);
  std::vector<float> logits(size_t(a.seq_len) * c.vocab_size);
  double loss_sum = 0;
  int64_t counted = 0;
  const int64_t total = std::min<int64_t>(a.windows, windows.windows());
  Progress progress("eval", total, "windows");
  for (int64_t w = 0; w < total && windows.next(inputs.data(), targets.data()) == 1; ++w) {
    model::KvCache cache(c, a.seq_len);
    m.forward(inputs.data(), a.seq_len, cache, logits.data());
    loss_sum += kernels::cross_entropy_forward_backward(logits.data(), targets.data(), a.seq_len, c.vocab_size,
                                                        nullptr, 1.0f);
    counted += a.seq_len;
    progress.update(w + 1);
  }
  progress.finish();
  check(counted > 0, shard.path() + ": shorter than one window of " + std::to_string(a.seq_len) + " tokens");
  m.set_routing_trace(nullptr);

  const double loss = loss_sum / double(counted);
  std::vector<LayerStats> layers;
  for (const auto& ids : trace.expert)
    layers.push_back(layer_stats(ids, trace.tokens(), trace.top_k, trace.num_experts, a.devices, a.batch_tokens));
  double is = 0, pos = 0, bal = 0, vio = 0;
  for (const LayerStats& s : layers) {
    is += s.is_mean / double(layers.size()), pos += s.is_positive / double(layers.size());
    bal += s.balancedness_mean / double(layers.size()), vio += s.max_vio / double(layers.size());
  }
  if (a.json) {
    nlohmann::json j = {{"model", a.model},     {"tokens", counted},   {"val_loss", loss},
                        {"perplexity", std::exp(loss)}, {"devices", a.devices}, {"batch_tokens", a.batch_tokens},
                        {"mean_is", is},        {"p_is_positive", pos}, {"mean_balancedness", bal},
                        {"mean_max_vio", vio},  {"layers", nlohmann::json::array()}};
    for (const LayerStats& s : layers)
      j["layers"].push_back({{"is", s.is_mean}, {"p_is_positive", s.is_positive},
                             {"balancedness", s.balancedness_mean}, {"max_vio", s.max_vio},
                             {"device_load", s.device_load}});
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("%s: validation loss %.4f (perplexity %.2f) over %lld tokens\n", a.model.c_str(), loss, std::exp(loss),
              static_cast<long long>(counted));
  std::printf("routing on %d devices, batches of %d tokens:\n| layer | IS | P(IS>0) | balancedness | MaxVio |\n"
              "|---|---|---|---|---|\n", a.devices, a.batch_tokens);
  for (size_t i = 0; i < layers.size(); ++i)
    std::printf("| %zu | %.3f | %.3f | %.3f | %.3f |\n", i, layers[i].is_mean, layers[i].is_positive,
                layers[i].balancedness_mean, layers[i].max_vio);
  std::printf("| mean | %.3f | %.3f | %.3f | %.3f |\n", is, pos, bal, vio);
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "validation loss and expert-parallel load balance of a model");
  cmd->add_option("-m,--model", a->model, "model directory")->required();
  cmd->add_option("--data", a->data, "token shards from `moge data` (uses val.bin)")->required();
  cmd->add_option("--seq-len", a->seq_len, "tokens a window")->capture_default_str();
  cmd->add_option("--windows", a->windows, "windows of validation data")->capture_default_str();
  cmd->add_option("--devices", a->devices, "devices the experts are spread over (contiguous blocks)")
      ->capture_default_str();
  cmd->add_option("--batch-tokens", a->batch_tokens, "tokens a batch for the imbalance score")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  add_weight_type_option(cmd, a->type);
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_eval(*a); });
}

}  // namespace moge::cli
