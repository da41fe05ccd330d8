#pragma once
// `moge sim calibrate`: registered under `moge sim` by add_sim_command (sim.cpp).
#include <CLI/CLI.hpp>

namespace moge::cli {

void add_sim_calibrate_command(CLI::App& sim);

}  // namespace moge::cli
