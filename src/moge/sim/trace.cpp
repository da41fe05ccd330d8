#include "moge/sim/trace.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "moge/core/error.h"
#include "moge/core/file.h"

namespace moge::sim {
namespace {

// A positive integer field of the trace's top-level object.
int64_t positive_field(const nlohmann::json& j, const char* field, const std::string& source) {
  const std::string where = source + ": field '" + std::string(field) + "'";
  check(j.contains(field), where + " is missing");
  const nlohmann::json& v = j.at(field);
  check(v.is_number_integer() && v.get<int64_t>() >= 1, where + " must be a positive integer (got " + v.dump() + ")");
  return v.get<int64_t>();
}

}  // namespace

model::RoutingTrace parse_routing_trace(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(source + ": not a routing trace, invalid JSON (" + e.what() + ")");
  }
  check(j.is_object(), source + ": a routing trace must be a JSON object with top_k, num_experts, tokens, layers");
  model::RoutingTrace trace;
  const int64_t top_k = positive_field(j, "top_k", source), experts = positive_field(j, "num_experts", source);
  check(experts <= (int64_t(1) << 30), source + ": field 'num_experts' is too large (" + std::to_string(experts) + ")");
  check(top_k <= experts, source + ": field 'top_k' (" + std::to_string(top_k) + ") exceeds num_experts (" +
                              std::to_string(experts) + ")");
  trace.top_k = int(top_k);
  trace.num_experts = int(experts);
  const int64_t tokens = positive_field(j, "tokens", source);
  check(j.contains("layers"), source + ": field 'layers' is missing");
  const nlohmann::json& layers = j.at("layers");
  check(layers.is_array() && !layers.empty(), source + ": field 'layers' must be a non-empty array of layers");
  trace.expert.reserve(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string where = source + ": field 'layers[" + std::to_string(l) + "]'";
    const nlohmann::json& ids = layers[l];
    check(ids.is_array(), where + " must be an array of expert ids");
    check(int64_t(ids.size()) == tokens * top_k, where + " has " + std::to_string(ids.size()) +
                                                     " expert ids, expected tokens · top_k = " +
                                                     std::to_string(tokens * top_k));
    std::vector<int32_t> layer(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const nlohmann::json& e = ids[i];
      check(e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() < experts,
            where + "[" + std::to_string(i) + "] is " + e.dump() + ", not an expert id in [0, " +
                std::to_string(experts) + ")");
      layer[i] = int32_t(e.get<int64_t>());
    }
    trace.expert.push_back(std::move(layer));
  }
  return trace;
}

model::RoutingTrace read_routing_trace(const std::string& path) {
  return parse_routing_trace(read_text_file(path), path);
}

TraceLoad::TraceLoad(model::RoutingTrace trace, int devices, std::string source)
    : trace_(std::move(trace)), devices_(devices), source_(std::move(source)) {
  check(!trace_.expert.empty() && trace_.tokens() >= 1, source_ + ": the routing trace has no tokens");
  check(devices >= 1 && trace_.num_experts % devices == 0,
        "expert parallel degree " + std::to_string(devices) + " does not divide the trace's " +
            std::to_string(trace_.num_experts) + " experts (" + source_ + ")");
  model_layers_ = int(trace_.expert.size());
}

void TraceLoad::set_model_layers(int layers) {
  check(layers >= 1, "TraceLoad: the model must have at least one layer");
  std::lock_guard<std::mutex> lock(mutex_);
  model_layers_ = layers;
}

int TraceLoad::trace_layer(int model_layer) const {
  const int64_t n = int64_t(trace_.expert.size());
  // Proportional: the model's first and last layers replay the trace's first and last.
  return int(std::clamp<int64_t>(int64_t(model_layer) * n / model_layers_, 0, n - 1));
}

ExpertLoad TraceLoad::layer(int layer, int64_t tokens) const { return replay(layer, tokens).load; }

ReplayStats TraceLoad::replay(int layer, int64_t tokens) const {
  const int tl = trace_layer(layer);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find({tl, tokens});
    if (it != cache_.end()) return it->second;
  }
  ReplayStats out;
  const int k = trace_.top_k, per_device = trace_.num_experts / devices_;
  const int64_t n = trace_.tokens();
  out.load.mean_pairs = double(tokens) * k / devices_;  // every pair lands on some device
  if (tokens <= 0) return out;
  out.wrapped = tokens > n;
  out.batches = out.wrapped ? 1 : n / tokens;
  const std::vector<int32_t>& ids = trace_.expert[tl];
  std::vector<int64_t> pairs(devices_);
  std::vector<int64_t> seen(trace_.num_experts);  // the batch that last touched an expert, + 1
  std::vector<int> touched(devices_);
  double sum_max = 0, sum_max2 = 0, sum_touched = 0;
  for (int64_t b = 0; b < out.batches; ++b) {
    std::fill(pairs.begin(), pairs.end(), 0);
    std::fill(touched.begin(), touched.end(), 0);
    for (int64_t t = 0; t < tokens; ++t) {
      const int32_t* row = ids.data() + ((b * tokens + t) % n) * k;
      for (int j = 0; j < k; ++j) {
        const int e = row[j], d = e / per_device;
        ++pairs[d];
        if (seen[e] != b + 1) {
          seen[e] = b + 1;
          ++touched[d];
        }
      }
    }
    int busiest = 0;
    for (int d = 1; d < devices_; ++d)
      if (pairs[d] > pairs[busiest] || (pairs[d] == pairs[busiest] && touched[d] > touched[busiest])) busiest = d;
    const double m = double(pairs[busiest]);
    sum_max += m;
    sum_max2 += m * m;
    sum_touched += touched[busiest];
  }
  const double batches = double(out.batches);
  out.load.max_pairs = sum_max / batches;
  out.load.experts_touched = sum_touched / batches;
  out.max_pairs_stddev = std::sqrt(std::max(0.0, sum_max2 / batches - out.load.max_pairs * out.load.max_pairs));
  std::lock_guard<std::mutex> lock(mutex_);
  cache_[{tl, tokens}] = out;
  return out;
}

}  // namespace moge::sim
