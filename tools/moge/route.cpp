// `moge route`: the paper's Fig. 2 Monte Carlo as a sizing tool. Routes random tokens with each
// requested mode and reports how evenly the token-expert pairs land on devices.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "moge/moe/route_sim.h"
#include "moge/report/svg.h"

namespace moge::cli {

namespace {

struct RouteArgs {
  int experts = 64, groups = 8, top_k = 8, devices = 8, topk_group = 0;
  int64_t tokens = 16, trials = 10000;
  uint64_t seed = 1;
  std::vector<std::string> modes{"grouped"};
  bool json = false;
  std::string plot;
};

void run_route(const RouteArgs& a) {
  std::vector<std::pair<std::string, moe::RouteSimResult>> results;
  for (const auto& mode_name : a.modes) {
    moe::RouteSimOptions o;
    o.router.num_experts = a.experts;
    o.router.num_groups = a.groups;
    o.router.top_k = a.top_k;
    o.router.mode = moe::parse_routing_mode(mode_name);
    o.router.topk_group = a.topk_group > 0 ? a.topk_group : std::max(1, a.groups / 2);
    o.devices = a.devices;
    o.tokens = a.tokens;
    o.trials = a.trials;
    o.seed = a.seed;
    results.emplace_back(mode_name, moe::simulate_routing(o));
  }

  if (a.json) {
    nlohmann::json j;
    j["config"] = {{"experts", a.experts}, {"groups", a.groups},   {"top_k", a.top_k}, {"devices", a.devices},
                   {"tokens", a.tokens},   {"trials", a.trials},   {"seed", a.seed}};
    for (const auto& [mode, r] : results)
      j["results"].push_back({{"mode", mode},
                              {"mean_is", r.mean_is},
                              {"p_is_positive", r.p_is_positive},
                              {"mean_balancedness", r.mean_balancedness},
                              {"mean_max_vio", r.mean_max_vio},
                              {"mean_distinct_experts_per_device", r.mean_distinct_per_device}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%d experts, %d groups, top-%d, %d devices, %lld tokens, %lld trials, seed %llu\n\n", a.experts,
                a.groups, a.top_k, a.devices, (long long)a.tokens, (long long)a.trials, (unsigned long long)a.seed);
    std::printf("| %-13s | %7s | %7s | %12s | %6s | %16s |\n", "mode", "mean IS", "P(IS>0)", "balancedness",
                "MaxVio", "experts/device");
    std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(15, '-').c_str(), std::string(9, '-').c_str(),
                std::string(9, '-').c_str(), std::string(14, '-').c_str(), std::string(8, '-').c_str(),
                std::string(18, '-').c_str());
    for (const auto& [mode, r] : results)
      std::printf("| %-13s | %7.3f | %7.3f | %12.3f | %6.3f | %16.2f |\n", mode.c_str(), r.mean_is, r.p_is_positive,
                  r.mean_balancedness, r.mean_max_vio, r.mean_distinct_per_device);
  }

  if (!a.plot.empty()) {
    std::vector<report::Series> series;
    double hi = 0.05;
    for (const auto& [mode, r] : results) {
      series.push_back({mode, r.imbalance});
      for (double v : r.imbalance) hi = std::max(hi, v);
    }
    char title[160];
    std::snprintf(title, sizeof title, "Imbalance score: %d experts, top-%d, %d devices, %lld tokens", a.experts,
                  a.top_k, a.devices, (long long)a.tokens);
    report::write_histogram_svg(a.plot, title, "IS = (max_d T_d - min_d T_d) / T", series, 0.0, hi * 1.0001, 40);
    if (!a.json) std::printf("\nhistogram: %s\n", a.plot.c_str());
  }
}

}  // namespace

void add_route_command(CLI::App& app) {
  auto args = std::make_shared<RouteArgs>();
  CLI::App* cmd = app.add_subcommand("route", "Monte Carlo of device load under random routing (paper Fig. 2)");
  cmd->add_option("--experts", args->experts, "routed experts N")->capture_default_str();
  cmd->add_option("--groups", args->groups, "expert groups M")->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "experts per token K")->capture_default_str();
  cmd->add_option("--devices", args->devices, "devices D (contiguous experts a device)")->capture_default_str();
  cmd->add_option("--tokens", args->tokens, "tokens T in a batch")->capture_default_str();
  cmd->add_option("--mode", args->modes, "routing modes: grouped, topk, group_limited (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--topk-group", args->topk_group, "groups kept by group_limited (default groups/2)");
  cmd->add_option("--trials", args->trials, "Monte Carlo trials")->capture_default_str();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->add_flag("--json", args->json, "print JSON instead of a table");
  cmd->add_option("--plot", args->plot, "write an SVG histogram of IS to this file");
  cmd->callback([args] { run_route(*args); });
}

}  // namespace moge::cli
