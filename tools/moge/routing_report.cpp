#include "routing_report.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/moe/balance.h"

namespace moge::cli {

void print_load_table(const model::RoutingTrace& trace, int devices, std::FILE* out) {
  const int64_t tokens = trace.tokens();
  if (tokens == 0) return;
  check(devices >= 1 && devices <= trace.num_experts,
        "--load-devices must be between 1 and the number of experts (" + std::to_string(trace.num_experts) + ")");
  const std::vector<int> device_of = moe::contiguous_placement(trace.num_experts, devices);
  const int per_device = trace.num_experts / devices;
  std::fprintf(out, "\ntoken-expert pairs on %d devices (device d holds experts [%dd, %dd+%d)), %lld tokens\n",
               devices, per_device, per_device, per_device, static_cast<long long>(tokens));
  std::fprintf(out, "| layer |");
  for (int d = 0; d < devices; ++d) std::fprintf(out, " dev%d |", d);
  std::fprintf(out, " IS (run) | IS (per token) | balancedness |\n|---|");
  for (int d = 0; d < devices + 3; ++d) std::fprintf(out, "---|");
  std::fprintf(out, "\n");
  double mean_token_is = 0;
  for (size_t layer = 0; layer < trace.expert.size(); ++layer) {
    const int32_t* ids = trace.expert[layer].data();
    const moe::BalanceMetrics run = moe::measure_balance(ids, tokens, trace.top_k, trace.num_experts, device_of, devices);
    double per_token = 0;
    for (int64_t t = 0; t < tokens; ++t)
      per_token += moe::measure_balance(ids + t * trace.top_k, 1, trace.top_k, trace.num_experts, device_of, devices)
                       .imbalance_score;
    per_token /= double(tokens);
    mean_token_is += per_token / double(trace.expert.size());
    std::fprintf(out, "| %zu |", layer);
    for (int d = 0; d < devices; ++d) std::fprintf(out, " %lld |", static_cast<long long>(run.device_load[d]));
    std::fprintf(out, " %.3f | %.3f | %.3f |\n", run.imbalance_score, per_token, run.balancedness);
  }
  std::fprintf(out, "mean IS per token over layers: %.3f (0 = every device equally busy at every step)\n",
               mean_token_is);
}

void write_routing_trace(const std::string& path, const model::RoutingTrace& trace) {
  nlohmann::json j = {{"top_k", trace.top_k}, {"num_experts", trace.num_experts}, {"tokens", trace.tokens()},
                      {"layers", trace.expert}};
  write_file_atomically(path, j.dump() + "\n");
}

}  // namespace moge::cli
