// `moge bench`: llama-bench-like throughput of a model: prompt processing (pp) and token
// generation (tg) tokens/s, the weight bytes each decoded token reads, and that traffic as a
// fraction of the machine's memory bandwidth measured in the same run.
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "devices.h"
#include "moge/core/clock.h"
#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/kernels/gemv_bf16.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/membw.h"
#include "moge/kernels/weight.h"
#include "moge/model/model.h"

namespace moge::cli {

namespace {

uintmax_t safetensors_bytes(const std::string& dir) {
  uintmax_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") total += e.file_size();
  return total;
}

// The kernel the decode GEMVs of `format` weights run (the prompt's GEMMs: oneDNN, matmul_isa).
std::string decode_kernel(kernels::WeightFormat format) {
  switch (format) {
    case kernels::WeightFormat::q8:
    case kernels::WeightFormat::q4: return std::string("quant ") + kernels::quant_kernel_name();
    case kernels::WeightFormat::bf16:
      if (kernels::gemv_bf16_supported()) return "gemv_bf16 avx512_bf16";
      [[fallthrough]];
    default: return std::string("onednn ") + kernels::matmul_isa();
  }
}

// A forward's parts in milliseconds (divided by `per`: 1 for the prefill step, the decoded tokens
// for generation).
nlohmann::json phase_ms(const model::PhaseTimes& t, double per) {
  return {{"embed", 1e3 * t.embed / per},
          {"attention", 1e3 * t.attention / per},
          {"moe", 1e3 * t.moe / per},
          {"head", 1e3 * t.head / per}};
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Args {
    std::string model, dtype = "bf16", devices, dispatch, load_svg;
    int prompt = 512, gen = 128, threads = 0, repetitions = 2, isolate_rounds = 3;
    bool json = false, isolate_experts = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("bench", "prompt and generation throughput of a model (llama-bench style)");
  cmd->add_option("-m,--model", a->model, "model directory")->required();
  cmd->add_option("-p,--n-prompt", a->prompt, "prompt tokens for pp")->capture_default_str();
  cmd->add_option("-n,--n-gen", a->gen, "generated tokens for tg")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->add_option("-r,--repetitions", a->repetitions, "repetitions of each test (best kept)")->capture_default_str();
  add_weight_type_option(cmd, a->dtype);
  cmd->add_flag("--json", a->json, "print JSON");
  add_devices_options(cmd, a->devices, a->dispatch);
  cmd->add_option("--load-svg", a->load_svg, "with --devices: write the device x layer load heat map (SVG)");
  cmd->add_flag("--isolate-experts", a->isolate_experts,
                "with --devices: devices take turns running their routed experts, each timed alone (for the "
                "expert time against perfect balance where devices outnumber cores)");
  cmd->add_option("--isolate-rounds", a->isolate_rounds,
                  "with --isolate-experts: rounds of turns; each expert's least time is kept")
      ->capture_default_str();
  cmd->callback([a] {
    check(a->prompt > 0 && a->gen > 0 && a->repetitions > 0 && a->isolate_rounds > 0,
          "-p, -n, -r and --isolate-rounds must be positive");
    if (a->threads > 0) omp_set_num_threads(a->threads);
    const kernels::WeightFormat format = kernels::parse_weight_format(a->dtype);
    const DevicesSpec spec = parse_devices(a->devices);
    run_on(spec, a->threads, [&](parallel::Comm* comm, int device) {
      const bool main = device == 0;
      if (main) std::fprintf(stderr, "bench: loading %s...\n", a->model.c_str());
      DeviceModel dm(a->model, format, comm, a->dispatch);
      if (dm.runner()) dm.runner()->set_isolated_expert_timing(a->isolate_experts ? a->isolate_rounds : 0);
      const model::Model& m = dm.model();
      const model::ModelConfig& c = m.config();
      Rng rng(1);
      std::vector<int32_t> tokens(a->prompt + a->gen);
      for (auto& t : tokens) t = int32_t(rng.below(c.vocab_size));
      std::vector<float> logits(c.vocab_size);

      double pp = 0, tg = 0;
      model::PhaseTimes pp_phases, tg_phases;  // of the repetition that set pp, and tg
      std::vector<std::vector<std::vector<parallel::LayerLoad>>> rep_loads;  // per measured repetition
      for (int r = 0; r < a->repetitions; ++r) {
        if (main)
          std::fprintf(stderr, "bench: pp%d / tg%d, repetition %d/%d\n", a->prompt, a->gen, r + 1, a->repetitions);
        model::KvCache cache(c, a->prompt + a->gen);
        model::PhaseTimes prefill, decode;
        m.set_phase_times(&prefill);
        auto t0 = std::chrono::steady_clock::now();
        m.forward(tokens.data(), a->prompt, cache, logits.data(), 1);
        const double pp_r = a->prompt / seconds_since(t0);
        m.set_phase_times(&decode);
        auto t1 = std::chrono::steady_clock::now();
        for (int i = 0; i < a->gen; ++i) m.forward(&tokens[a->prompt + i], 1, cache, logits.data());
        const double tg_r = a->gen / seconds_since(t1);
        m.set_phase_times(nullptr);
        if (pp_r > pp) pp = pp_r, pp_phases = prefill;
        if (tg_r > tg) tg = tg_r, tg_phases = decode;
        // The first repetition warms up (oneDNN creates its primitives for new shapes, inside the
        // experts' timed work): the load report covers the repetitions after it.
        if (dm.runner()) {
          if (r > 0 || a->repetitions == 1) rep_loads.push_back(dm.gather_loads());
          dm.runner()->reset_load();
        }
      }
      const auto loads = sum_loads(rep_loads);
      if (!main) return;
      const double bytes = double(m.decode_weight_bytes());
      const double decode_gbs = bytes * tg / 1e9;
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      const double rss_gb = usage.ru_maxrss * 1024.0 / 1e9, file_gb = safetensors_bytes(a->model) / 1e9;
      // After the RSS reading: the bandwidth probe's 1 GB buffer is not the model's memory.
      std::fprintf(stderr, "bench: measuring memory bandwidth...\n");
      const double stream_gbs = kernels::measure_read_bandwidth();

      if (!a->load_svg.empty() && !loads.empty())
        write_device_heatmap(a->load_svg, loads, "token-expert pairs: " + a->model);
      if (a->json) {
        nlohmann::json j = {{"model", a->model},       {"dtype", a->dtype},
                            {"threads", omp_get_max_threads()},
                            {"params", c.total_parameters()}, {"active_params", c.active_parameters()},
                            {"pp_tokens", a->prompt},  {"pp_tokens_per_s", pp},
                            {"tg_tokens", a->gen},     {"tg_tokens_per_s", tg},
                            {"decode_weight_bytes_per_token", bytes}, {"decode_weight_gbs", decode_gbs},
                            {"stream_read_gbs", stream_gbs}, {"fraction_of_stream", decode_gbs / stream_gbs},
                            {"peak_rss_gb", rss_gb},   {"checkpoint_gb", file_gb},
                            {"gemm_isa", kernels::matmul_isa()}, {"quant_kernel", kernels::quant_kernel_name()},
                            {"decode_kernel", decode_kernel(m.weight_format())},
                            {"pp_phase_ms", phase_ms(pp_phases, 1)},
                            {"tg_phase_ms_per_token", phase_ms(tg_phases, a->gen)}};
        if (!loads.empty()) {
          j["expert_parallel"] = device_loads_json(loads, dm.scheme());
          j["expert_parallel"]["isolated_expert_timing"] = a->isolate_experts;
          j["expert_parallel"]["expert_time_over_balanced_best"] = expert_time_over_balanced_best(rep_loads);
        }
        std::printf("%s\n", j.dump(2).c_str());
        return;
      }
      std::printf("| model | params | active | dtype | threads | test | t/s |\n|---|---|---|---|---|---|---|\n");
      for (auto [name, value] : {std::pair{"pp" + std::to_string(a->prompt), pp}, {"tg" + std::to_string(a->gen), tg}})
        std::printf("| %s | %.2fB | %.2fB | %s | %d | %s | %.2f |\n", a->model.c_str(), c.total_parameters() / 1e9,
                    c.active_parameters() / 1e9, a->dtype.c_str(), omp_get_max_threads(), name.c_str(), value);
      std::printf("\ndecode reads %.3f GB of weights a token: %.2f GB/s, %.0f%% of the %.2f GB/s read bandwidth "
                  "measured now\n",
                  bytes / 1e9, decode_gbs, 100 * decode_gbs / stream_gbs, stream_gbs);
      std::printf("peak RSS %.2f GB for %.2f GB of safetensors; GEMM isa %s, decode GEMV %s\n", rss_gb, file_gb,
                  kernels::matmul_isa(), decode_kernel(m.weight_format()).c_str());
      for (const auto& [name, ms] : {std::pair{"prefill step", phase_ms(pp_phases, 1)},
                                     {"decoded token", phase_ms(tg_phases, a->gen)}})
        std::printf("ms a %s: attention %.3f, MoE %.3f, head %.3f, embedding %.3f\n", name, ms["attention"].get<double>(),
                    ms["moe"].get<double>(), ms["head"].get<double>(), ms["embed"].get<double>());
      if (loads.empty()) return;
      print_device_loads(loads, dm.scheme(), stdout);
      if (rep_loads.size() > 1)
        std::printf("routed experts, least disturbed repetition per device: %.3f x the perfectly balanced time\n",
                    expert_time_over_balanced_best(rep_loads));
    });
  });
}

}  // namespace moge::cli
