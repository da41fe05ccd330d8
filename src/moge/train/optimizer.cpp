#include "moge/train/optimizer.h"

#include <cmath>
#include <cstring>
#include <set>
#include <string_view>
#include <utility>

#include "moge/core/error.h"

namespace moge::train {

namespace {

void check_finite_nonneg(double v, const char* field) {
  check(std::isfinite(v) && v >= 0, std::string("AdamW: ") + field + " must be finite and >= 0, got " + std::to_string(v));
}

void check_beta(double v, const char* field) {
  check(std::isfinite(v) && v >= 0 && v < 1, std::string("AdamW: ") + field + " must be in [0, 1), got " + std::to_string(v));
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

AdamW::AdamW(const AdamWConfig& config) : config_(config) {
  check_finite_nonneg(config.lr, "lr");
  check_beta(config.beta1, "beta1");
  check_beta(config.beta2, "beta2");
  check_finite_nonneg(config.eps, "eps");
  check_finite_nonneg(config.weight_decay, "weight_decay");
}

void AdamW::add(std::string name, float* param, float* grad, int64_t n, bool decay) {
  add_shard(std::move(name), param, grad, n, decay, 0, n);
}

void AdamW::add_shard(std::string name, float* param, float* grad, int64_t n, bool decay, int64_t offset,
                      int64_t total) {
  check(!name.empty(), "AdamW: parameter name must not be empty");
  for (const Param& p : params_) check(p.name != name, "AdamW: parameter " + name + " added twice");
  check(param != nullptr && grad != nullptr, "AdamW: parameter " + name + ": null param or grad");
  check(n > 0, "AdamW: parameter " + name + ": n must be > 0, got " + std::to_string(n));
  check(offset >= 0 && offset + n <= total, "AdamW: parameter " + name + ": shard [" + std::to_string(offset) + ", " +
                                                std::to_string(offset + n) + ") outside its " + std::to_string(total) +
                                                " elements");
  params_.push_back({std::move(name), param, grad, n, decay, offset, total, std::vector<float>(n, 0.0f),
                     std::vector<float>(n, 0.0f)});
}

void AdamW::step(double lr, float grad_scale, bool zero_grads) {
  check(std::isfinite(lr) && lr >= 0, "AdamW: lr must be finite and >= 0, got " + std::to_string(lr));
  ++step_;
  const AdamWConfig& c = config_;
  // torch's scalars: Python doubles, each rounded to f32 where it meets the f32 tensors.
  const float decay_mul = float(1.0 - lr * c.weight_decay);
  const float b1 = float(c.beta1), one_minus_b1 = float(1.0 - c.beta1);
  const float b2 = float(c.beta2), one_minus_b2 = float(1.0 - c.beta2);
  const double bias_correction1 = 1.0 - std::pow(c.beta1, double(step_));
  const double bias_correction2 = 1.0 - std::pow(c.beta2, double(step_));
  const float neg_step_size = float(-(lr / bias_correction1));
  const float bias_correction2_sqrt = float(std::sqrt(bias_correction2));
  const float eps = float(c.eps);
  // A gradient scale of 1 (no clipping) multiplies by exactly 1: skip it, as for decay.
  const bool scaled = grad_scale != 1.0f;

  for (Param& prm : params_) {
    float* p = prm.data;
    float* g = prm.grad;
    float* m = prm.exp_avg.data();
    float* v = prm.exp_avg_sq.data();
    // Without decay torch multiplies by exactly 1, which changes nothing: skip it.
    const bool decay = prm.decay && c.weight_decay != 0;
    const int64_t n = prm.n;
    // Vectorized (this file is compiled with -fno-math-errno, so std::sqrt is vsqrtps: the same
    // correctly rounded result as the scalar sqrtss). One pass reads p, g, m, v and writes p, m, v
    // (and g, when zeroing it).
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float pi = p[i];
      if (decay) pi *= decay_mul;
      // The clipped gradient, g * scale rounded to f32 as clip_to_norm's in-place scaling does.
      const float gi = scaled ? g[i] * grad_scale : g[i];
      if (zero_grads) g[i] = 0.0f;
      // Separate roundings in torch's order: mul_ then add_(alpha), mul_ then addcmul_.
      const float mi = m[i] * b1 + one_minus_b1 * gi;
      const float vi = v[i] * b2 + (one_minus_b2 * gi) * gi;
      const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi + (neg_step_size * mi) / denom;  // addcdiv_(m, denom, value=-step_size)
    }
  }
}

std::vector<model::NamedTensor> AdamW::state_tensors() const {
  std::vector<model::NamedTensor> out;
  for (const Param& p : params_) {
    out.push_back({p.name + ".exp_avg", model::StDType::F32, {p.n}, p.exp_avg.data()});
    out.push_back({p.name + ".exp_avg_sq", model::StDType::F32, {p.n}, p.exp_avg_sq.data()});
  }
  return out;
}

void AdamW::load_state(const model::SafetensorsFile& file, int64_t step_count) {
  const std::string where = "optimizer state " + file.path();
  check(step_count >= 0, where + ": step count must be >= 0, got " + std::to_string(step_count));

  // Pass 1: check every tensor, so that a bad file leaves the optimizer untouched.
  std::set<std::string> expected;
  std::vector<std::pair<std::pair<const model::TensorInfo*, int64_t>, std::vector<float>*>> copies;  // (tensor, offset)
  for (Param& p : params_) {
    for (auto [suffix, moment] : {std::pair{".exp_avg", &p.exp_avg}, std::pair{".exp_avg_sq", &p.exp_avg_sq}}) {
      const std::string name = p.name + suffix;
      expected.insert(name);
      check(file.has(name), where + ": missing tensor " + name);
      const model::TensorInfo& t = file.get(name);
      check(t.dtype == model::StDType::F32,
            where + ": tensor " + name + ": expected F32, file has " + model::st_dtype_name(t.dtype));
      check(t.shape == Shape{p.total},
            where + ": tensor " + name + ": expected shape " + shape_str({p.total}) + ", file has " + shape_str(t.shape));
      copies.push_back({{&t, p.offset}, moment});
    }
  }
  for (const model::TensorInfo& t : file.tensors())
    if ((ends_with(t.name, ".exp_avg") || ends_with(t.name, ".exp_avg_sq")) && !expected.count(t.name))
      throw Error(where + ": tensor " + t.name + " belongs to no parameter of this optimizer");

  // Pass 2: copy (the mapped data need not be 4-byte aligned, hence memcpy).
  for (auto [source, moment] : copies) {
    auto [t, offset] = source;
    std::memcpy(moment->data(), t->data + size_t(offset) * sizeof(float),
                moment->size() * sizeof(float));
  }
  step_ = step_count;
}

}  // namespace moge::train
