#pragma once
// Each subcommand of `moge` lives in its own file and registers itself here.
#include <CLI/CLI.hpp>

namespace moge::cli {

void add_route_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace moge::cli
