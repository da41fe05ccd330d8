#include "moge/sim/hardware.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/core/file.h"

namespace moge::sim {
namespace {

using nlohmann::json;

// Reads fields of one JSON object; every error names the file and the field's dotted path.
class Reader {
 public:
  Reader(const json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {}

  std::string field(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(source_ + ": field '" + field(key) + "' " + what);
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  const json& at(const std::string& key) const {
    if (!has(key)) fail(key, "is missing");
    return j_.at(key);
  }
  Reader object(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_object()) fail(key, "must be an object");
    return Reader(v, source_, field(key));
  }
  // A number > 0 (or >= 0 when zero_ok); `fallback` when absent and not required.
  double number(const std::string& key, bool required, double fallback = 0, bool zero_ok = false) const {
    if (!has(key)) {
      if (required) fail(key, "is missing");
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_number()) fail(key, std::string("must be a number (got ") + v.type_name() + ")");
    const double x = v.get<double>();
    if (!(zero_ok ? x >= 0 : x > 0)) fail(key, "must be " + std::string(zero_ok ? "non-negative" : "positive") + " (got " + str(x) + ")");
    return x;
  }
  int integer(const std::string& key, bool required, int fallback) const {
    if (!has(key)) {
      if (required) fail(key, "is missing");
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (1 << 20))
      fail(key, "must be a positive integer (got " + v.dump() + ")");
    return v.get<int>();
  }
  std::string string(const std::string& key, bool required, const std::string& fallback = "") const {
    if (!has(key)) {
      if (required) fail(key, "is missing");
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_string() || v.get<std::string>().empty()) fail(key, "must be a non-empty string");
    return v.get<std::string>();
  }
  std::vector<std::string> strings(const std::string& key, bool required) const {
    if (!has(key)) {
      if (required) fail(key, "is missing (a list of strings)");
      return {};
    }
    const json& v = j_.at(key);
    if (!v.is_array() || (required && v.empty())) fail(key, "must be a non-empty list of strings");
    std::vector<std::string> out;
    for (const json& s : v) {
      if (!s.is_string()) fail(key, "must be a list of strings");
      out.push_back(s.get<std::string>());
    }
    return out;
  }
  Efficiency efficiency() const {
    Efficiency e;
    e.compute = number("compute", true);
    e.memory = number("memory", true);
    if (e.compute > 1) fail("compute", "must be at most 1 (a fraction of the peak)");
    if (e.memory > 1) fail("memory", "must be at most 1 (a fraction of the peak)");
    return e;
  }
  std::vector<EfficiencyBucket> buckets(const std::string& key) const {
    if (!has(key)) return {};
    const json& v = j_.at(key);
    if (!v.is_array()) fail(key, "must be a list of {type, max_rows, compute, memory}");
    std::vector<EfficiencyBucket> out;
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string name = key + "[" + std::to_string(i) + "]";
      if (!v[i].is_object()) fail(name, "must be an object");
      Reader r(v[i], source_, field(name));
      EfficiencyBucket b;
      try {
        b.type = parse_compute_type(r.string("type", true));
      } catch (const Error& e) {
        r.fail("type", std::string("is invalid: ") + e.what());
      }
      b.max_rows = r.has("max_rows") ? r.integer("max_rows", true, 0) : 0;
      b.efficiency = r.efficiency();
      if (r.has("overhead_us")) b.overhead_s = r.number("overhead_us", true, 0, true) * 1e-6;
      if (r.has("per_position_ns")) b.efficiency.per_position_s = r.number("per_position_ns", true, 0, true) * 1e-9;
      out.push_back(b);
    }
    return out;
  }
  // An object of numbers by compute type, e.g. {"bf16": 0.9, "int8": 1.2}, into out[type].
  template <typename T>
  void by_type(const std::string& key, T (&out)[4], bool integral) const {
    const Reader r = object(key);
    for (const auto& [name, value] : r.j_.items()) {
      ComputeType t;
      try {
        t = parse_compute_type(name);
      } catch (const Error& e) {
        r.fail(name, std::string("is not a compute type: ") + e.what());
      }
      out[int(t)] = integral ? T(r.integer(name, true, 0)) : T(r.number(name, true, 0, true));
    }
  }
  LinkTier tier() const {
    LinkTier t;
    t.latency_s = number("latency_us", true, 0, true) * 1e-6;
    t.bandwidth_bytes_s = number("bandwidth_gb_s", true) * 1e9;
    const std::string algorithm = string("algorithm", false, "ring");
    if (algorithm != "ring" && algorithm != "direct") fail("algorithm", "must be 'ring' or 'direct' (got '" + algorithm + "')");
    t.direct = algorithm == "direct";
    return t;
  }

  static std::string str(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }

 private:
  const json& j_;
  std::string source_, path_;
};

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

ComputeType parse_compute_type(const std::string& name) {
  if (name == "bf16" || name == "f16") return ComputeType::bf16;
  if (name == "int8") return ComputeType::int8;
  if (name == "f32") return ComputeType::f32;
  if (name == "int4") return ComputeType::int4;
  throw Error("unknown compute type '" + name + "' (expected bf16, int8, int4 or f32)");
}

const char* compute_type_name(ComputeType t) {
  switch (t) {
    case ComputeType::bf16: return "bf16";
    case ComputeType::int8: return "int8";
    case ComputeType::f32: return "f32";
    case ComputeType::int4: return "int4";
  }
  return "?";
}

const char* kernel_class_name(KernelClass k) {
  switch (k) {
    case KernelClass::gemm: return "gemm";
    case KernelClass::gemv: return "gemv";
    case KernelClass::attention: return "attention";
    case KernelClass::amx_tiles: return "amx_tiles";
  }
  return "?";
}

double HardwareProfile::peak_flops(ComputeType t) const {
  switch (t) {
    case ComputeType::bf16: return peak_flops_bf16;
    case ComputeType::int8: return peak_flops_int8;
    case ComputeType::f32: return peak_flops_f32;
    case ComputeType::int4: return peak_flops_int4 > 0 ? peak_flops_int4 : peak_flops_int8;
  }
  return 0;
}

Efficiency HardwareProfile::efficiency(KernelClass k, ComputeType t, int64_t rows) const {
  const std::vector<EfficiencyBucket>& table = k == KernelClass::gemm        ? gemm
                                               : k == KernelClass::gemv      ? gemv
                                               : k == KernelClass::amx_tiles ? amx_tiles
                                                                             : attention;
  for (const EfficiencyBucket& b : table)
    if (b.type == t && (b.max_rows == 0 || rows <= b.max_rows)) {
      Efficiency e = b.efficiency;
      e.overhead_s = b.overhead_s >= 0 ? b.overhead_s : kernel_overhead_s;
      return e;
    }
  if (t == ComputeType::int4) return efficiency(k, ComputeType::int8, rows);
  Efficiency e = default_efficiency;
  e.overhead_s = kernel_overhead_s;
  return e;
}

HardwareProfile HardwareProfile::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(source + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), source + ": expected a JSON object (a hardware profile)");
  const Reader top(j, source, "");
  HardwareProfile p;
  p.source = source;
  p.name = top.string("name", true);
  p.devices_per_node = top.integer("devices_per_node", true, 1);
  p.nodes = top.integer("nodes", false, 1);
  p.devices_per_card = top.integer("devices_per_card", false, 1);
  p.sources = top.strings("sources", true);
  p.assumptions = top.strings("assumptions", false);

  const Reader dev = top.object("device");
  const Reader peak = dev.object("peak_tflops");
  p.peak_flops_bf16 = peak.number("bf16", true) * 1e12;
  p.peak_flops_int8 = peak.number("int8", true) * 1e12;
  p.peak_flops_f32 = peak.number("f32", true) * 1e12;
  p.peak_flops_int4 = peak.number("int4", false) * 1e12;
  p.memory_bandwidth_bytes_s = dev.number("memory_bandwidth_gb_s", true) * 1e9;
  p.memory_capacity_bytes = dev.number("memory_capacity_gib", true) * kGiB;
  if (dev.has("cache_mib") || dev.has("cache_bandwidth_gb_s")) {
    p.cache_bytes = dev.number("cache_mib", true) * 1024 * 1024;
    p.cache_bandwidth_bytes_s = dev.number("cache_bandwidth_gb_s", true) * 1e9;
  }
  p.memory_reserved_bytes = dev.number("memory_reserved_gib", false, 0, true) * kGiB;
  if (p.memory_reserved_bytes >= p.memory_capacity_bytes)
    dev.fail("memory_reserved_gib", "must be less than memory_capacity_gib");
  p.activation_bytes = dev.integer("activation_bytes", false, 2);
  p.kernel_overhead_s = dev.number("kernel_overhead_us", false, 0, true) * 1e-6;
  p.kernels_per_expert = dev.number("kernels_per_expert", false, 0, true);
  if (dev.has("activation_prep_ns")) {
    dev.by_type("activation_prep_ns", p.activation_prep_s, false);
    for (double& s : p.activation_prep_s) s *= 1e-9;
  }
  if (dev.has("linear_group_max_rows")) {
    p.per_call = true;
    dev.by_type("linear_group_max_rows", p.linear_group_max_rows, true);
  }

  const Reader eff = top.object("efficiency");
  p.default_efficiency = eff.object("default").efficiency();
  p.gemv_max_rows = eff.integer("gemv_max_rows", false, 16);
  p.gemm = eff.buckets("gemm");
  p.gemv = eff.buckets("gemv");
  p.attention = eff.buckets("attention");
  p.amx_tiles = eff.buckets("amx_tiles");
  for (size_t i = 0; i < p.amx_tiles.size(); ++i)
    if (p.amx_tiles[i].type != ComputeType::bf16)
      eff.fail("amx_tiles[" + std::to_string(i) + "].type", "must be bf16 (the AMX tile kernel is bf16 only)");

  const Reader net = top.object("interconnect");
  p.intra_node = net.object("intra_node").tier();
  p.inter_node = net.object("inter_node").tier();
  return p;
}

HardwareProfile HardwareProfile::from_file(const std::string& path) {
  return from_json_text(read_text_file(path), path);
}

}  // namespace moge::sim
