// `moge init`: a random model of a given config.json in the HF layout (benchmarks, tests,
// training starts).
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/model/random_init.h"

namespace moge::cli {

void add_init_command(CLI::App& app) {
  struct Args {
    std::string config, out, dtype = "bf16", tokenizer;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("init", "write a randomly initialised model for a config.json");
  cmd->add_option("--config", a->config, "config.json (HF keys)")->required();
  cmd->add_option("-o,--output", a->out, "output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "weight dtype on disk: f32 or bf16")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer, "copy tokenizer.model and its JSON files from this directory");
  cmd->callback([a] {
    std::ifstream in(a->config);
    check(bool(in), a->config + ": cannot open");
    std::stringstream text;
    text << in.rdbuf();
    auto cfg = model::ModelConfig::from_json_text(text.str(), a->config);
    model::write_random_model(cfg, text.str(), a->out, parse_dtype(a->dtype), a->seed);
    if (!a->tokenizer.empty()) {
      namespace fs = std::filesystem;
      for (const char* f : {"tokenizer.model", "tokenizer_config.json", "generation_config.json"}) {
        fs::path src = fs::path(a->tokenizer) / f;
        if (fs::exists(src)) fs::copy_file(src, fs::path(a->out) / f, fs::copy_options::overwrite_existing);
        else check(std::string(f) != "tokenizer.model", src.string() + ": not found");
      }
    }
    std::printf("%s: %lld parameters (%lld active)\n", a->out.c_str(), (long long)cfg.total_parameters(),
                (long long)cfg.active_parameters());
  });
}

}  // namespace moge::cli
