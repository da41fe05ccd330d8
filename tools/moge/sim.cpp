// `moge sim`: the configuration simulator. `predict` prints the prefill and decode throughput
// per device, the per-token latency and the time per operator class of one model on one serving
// unit of a hardware profile, with the expert load of uniform routing or replayed from a routing
// trace (--trace); `sweep` (sim_sweep.cpp) searches shapes and plans; `calibrate`
// (sim_calibrate.cpp) measures this CPU into a profile (docs/simulator.md).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/model/config.h"
#include "moge/sim/predict.h"
#include "moge/sim/trace.h"
#include "sim_calibrate.h"
#include "sim_sweep.h"

namespace moge::cli {
namespace {

struct PredictArgs {
  std::string profile, model, plan, weights = "bf16", lm_head = "bf16", kv = "bf16", routing, trace;
  int64_t batch = 1, prefill_batch = 0, prompt = 2048, gen = 128;
  uint64_t seed = 1;
  bool json = false, allow_no_fit = false, overlap = false;
};

nlohmann::json step_json(const sim::StepPrediction& s, int per_card) {
  return {{"sequences", s.sequences},
          {"tokens", s.tokens},
          {"context", s.context},
          {"step_ms", s.seconds * 1e3},
          {"tokens_per_s_per_device", s.tokens_per_s_per_device},
          {"tokens_per_s_per_card", s.tokens_per_s_per_device * per_card},
          {"expert_pairs_max", s.max_expert_pairs},
          {"expert_pairs_mean", s.mean_expert_pairs},
          {"ms", {{"attention", s.time.attention * 1e3},
                  {"experts", s.time.experts * 1e3},
                  {"shared_expert", s.time.shared * 1e3},
                  {"comm", s.time.comm * 1e3},
                  {"lm_head", s.time.lm_head * 1e3},
                  {"elementwise", s.time.elementwise * 1e3}}}};
}

void print_step(const char* phase, const sim::StepPrediction& s, int per_card) {
  std::printf("| %-7s | %5lld | %8lld | %7.0f | %9.3f | %10.1f |", phase, (long long)s.sequences, (long long)s.tokens,
              s.context, s.seconds * 1e3, s.tokens_per_s_per_device);
  if (per_card > 1) std::printf(" %10.1f |", s.tokens_per_s_per_device * per_card);
  std::printf(" %9.3f | %9.3f | %9.3f | %9.3f | %9.3f | %9.3f |\n", s.time.attention * 1e3, s.time.experts * 1e3,
              s.time.shared * 1e3, s.time.comm * 1e3, s.time.lm_head * 1e3, s.time.elementwise * 1e3);
}

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

// The trace's expert count and top-k must be the model's: its expert ids are placed by them.
std::unique_ptr<sim::TraceLoad> trace_load(const std::string& path, const model::ModelConfig& config,
                                           const sim::ParallelPlan& plan) {
  model::RoutingTrace trace = sim::read_routing_trace(path);
  check(trace.num_experts == config.num_experts,
        path + ": field 'num_experts' is " + std::to_string(trace.num_experts) + " but the model has " +
            std::to_string(config.num_experts) + " experts");
  check(trace.top_k == config.num_experts_per_tok, path + ": field 'top_k' is " + std::to_string(trace.top_k) +
                                                       " but the model routes each token to " +
                                                       std::to_string(config.num_experts_per_tok) + " experts");
  auto load = std::make_unique<sim::TraceLoad>(std::move(trace), plan.expert_ep, path);
  load->set_model_layers(config.num_hidden_layers);
  return load;
}

void run_predict(const PredictArgs& a) {
  std::string path = a.model;
  if (!path.ends_with(".json")) path += "/config.json";
  model::ModelConfig config = model::ModelConfig::from_file(path);
  if (!a.routing.empty()) config.routing_mode = moe::parse_routing_mode(a.routing);
  const sim::HardwareProfile profile = sim::HardwareProfile::from_file(a.profile);
  const sim::ParallelPlan plan = sim::ParallelPlan::parse(a.plan);
  plan.validate(config, profile);

  sim::Workload w;
  w.batch = a.batch;
  w.prefill_batch = a.prefill_batch;
  w.prompt = a.prompt;
  w.gen = a.gen;
  w.weights = sim::parse_weight_type(a.weights);
  w.lm_head = sim::parse_weight_type(a.lm_head);
  check(a.kv == "f32" || a.kv == "bf16" || a.kv == "int8",
        "--kv-dtype must be f32, bf16 or int8 (got '" + a.kv + "')");
  w.kv_bytes = a.kv == "int8" ? 1 : a.kv == "f32" ? 4 : 2;
  w.overlap_comm = a.overlap;
  std::unique_ptr<sim::LoadModel> load;
  const sim::TraceLoad* traced = nullptr;
  if (a.trace.empty()) {
    load = std::make_unique<sim::UniformLoad>(config.moe_config().router, plan.expert_ep, a.seed);
  } else {
    auto t = trace_load(a.trace, config, plan);
    traced = t.get();
    load = std::move(t);
  }
  sim::Prediction r = sim::predict(config, profile, plan, w, *load);
  if (traced)
    for (const sim::StepPrediction* s : {&r.prefill, &r.decode})
      if (traced->replay(0, s->tokens).wrapped)
        std::fprintf(stderr, "note: %s has %lld tokens, fewer than a step's %lld: replayed with tokens repeated, "
                             "which overstates the imbalance\n",
                     a.trace.c_str(), (long long)traced->trace().tokens(), (long long)s->tokens);
  r.model = path;
  if (!a.allow_no_fit) sim::check_memory_fit(r);
  const int per_card = r.devices_per_card;

  if (a.json) {
    nlohmann::json j = {{"model", r.model},
                        {"routing", moe::routing_mode_name(config.routing_mode)},
                        {"profile", r.profile},
                        {"plan", r.plan},
                        {"devices", r.devices},
                        {"devices_per_card", per_card},
                        {"weights", a.weights},
                        {"kv_cache", a.kv},
                        {"overlap_comm", a.overlap},
                        {"prompt", a.prompt},
                        {"gen", a.gen},
                        {"expert_load", a.trace.empty() ? "uniform" : "trace " + a.trace},
                        {"prefill", step_json(r.prefill, per_card)},
                        {"decode", step_json(r.decode, per_card)},
                        {"memory_gib", {{"weights", gib(r.memory.weights)},
                                        {"kv_cache", gib(r.memory.kv_cache)},
                                        {"activations", gib(r.memory.activations)},
                                        {"reserved", gib(r.memory.reserved)},
                                        {"total", gib(r.memory.total())},
                                        {"capacity", gib(r.memory.capacity)},
                                        {"fits", r.memory.fits()}}},
                        {"weights_in_cache", r.in_cache}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("model    %s (%s routing, %.2fB parameters, %.2fB active)\n", r.model.c_str(),
              moe::routing_mode_name(config.routing_mode), config.total_parameters() / 1e9,
              config.active_parameters() / 1e9);
  std::printf("profile  %s (%s)\n", r.profile.c_str(), a.profile.c_str());
  std::printf("plan     %s: %d devices; weights %s, KV cache %s; prompt %lld, generate %lld%s\n\n", r.plan.c_str(),
              r.devices, a.weights.c_str(), a.kv.c_str(), (long long)a.prompt, (long long)a.gen,
              a.overlap ? "; comm overlapped with experts" : "");
  std::printf("| phase   |  seqs | tok/step | context |   step ms | tok/s/dev  |");
  if (per_card > 1) std::printf(" tok/s/card |");
  std::printf(" attn ms   | experts ms| shared ms | comm ms   | lm_head ms| elemwise ms|\n");
  std::printf("|---------|-------|----------|---------|-----------|------------|");
  if (per_card > 1) std::printf("------------|");
  std::printf("-----------|-----------|-----------|-----------|-----------|-----------|\n");
  print_step("prefill", r.prefill, per_card);
  print_step("decode", r.decode, per_card);
  std::printf("\nprefill: the step is the time to first token of %lld sequences; decode: the step is the per-token "
              "latency at the mean context\n",
              (long long)r.prefill.sequences);
  std::printf("expert pairs a layer on the busiest device (%s): prefill %.1f (mean %.1f), decode %.1f (mean %.1f)\n",
              a.trace.empty() ? "uniform routing" : ("replayed from " + a.trace).c_str(),
              r.prefill.max_expert_pairs, r.prefill.mean_expert_pairs, r.decode.max_expert_pairs,
              r.decode.mean_expert_pairs);
  std::printf("memory a device: weights %.2f + KV cache %.2f + activations %.2f + reserved %.2f = %.2f of %.2f GiB%s\n",
              gib(r.memory.weights), gib(r.memory.kv_cache), gib(r.memory.activations), gib(r.memory.reserved),
              gib(r.memory.total()), gib(r.memory.capacity), r.memory.fits() ? "" : "  DOES NOT FIT");
  if (r.in_cache) std::printf("weights and KV cache fit the profile's cache: streamed at its bandwidth\n");
}

}  // namespace

void add_sim_command(CLI::App& app) {
  CLI::App* sim = app.add_subcommand("sim", "the configuration simulator: predict throughput on a hardware profile");
  sim->require_subcommand(1);

  auto a = std::make_shared<PredictArgs>();
  CLI::App* cmd = sim->add_subcommand("predict", "prefill and decode throughput per device, latency, time per operator");
  cmd->add_option("--profile", a->profile, "hardware profile JSON (docs/sim/profiles/)")->required();
  cmd->add_option("-m,--model", a->model, "model directory or its config.json")->required();
  cmd->add_option("--plan", a->plan, "parallel plan, e.g. attn=dp2tp4,experts=ep4tp2,shared=tp8 (default: 1 device)");
  cmd->add_option("--batch", a->batch, "sequences decoding together on the unit")->capture_default_str();
  cmd->add_option("--prefill-batch", a->prefill_batch, "sequences a prefill step takes (default: one per attention DP group)");
  cmd->add_option("--prompt", a->prompt, "prompt tokens a sequence")->capture_default_str();
  cmd->add_option("--gen", a->gen, "generated tokens a sequence")->capture_default_str();
  cmd->add_option("--type,--dtype", a->weights, "weights: f32, bf16, int8 (W8A8) or int4 (W4A8)")->capture_default_str();
  cmd->add_option("--lm-head-dtype", a->lm_head, "lm_head weights (bf16 in the W8A8 release; moge --type quantizes it too)")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv, "KV cache: f32 (moge's CPU engine), bf16 or int8")->capture_default_str();
  cmd->add_option("--routing", a->routing, "override the config's routing mode: grouped, topk, group_limited");
  cmd->add_option("--trace", a->trace, "replay the expert load of a routing trace (moge generate --trace FILE)");
  cmd->add_option("--seed", a->seed, "seed of the top-k load Monte Carlo")->capture_default_str();
  cmd->add_flag("--overlap", a->overlap, "hide each layer's collectives behind its expert compute (as the paper does)");
  cmd->add_flag("--allow-no-fit", a->allow_no_fit, "report a model that does not fit instead of failing");
  cmd->add_flag("--json", a->json, "print JSON instead of a table");
  cmd->callback([a] { run_predict(*a); });

  add_sim_sweep_command(*sim);
  add_sim_calibrate_command(*sim);
}

}  // namespace moge::cli
