// The optimizer side of training: AdamW against torch.optim.AdamW (tests/reference/adamw.py,
// torch 1.13, float32) with clip_grad_norm_ and a cosine schedule; exact resume from saved state;
// the schedule against its formula; deterministic gradient clipping.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numbers>
#include <random>

#include "moge/core/error.h"
#include "moge/core/npy.h"
#include "moge/model/safetensors.h"
#include "moge/train/grad_clip.h"
#include "moge/train/optimizer.h"
#include "moge/train/schedule.h"
#include "test_util.h"

namespace moge::train {
namespace {

namespace fs = std::filesystem;

// Expects fn to throw moge::Error whose message contains `field`.
void expect_error_naming(const std::function<void()>& fn, const std::string& field) {
  try {
    fn();
    ADD_FAILURE() << "no Error thrown; expected one naming " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what() << " does not name " << field;
  }
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("moge_optimizer_test_" + std::to_string(getpid()) + "_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// ---------------------------------------------------------------------------------------------
// AdamW against PyTorch

const std::string& reference_dir() {
  static const TempDir holder("reference");
  static const std::string dir = [] {
    const std::string out = holder.path.string();
    const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/reference/adamw.py") + " --out " + out +
                            " > " + out + "/log.txt 2>&1";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("reference script failed: " + cmd);
    return out;
  }();
  return dir;
}

std::vector<float> load(const std::string& name) {
  return read_npy(reference_dir() + "/" + name + ".npy").f32;
}

TEST(AdamW, MatchesTorchWithScheduleAndClipping) {
  std::ifstream in(reference_dir() + "/config.json");
  const auto cfg = nlohmann::json::parse(in);
  const LrSchedule schedule({.max_lr = cfg["max_lr"], .min_lr = cfg["min_lr"], .warmup = cfg["warmup"], .total = cfg["total"]});
  AdamW opt({.beta1 = cfg["beta1"], .beta2 = cfg["beta2"], .eps = cfg["eps"], .weight_decay = cfg["weight_decay"]});

  struct P {
    std::string name;
    std::vector<float> data, grad;
  };
  std::vector<P> params;
  for (const auto& p : cfg["params"]) params.push_back({p["name"], load("init_" + std::string(p["name"])), {}});
  for (size_t k = 0; k < params.size(); ++k) {
    params[k].grad.resize(params[k].data.size());
    opt.add(params[k].name, params[k].data.data(), params[k].grad.data(), int64_t(params[k].data.size()),
            cfg["params"][k]["decay"]);
  }

  const std::vector<float> torch_norms = load("grad_norm");
  const std::vector<float> torch_lrs = load("lr");
  double worst_param = 0, worst_norm = 0;
  int clipped = 0;
  for (int s = 0; s < int(cfg["steps"]); ++s) {
    std::vector<std::span<float>> grads;
    for (P& p : params) {
      // Copied into the registered buffer: the optimizer holds its address.
      const std::vector<float> g = load("grad_" + std::to_string(s) + "_" + p.name);
      ASSERT_EQ(g.size(), p.grad.size());
      std::copy(g.begin(), g.end(), p.grad.begin());
      grads.emplace_back(p.grad);
    }
    const double norm = clip_grad_norm(grads, cfg["max_norm"]);
    clipped += norm > double(cfg["max_norm"]);
    worst_norm = std::max(worst_norm, std::abs(norm - torch_norms[s]) / torch_norms[s]);
    const double lr = schedule.at(s);
    EXPECT_NEAR(lr, torch_lrs[s], 1e-7 * torch_lrs[s]) << "step " << s;  // lr.npy is read as f32
    opt.step(lr);
    for (const P& p : params) {
      const std::vector<float> want = load("param_" + std::to_string(s) + "_" + p.name);
      ASSERT_EQ(want.size(), p.data.size());
      const double err = test::rel_error(p.data.data(), want.data(), int64_t(want.size()));
      worst_param = std::max(worst_param, err);
      EXPECT_LT(err, 1e-6) << p.name << " after step " << s;
    }
  }
  EXPECT_EQ(clipped, 3);  // the reference clips steps 1, 3 and 4: both paths ran
  EXPECT_LT(worst_norm, 1e-6);
  EXPECT_EQ(opt.step_count(), int64_t(cfg["steps"]));
  std::printf("worst relative error vs torch: params %.3g, grad norm %.3g\n", worst_param, worst_norm);
}

// Random parameters and gradients for the tests below, reproducible from a seed.
std::vector<float> random_vector(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// Two parameters with their gradients; the optimizer holds pointers into it.
struct Model {
  std::vector<float> w = random_vector(1000, 1), w_grad = std::vector<float>(1000);
  std::vector<float> norm = random_vector(17, 2), norm_grad = std::vector<float>(17);
  void attach(AdamW& opt) {
    opt.add("w", w.data(), w_grad.data(), int64_t(w.size()), true);
    opt.add("norm", norm.data(), norm_grad.data(), int64_t(norm.size()), false);
  }
  void set_grads(int step) {  // in place: the optimizer holds the buffers' addresses
    const std::vector<float> gw = random_vector(int64_t(w.size()), 100 + step, 0.1f);
    const std::vector<float> gn = random_vector(int64_t(norm.size()), 200 + step, 0.1f);
    std::copy(gw.begin(), gw.end(), w_grad.begin());
    std::copy(gn.begin(), gn.end(), norm_grad.begin());
  }
};

// step(lr, scale, zero_grads = true) is the update of step(lr, scale) (checked against torch
// above), bit for bit, and leaves every gradient at 0.
TEST(AdamW, ZeroingGradsInTheStepChangesNothingElse) {
  const AdamWConfig config{.lr = 0.01};
  Model a, b;
  AdamW opt_a(config), opt_b(config);
  a.attach(opt_a);
  b.attach(opt_b);
  for (int s = 0; s < 3; ++s) {
    a.set_grads(s);
    b.set_grads(s);
    opt_a.step(0.01, 0.5f);
    opt_b.step(0.01, 0.5f, /*zero_grads=*/true);
    EXPECT_EQ(std::memcmp(a.w.data(), b.w.data(), a.w.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(a.norm.data(), b.norm.data(), a.norm.size() * sizeof(float)), 0);
    EXPECT_EQ(b.w_grad, std::vector<float>(b.w_grad.size(), 0.0f));
    EXPECT_EQ(b.norm_grad, std::vector<float>(b.norm_grad.size(), 0.0f));
  }
}

TEST(AdamW, ResumeFromSavedStateIsBitwiseIdentical) {
  TempDir dir("resume");
  const std::string path = (dir.path / "optimizer.safetensors").string();
  const AdamWConfig config{.lr = 0.01};

  Model a;
  AdamW opt_a(config);
  a.attach(opt_a);
  for (int s = 0; s < 3; ++s) {
    a.set_grads(s);
    opt_a.step(0.01 * (s + 1));
  }
  model::write_safetensors(path, opt_a.state_tensors(), {{"step", std::to_string(opt_a.step_count())}});

  // A fresh optimizer over a copy of the weights, restored from the file.
  Model b = a;
  AdamW opt_b(config);
  b.attach(opt_b);
  model::SafetensorsFile file(path);
  opt_b.load_state(file, std::stoll(file.metadata().at("step")));
  EXPECT_EQ(opt_b.step_count(), 3);

  for (int s = 3; s < 5; ++s) {
    a.set_grads(s);
    b.set_grads(s);
    opt_a.step(0.02);
    opt_b.step(0.02);
  }
  EXPECT_EQ(std::memcmp(a.w.data(), b.w.data(), a.w.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(a.norm.data(), b.norm.data(), a.norm.size() * sizeof(float)), 0);
  // The moments too, through the same views a trainer saves.
  const auto ta = opt_a.state_tensors(), tb = opt_b.state_tensors();
  ASSERT_EQ(ta.size(), 4u);
  for (size_t k = 0; k < ta.size(); ++k) {
    EXPECT_EQ(ta[k].name, tb[k].name);
    EXPECT_EQ(std::memcmp(ta[k].data, tb[k].data, size_t(ta[k].shape[0]) * sizeof(float)), 0) << ta[k].name;
  }
  EXPECT_EQ(ta[0].name, "w.exp_avg");
  EXPECT_EQ(ta[1].name, "w.exp_avg_sq");
}

// Expert parallelism: optimizers that each update a shard of a parameter compute what one
// optimizer over the whole parameter computes, and a shard restores its part of a whole state.
TEST(AdamW, ShardsUpdateAndRestoreTheirPartOfAParameter) {
  TempDir dir("shards");
  const AdamWConfig config{.lr = 0.01};
  Model whole, sharded = whole;
  AdamW opt_whole(config), opt_lo(config), opt_hi(config);
  whole.attach(opt_whole);
  opt_lo.add_shard("w", sharded.w.data(), sharded.w_grad.data(), 400, true, 0, 1000);
  opt_hi.add_shard("w", sharded.w.data() + 400, sharded.w_grad.data() + 400, 600, true, 400, 1000);
  for (int s = 0; s < 3; ++s) {
    whole.set_grads(s);
    sharded.set_grads(s);
    opt_whole.step(0.01);
    opt_lo.step(0.01);
    opt_hi.step(0.01);
  }
  EXPECT_EQ(std::memcmp(whole.w.data(), sharded.w.data(), whole.w.size() * sizeof(float)), 0);
  ASSERT_EQ(opt_hi.state_tensors()[0].shape, Shape{600});

  // A shard restored from the whole optimizer's file holds that part of its moments.
  const std::string path = (dir.path / "optimizer.safetensors").string();
  model::write_safetensors(path, opt_whole.state_tensors());
  AdamW restored(config);
  Model other;
  restored.add_shard("w", other.w.data() + 400, other.w_grad.data() + 400, 600, true, 400, 1000);
  restored.add("norm", other.norm.data(), other.norm_grad.data(), int64_t(other.norm.size()), false);
  restored.load_state(model::SafetensorsFile(path), 3);
  for (size_t k = 0; k < 2; ++k) {
    const float* want = static_cast<const float*>(opt_whole.state_tensors()[k].data) + 400;
    EXPECT_EQ(std::memcmp(restored.state_tensors()[k].data, want, 600 * sizeof(float)), 0) << k;
  }
  // A shard outside its parameter is an error naming it.
  expect_error_naming([&] { restored.add_shard("v", other.w.data(), other.w_grad.data(), 10, true, 995, 1000); },
                      "v: shard [995, 1005)");
}

TEST(AdamW, LoadStateChecksNamesAndSizes) {
  TempDir dir("load");
  Model a;
  AdamW opt(AdamWConfig{});
  a.attach(opt);
  a.set_grads(0);
  opt.step(0.01);
  const std::vector<float> exp_avg_before(static_cast<const float*>(opt.state_tensors()[0].data),
                                          static_cast<const float*>(opt.state_tensors()[0].data) + 1000);
  const std::vector<float> zeros(2000, 0.0f);
  auto write = [&](const std::string& file, std::vector<model::NamedTensor> tensors) {
    const std::string path = (dir.path / file).string();
    model::write_safetensors(path, tensors);
    return path;
  };
  const std::vector<model::NamedTensor> good = {
      {"w.exp_avg", model::StDType::F32, {1000}, zeros.data()},
      {"w.exp_avg_sq", model::StDType::F32, {1000}, zeros.data()},
      {"norm.exp_avg", model::StDType::F32, {17}, zeros.data()},
      {"norm.exp_avg_sq", model::StDType::F32, {17}, zeros.data()},
  };
  auto with = [&](size_t k, model::NamedTensor t) {
    auto v = good;
    v[k] = t;
    return v;
  };

  auto missing = good;
  missing.pop_back();
  expect_error_naming([&] { opt.load_state(model::SafetensorsFile(write("missing.st", missing)), 1); },
                      "missing tensor norm.exp_avg_sq");
  expect_error_naming(
      [&] { opt.load_state(model::SafetensorsFile(write("short.st", with(2, {"norm.exp_avg", model::StDType::F32, {16}, zeros.data()}))), 1); },
      "norm.exp_avg: expected shape [17]");
  expect_error_naming(
      [&] { opt.load_state(model::SafetensorsFile(write("i32.st", with(0, {"w.exp_avg", model::StDType::I32, {1000}, zeros.data()}))), 1); },
      "w.exp_avg: expected F32");
  auto stray = good;
  stray.push_back({"old.exp_avg", model::StDType::F32, {3}, zeros.data()});
  expect_error_naming([&] { opt.load_state(model::SafetensorsFile(write("stray.st", stray)), 1); }, "old.exp_avg");
  expect_error_naming([&] { opt.load_state(model::SafetensorsFile(write("good.st", good)), -1); }, "step count");

  // The failed loads changed nothing (the first tensors were fine in every file but the last).
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(std::memcmp(opt.state_tensors()[0].data, exp_avg_before.data(), 1000 * sizeof(float)), 0);
  // Unrelated tensors (model weights in the same file) are fine.
  auto extra = good;
  extra.push_back({"model.embed", model::StDType::F32, {2}, zeros.data()});
  opt.load_state(model::SafetensorsFile(write("extra.st", extra)), 7);
  EXPECT_EQ(opt.step_count(), 7);
  EXPECT_EQ(static_cast<const float*>(opt.state_tensors()[0].data)[0], 0.0f);
}

TEST(AdamW, BadConfigAndArgumentsNameTheField) {
  expect_error_naming([] { AdamW({.lr = -1}); }, "lr");
  expect_error_naming([] { AdamW({.beta1 = 1.0}); }, "beta1");
  expect_error_naming([] { AdamW({.beta2 = -0.1}); }, "beta2");
  expect_error_naming([] { AdamW({.eps = NAN}); }, "eps");
  expect_error_naming([] { AdamW({.weight_decay = -0.1}); }, "weight_decay");
  AdamW opt(AdamWConfig{});
  std::vector<float> p(4), g(4);
  opt.add("a", p.data(), g.data(), 4, true);
  expect_error_naming([&] { opt.add("a", p.data(), g.data(), 4, true); }, "parameter a added twice");
  expect_error_naming([&] { opt.add("b", p.data(), nullptr, 4, true); }, "parameter b");
  expect_error_naming([&] { opt.add("c", p.data(), g.data(), 0, true); }, "parameter c");
  expect_error_naming([&] { opt.step(-0.5); }, "lr");
  EXPECT_EQ(opt.step_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Schedule

TEST(LrSchedule, WarmupPeakAndEndFollowTheFormula) {
  const double max_lr = 3e-3, min_lr = 3e-4;
  const int64_t warmup = 10, total = 110;
  const LrSchedule schedule({.max_lr = max_lr, .min_lr = min_lr, .warmup = warmup, .total = total});
  // Written independently: (1 + cos x) / 2 = cos²(x / 2).
  auto expected = [&](int64_t s) {
    if (s < warmup) return max_lr * double(s + 1) / double(warmup);
    if (s >= total) return min_lr;
    const double half_angle = std::numbers::pi / 2 * double(s - warmup) / double(total - warmup);
    return min_lr + (max_lr - min_lr) * std::cos(half_angle) * std::cos(half_angle);
  };
  for (int64_t s : {0, 1, 5, 9, 10, 11, 35, 60, 85, 109, 110, 500})
    EXPECT_NEAR(schedule.at(s), expected(s), 1e-15) << "step " << s;
  EXPECT_DOUBLE_EQ(schedule.at(0), max_lr / warmup);                // warmup starts above 0
  EXPECT_DOUBLE_EQ(schedule.at(warmup - 1), max_lr);                // peak at the end of warmup
  EXPECT_DOUBLE_EQ(schedule.at(warmup), max_lr);                    // cosine starts at the peak
  EXPECT_DOUBLE_EQ(schedule.at(60), (max_lr + min_lr) / 2);        // halfway down
  EXPECT_DOUBLE_EQ(schedule.at(total), min_lr);                     // and ends at min_lr
  EXPECT_GT(schedule.at(total - 1), min_lr);

  // No warmup: the first step is at max_lr; warmup == total: no decay phase.
  EXPECT_DOUBLE_EQ(LrSchedule({.max_lr = 1, .min_lr = 0, .warmup = 0, .total = 4}).at(0), 1.0);
  const LrSchedule flat({.max_lr = 1, .min_lr = 0.5, .warmup = 4, .total = 4});
  EXPECT_DOUBLE_EQ(flat.at(3), 1.0);
  EXPECT_DOUBLE_EQ(flat.at(4), 0.5);
}

TEST(LrSchedule, BadConfigNamesTheField) {
  expect_error_naming([] { LrSchedule({.max_lr = -1, .min_lr = 0, .warmup = 0, .total = 10}); }, "max_lr");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = -1, .warmup = 0, .total = 10}); }, "min_lr");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = 2, .warmup = 0, .total = 10}); }, "min_lr");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = 0, .warmup = 11, .total = 10}); }, "warmup");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = 0, .warmup = -1, .total = 10}); }, "warmup");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = 0, .warmup = 0, .total = 0}); }, "total");
  expect_error_naming([] { LrSchedule({.max_lr = 1, .min_lr = 0, .warmup = 0, .total = 10}).at(-1); }, "step");
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

TEST(GradClip, NormAndClippingAreBitwiseEqualOnOneAndTwoThreads) {
  // Sizes that are not multiples of any chunk, summing to ~1M elements: many chunks per thread.
  const std::vector<int64_t> sizes = {700001, 1, 123457, 250000};
  auto run = [&](int threads, std::vector<std::vector<float>>& g) {
    ThreadCount tc(threads);
    g.clear();
    std::vector<std::span<float>> spans;
    for (size_t k = 0; k < sizes.size(); ++k) g.push_back(random_vector(sizes[k], 7 + k));
    for (auto& v : g) spans.emplace_back(v);
    const double before = grad_norm(std::span<const std::span<float>>(spans));
    const double returned = clip_grad_norm(spans, 1.0);
    EXPECT_EQ(before, returned);
    return before;
  };
  std::vector<std::vector<float>> g1, g2;
  const double n1 = run(1, g1), n2 = run(2, g2);
  EXPECT_EQ(std::memcmp(&n1, &n2, sizeof(double)), 0) << n1 << " vs " << n2;
  for (size_t k = 0; k < sizes.size(); ++k)
    EXPECT_EQ(std::memcmp(g1[k].data(), g2[k].data(), g1[k].size() * sizeof(float)), 0) << "array " << k;
  EXPECT_GT(n1, 100.0);  // ~sqrt(1M): the clipping above did scale
}

TEST(GradClip, ScalesOnlyAboveMaxNormAsTorch) {
  std::vector<float> a = {3, 0}, b = {0, 4};  // norm 5
  std::vector<std::span<float>> grads = {a, b};
  EXPECT_EQ(grad_norm(std::span<const std::span<float>>(grads)), 5.0);
  EXPECT_EQ(clip_grad_norm(grads, 10.0), 5.0);  // below: untouched
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_EQ(b[1], 4.0f);
  EXPECT_EQ(clip_grad_norm(grads, 1.0), 5.0);  // above: scaled by 1 / (5 + 1e-6)
  EXPECT_FLOAT_EQ(a[0], float(3.0 / (5.0 + 1e-6)));
  EXPECT_FLOAT_EQ(b[1], float(4.0 / (5.0 + 1e-6)));
  EXPECT_NEAR(grad_norm(std::span<const std::span<float>>(grads)), 1.0, 1e-6);

  // Non-finite: reported, gradients left for the caller to skip the step.
  std::vector<float> c = {INFINITY, 1};
  std::vector<std::span<float>> bad = {c};
  EXPECT_TRUE(std::isinf(clip_grad_norm(bad, 1.0)));
  EXPECT_EQ(c[1], 1.0f);
  expect_error_naming([&] { clip_grad_norm(grads, 0.0); }, "max_norm");
}

}  // namespace
}  // namespace moge::train
