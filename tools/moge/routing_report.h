#pragma once
// What `generate` (and later `bench`) report about routing: the per-device load of a run, and
// the routing trace as JSON (for the simulator's trace replay).
#include <cstdio>
#include <string>

#include "moge/model/model.h"

namespace moge::cli {

// Per layer: token-expert pairs on each of `devices` devices (experts in contiguous blocks, so
// with MoGE each device holds whole groups when devices divides the group count), the imbalance
// score IS over the whole run and averaged over single tokens (a decode step), balancedness.
void print_load_table(const model::RoutingTrace& trace, int devices, std::FILE* out);

// {"top_k", "num_experts", "tokens", "layers": [[ids of token 0..., token 1...], ...]}.
void write_routing_trace(const std::string& path, const model::RoutingTrace& trace);

}  // namespace moge::cli
