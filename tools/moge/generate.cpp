// `moge generate`: text in, streamed text out, llama.cpp style flags. Timings go to stderr.
#include <omp.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "devices.h"
#include "moge/core/error.h"
#include "moge/infer/generator.h"
#include "routing_report.h"
#include "text_model.h"

namespace moge::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, dtype = "f32";
  int n_predict = 64, threads = 0, context = 4096, load_devices = 0;
  std::string trace_path, devices, dispatch, load_svg;
  bool json = false;
  infer::SamplerConfig sampling;
};

// One device's generation (every device of an expert-parallel run generates the same tokens;
// only the main one prints).
void generate_on(const GenerateArgs& a, const tokenizer::Tokenizer& tok, const model::Model& model, bool main) {
  infer::Sampler sampler(a.sampling);
  model::RoutingTrace trace;
  if (main && (a.load_devices > 0 || !a.trace_path.empty())) model.set_routing_trace(&trace);
  std::vector<int32_t> prompt = tok.encode(a.prompt, tok.bos_id() >= 0);
  infer::Generator gen(model, std::min<int64_t>(a.context, int64_t(prompt.size()) + a.n_predict));
  gen.set_context(prompt);

  tokenizer::StreamDecoder stream(tok);
  std::string text;
  gen.generate(
      sampler, a.n_predict, [&](int32_t id) { return tok.is_eos(id); },
      [&](int32_t id) {
        std::string piece = id < tok.vocab_size() ? stream.push(id) : "";
        text += piece;
        if (main && !a.json) {
          std::fputs(piece.c_str(), stdout);
          std::fflush(stdout);
        }
        return true;
      });
  std::string tail = stream.finish();
  text += tail;
  if (!main) return;
  const infer::GenerationStats& st = gen.stats();
  if (a.json) {
    nlohmann::json j = {{"prompt", a.prompt},
                        {"text", text},
                        {"prompt_tokens", prompt.size()},
                        {"prompt_token_ids", prompt},
                        {"generated_tokens", st.generated},
                        {"tokens", std::vector<int32_t>(gen.tokens().begin() + prompt.size(), gen.tokens().end())},
                        {"prefill_tokens_per_s", st.prompt_tokens / st.prefill_seconds},
                        {"decode_tokens_per_s", st.generated / st.decode_seconds}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\n", tail.c_str());
    print_stats(st);
  }
  if (a.load_devices > 0) print_load_table(trace, a.load_devices, a.json ? stderr : stdout);
  if (!a.trace_path.empty()) write_routing_trace(a.trace_path, trace);
}

void run_generate(const GenerateArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  check(a.n_predict >= 0, "-n must be >= 0");
  const DevicesSpec spec = parse_devices(a.devices);
  run_on(spec, a.threads, [&](parallel::Comm* comm, int device) {
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(a.model);
    DeviceModel dm(a.model, kernels::parse_weight_format(a.dtype), comm, a.dispatch);
    check_tokenizer_fits(a.model, tok, dm.model());
    generate_on(a, tok, dm.model(), device == 0);
    const auto loads = dm.gather_loads();
    if (device != 0 || loads.empty()) return;
    print_device_loads(loads, dm.scheme(), a.json ? stderr : stdout);
    if (!a.load_svg.empty())
      write_device_heatmap(a.load_svg, loads, "token-expert pairs per device and layer: " + a.model);
  });
}
}  // namespace

void check_tokenizer_fits(const std::string& dir, const tokenizer::Tokenizer& tok, const model::Model& model) {
  check(tok.vocab_size() <= model.config().vocab_size,
        dir + ": the tokenizer has " + std::to_string(tok.vocab_size()) + " pieces, more than the model's vocab_size " +
            std::to_string(model.config().vocab_size));
}

LoadedModel load_model(const std::string& dir, const std::string& dtype) {
  LoadedModel lm{tokenizer::Tokenizer::load(dir), model::Model::load(dir, kernels::parse_weight_format(dtype))};
  check_tokenizer_fits(dir, lm.tok, lm.model);
  return lm;
}

void print_stats(const infer::GenerationStats& st) {
  std::fprintf(stderr, "\n[prompt: %lld tokens, %.1f tok/s; generated: %lld tokens, %.1f tok/s]\n",
               (long long)st.prompt_tokens, st.prompt_tokens / st.prefill_seconds, (long long)st.generated,
               st.generated / std::max(st.decode_seconds, 1e-9));
}

void add_sampling_options(CLI::App* cmd, infer::SamplerConfig& s) {
  cmd->add_option("--temp", s.temperature, "temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "top-k sampling (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "top-p (nucleus) sampling (1 = off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repetition_penalty, "repetition penalty (1 = off)")->capture_default_str();
  cmd->add_option("--repeat-last-n", s.penalty_window, "tokens the penalty looks back on")->capture_default_str();
  cmd->add_option("-s,--seed", s.seed, "random seed")->capture_default_str();
}

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  cmd->add_option("-m,--model", a->model, "model directory (config.json, safetensors, tokenizer.model)")->required();
  cmd->add_option("-p,--prompt", a->prompt, "prompt text")->required();
  cmd->add_option("-n,--n-predict", a->n_predict, "tokens to generate")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->add_option("-c,--ctx-size", a->context, "context size (KV cache positions)")->capture_default_str();
  add_weight_type_option(cmd, a->dtype);
  cmd->add_flag("--json", a->json, "print one JSON object instead of streaming");
  cmd->add_option("--load-devices", a->load_devices,
                  "print the per-device expert load of the run, experts spread over D devices");
  cmd->add_option("--trace", a->trace_path, "write the routing of every token and layer as JSON");
  add_devices_options(cmd, a->devices, a->dispatch);
  cmd->add_option("--load-svg", a->load_svg, "with --devices: write the device x layer load heat map (SVG)");
  add_sampling_options(cmd, a->sampling);
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace moge::cli
