// `moge sim sweep`: the paper's configuration search (MOGE.md §5). Over model shapes (one
// config, or the paper's ranges) and every parallel plan the profile's devices allow, the best
// decode throughput per device under a per-token latency limit that fits memory: a ranked table,
// --json, an SVG of throughput per device against batch for the best few, and one of the
// throughput-latency Pareto front.
#include "sim_sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "moge/core/error.h"
#include "moge/report/svg.h"
#include "moge/sim/sweep.h"

namespace moge::cli {
namespace {

struct SweepArgs {
  std::string profile, model, batches = "1,8,16,32,64,128,256,512", weights = "bf16", kv = "bf16", svg, pareto;
  double latency_ms = 50;
  int64_t prompt = 2048, gen = 128;
  int top = 15, plot = 5;
  uint64_t seed = 1;
  bool json = false, overlap = false;
};

std::vector<int64_t> parse_batches(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t b = 0;
    try {
      b = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == item.size() && !item.empty() && b >= 1,
          "--batches: '" + item + "' is not a positive integer (expected e.g. 1,8,64)");
    out.push_back(b);
  }
  check(!out.empty(), "--batches: no batch sizes given");
  return out;
}

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

nlohmann::json result_json(const sim::Sweep& s, const sim::SweepResult& r) {
  const model::ModelConfig& c = s.shapes[r.shape].config;
  nlohmann::json points = nlohmann::json::array();
  for (const sim::SweepPoint& p : r.points)
    points.push_back({{"batch", p.batch},
                      {"decode_ms", p.decode_seconds * 1e3},
                      {"tokens_per_s_per_device", p.tokens_per_s_per_device},
                      {"memory_gib", gib(p.memory_bytes)},
                      {"fits", p.fits},
                      {"under_limit", p.under_limit}});
  nlohmann::json j = {{"shape", s.shapes[r.shape].name},
                      {"hidden_size", c.hidden_size},
                      {"num_attention_heads", c.num_attention_heads},
                      {"num_key_value_heads", c.num_key_value_heads},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"num_experts", c.num_experts},
                      {"moe_intermediate_size", c.moe_intermediate_size},
                      {"parameters_b", c.total_parameters() / 1e9},
                      {"plan", r.plan.to_string()},
                      {"devices", r.plan.devices()},
                      {"points", points}};
  if (r.best >= 0) {
    const sim::SweepPoint& b = r.points[r.best];
    j["best"] = {{"batch", b.batch}, {"decode_ms", b.decode_seconds * 1e3},
                 {"tokens_per_s_per_device", b.tokens_per_s_per_device}, {"memory_gib", gib(b.memory_bytes)}};
  }
  return j;
}

void write_plot(const std::string& path, const sim::Sweep& s, int lines, const std::string& profile, double limit_ms) {
  std::vector<report::LineSeries> series;
  for (int i = 0; i < int(s.results.size()) && i < lines && s.results[i].best >= 0; ++i) {
    const sim::SweepResult& r = s.results[i];
    report::LineSeries line;
    line.label = "#" + std::to_string(i + 1) + " " + s.shapes[r.shape].name + " " + r.plan.to_string();
    for (const sim::SweepPoint& p : r.points) {
      line.x.push_back(double(p.batch));
      // Batches over the limit or out of memory are gaps.
      line.y.push_back(p.ok() ? p.tokens_per_s_per_device : std::numeric_limits<double>::quiet_NaN());
    }
    series.push_back(std::move(line));
  }
  char title[160];
  std::snprintf(title, sizeof title, "decode throughput per device under %.3g ms a token, %s", limit_ms,
                profile.c_str());
  report::write_line_chart_svg(path, title, "batch (sequences decoding together)", "tokens/s per device", series);
}

// Throughput per device against per-token latency of every point that fits memory (every shape,
// plan and batch, over the limit too: the front shows what a looser limit would buy), with the
// Pareto front joined. Returns {points, front points}.
std::pair<size_t, size_t> write_pareto(const std::string& path, const sim::Sweep& s, const std::string& profile,
                                       double limit_ms) {
  std::vector<sim::LatencyThroughput> all;
  for (const sim::SweepResult& r : s.results)
    for (const sim::SweepPoint& p : r.points)
      if (p.fits) all.push_back({p.decode_seconds, p.tokens_per_s_per_device});
  const std::vector<sim::LatencyThroughput> front = sim::pareto_front(all);
  report::LineSeries cloud, line;
  cloud.label = "every shape, plan and batch that fits (" + std::to_string(all.size()) + ")";
  cloud.scatter = true;
  for (const auto& p : all) cloud.x.push_back(p.latency_s * 1e3), cloud.y.push_back(p.tokens_per_s);
  line.label = "Pareto front (" + std::to_string(front.size()) + ")";
  for (const auto& p : front) line.x.push_back(p.latency_s * 1e3), line.y.push_back(p.tokens_per_s);
  char title[160];
  std::snprintf(title, sizeof title, "Pareto front, limit %.3g ms: %s", limit_ms, profile.c_str());
  report::write_line_chart_svg(path, title, "ms a token (decode step)", "tokens/s per device", {cloud, line});
  return {all.size(), front.size()};
}

void run_sweep(const SweepArgs& a) {
  const sim::HardwareProfile profile = sim::HardwareProfile::from_file(a.profile);
  std::vector<sim::SweepShape> shapes;
  if (a.model.empty()) {
    shapes = sim::paper_shapes();
  } else {
    std::string path = a.model;
    if (!path.ends_with(".json")) path += "/config.json";
    const model::ModelConfig c = model::ModelConfig::from_file(path);
    shapes.push_back({sim::shape_name(c), c});
  }
  sim::SweepOptions o;
  o.batches = parse_batches(a.batches);
  check(a.latency_ms > 0, "--latency-ms must be positive");
  o.latency_limit_s = a.latency_ms / 1e3;
  o.workload.prompt = a.prompt;
  o.workload.gen = a.gen;
  o.workload.weights = sim::parse_weight_type(a.weights);
  check(a.kv == "bf16" || a.kv == "int8", "--kv-dtype must be bf16 or int8 (got '" + a.kv + "')");
  o.workload.kv_bytes = a.kv == "int8" ? 1 : 2;
  o.workload.overlap_comm = a.overlap;
  o.seed = a.seed;
  check(a.top >= 0, "--top must not be negative");
  check(a.plot >= 1, "--plot must be at least 1");

  const sim::Sweep s = sim::run_sweep(shapes, profile, o);
  if (s.feasible() == 0) throw Error(s.nothing_fits_reason(o));
  if (!a.svg.empty()) write_plot(a.svg, s, a.plot, profile.name, a.latency_ms);
  std::pair<size_t, size_t> pareto;
  if (!a.pareto.empty()) pareto = write_pareto(a.pareto, s, profile.name, a.latency_ms);
  const int shown = a.top == 0 ? int(s.results.size()) : std::min<int>(a.top, int(s.feasible()));

  if (a.json) {
    nlohmann::json results = nlohmann::json::array();
    for (int i = 0; i < shown; ++i) results.push_back(result_json(s, s.results[i]));
    nlohmann::json j = {{"profile", profile.name},
                        {"latency_limit_ms", a.latency_ms},
                        {"batches", o.batches},
                        {"weights", a.weights},
                        {"kv_cache", a.kv},
                        {"prompt", a.prompt},
                        {"gen", a.gen},
                        {"overlap_comm", a.overlap},
                        {"shapes", s.shapes.size()},
                        {"evaluated", s.results.size()},
                        {"invalid", s.invalid},
                        {"feasible", s.feasible()},
                        {"results", results}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("profile  %s (%s), %d devices; decode latency limit %.3g ms; weights %s, KV cache %s; prompt %lld, "
              "generate %lld%s\n",
              profile.name.c_str(), a.profile.c_str(), profile.total_devices(), a.latency_ms, a.weights.c_str(),
              a.kv.c_str(), (long long)a.prompt, (long long)a.gen, a.overlap ? "; comm overlapped" : "");
  std::printf("searched %zu shape(s) x the plans over 1..%d devices (%zu valid pairs, %lld the plans cannot split) x "
              "batches %s: %lld pairs meet the limit and fit\n\n",
              s.shapes.size(), profile.total_devices(), s.results.size(), (long long)s.invalid, a.batches.c_str(),
              (long long)s.feasible());
  std::printf("|  # | shape                         | params | plan                                      | dev | "
              "batch | decode ms | tok/s/dev | mem GiB |\n");
  std::printf("|----|-------------------------------|--------|-------------------------------------------|-----|"
              "-------|-----------|-----------|---------|\n");
  for (int i = 0; i < shown; ++i) {
    const sim::SweepResult& r = s.results[i];
    const model::ModelConfig& c = s.shapes[r.shape].config;
    std::printf("| %2d | %-29s | %5.1fB | %-41s | %3d |", i + 1, s.shapes[r.shape].name.c_str(),
                c.total_parameters() / 1e9, r.plan.to_string().c_str(), r.plan.devices());
    if (r.best < 0) {
      std::printf("     - |         - |         - |       - |\n");
      continue;
    }
    const sim::SweepPoint& b = r.points[r.best];
    std::printf(" %5lld | %9.2f | %9.1f | %7.2f |\n", (long long)b.batch, b.decode_seconds * 1e3,
                b.tokens_per_s_per_device, gib(b.memory_bytes));
  }
  const sim::SweepResult& best = s.results[0];
  std::printf("\nbest: %s with plan %s at batch %lld: %.1f tokens/s per device, %.2f ms a token\n",
              s.shapes[best.shape].name.c_str(), best.plan.to_string().c_str(),
              (long long)best.points[best.best].batch, best.best_throughput(),
              best.points[best.best].decode_seconds * 1e3);
  const int64_t largest = *std::max_element(o.batches.begin(), o.batches.end());
  if (best.points[best.best].batch == largest)
    std::printf("note: the best batch is the largest tried (%lld): larger --batches may do better\n",
                (long long)largest);
  if (!a.svg.empty()) std::printf("plot: %s\n", a.svg.c_str());
  if (!a.pareto.empty())
    std::printf("pareto: %s (%zu of %zu points that fit are on the front)\n", a.pareto.c_str(), pareto.second,
                pareto.first);
}

}  // namespace

void add_sim_sweep_command(CLI::App& sim) {
  auto a = std::make_shared<SweepArgs>();
  CLI::App* cmd = sim.add_subcommand(
      "sweep", "search model shapes and parallel plans for the best decode throughput per device under a latency limit");
  cmd->add_option("--profile", a->profile, "hardware profile JSON (docs/sim/profiles/)")->required();
  cmd->add_option("-m,--model", a->model, "one model (directory or config.json); default: the paper's ranges (MOGE.md §5)");
  cmd->add_option("--latency-ms", a->latency_ms, "decode per-token latency limit")->capture_default_str();
  cmd->add_option("--batches", a->batches, "decode batch sizes to try, comma-separated")->capture_default_str();
  cmd->add_option("--prompt", a->prompt, "prompt tokens a sequence")->capture_default_str();
  cmd->add_option("--gen", a->gen, "generated tokens a sequence")->capture_default_str();
  cmd->add_option("--type,--dtype", a->weights, "weights: f32, bf16, int8 (W8A8) or int4 (W4A8)")->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv, "KV cache: bf16 or int8")->capture_default_str();
  cmd->add_flag("--overlap", a->overlap, "hide each layer's collectives behind its expert compute");
  cmd->add_option("--seed", a->seed, "seed of the top-k load Monte Carlo")->capture_default_str();
  cmd->add_option("--top", a->top, "rows of the table / JSON results (0: every pair, infeasible too)")->capture_default_str();
  cmd->add_option("--svg", a->svg, "write throughput per device vs batch of the best few to this SVG");
  cmd->add_option("--plot", a->plot, "lines in the SVG")->capture_default_str();
  cmd->add_option("--pareto", a->pareto,
                  "write throughput per device vs per-token latency of every point that fits, the Pareto front "
                  "joined, to this SVG");
  cmd->add_flag("--json", a->json, "print JSON instead of a table");
  cmd->callback([a] { run_sweep(*a); });
}

}  // namespace moge::cli
