#pragma once
// Each subcommand of `moge` lives in its own file and registers itself here.
#include <string>

#include <CLI/CLI.hpp>

namespace moge::cli {

void add_route_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_sim_command(CLI::App& app);

// --type (alias --dtype): the weight format the GEMMs run on, f32|bf16|int8|int4.
inline void add_weight_type_option(CLI::App* cmd, std::string& type) {
  cmd->add_option("--type,--dtype", type,
                  "weights the GEMMs run on: f32, bf16, int8 (W8A8) or int4 (W4A8); "
                  "a checkpoint stored int8/int4 (moge convert) runs as stored")
      ->capture_default_str();
}

}  // namespace moge::cli
