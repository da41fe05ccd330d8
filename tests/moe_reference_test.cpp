// The MoE layer against tests/reference/moe_layer.py, an independent PyTorch implementation
// (float64 autograd). Every case: outputs, routing, aux loss and every gradient.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "moge/core/npy.h"
#include "moge/moe/layer.h"
#include "test_util.h"

namespace moge::moe {
namespace {

namespace fs = std::filesystem;

// Generated once per process, into a directory of its own: ctest runs test processes in parallel.
struct ReferenceDir {
  std::string path = test::binary_path("reference/moe_layer." + std::to_string(getpid()));
  ~ReferenceDir() { fs::remove_all(path); }
};

const std::string& reference_dir() {
  static const ReferenceDir holder;
  static const std::string dir = [] {
    const std::string& out = holder.path;
    std::string cmd = "/usr/bin/python3 " + test::source_path("tests/reference/moe_layer.py") + " --out " + out +
                      " > " + out + ".log 2>&1";
    fs::create_directories(out);
    int rc = std::system(cmd.c_str());
    if (rc != 0) throw std::runtime_error("reference script failed: " + cmd);
    return out;
  }();
  return dir;
}

std::vector<std::string> case_names() {
  std::ifstream in(reference_dir() + "/cases.txt");
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) names.push_back(line);
  return names;
}

struct Case {
  MoeConfig cfg;
  int64_t tokens;
  float aux_grad;
  std::string dir;
  Tensor load(const std::string& name) const { return read_npy_f32(dir + "/" + name + ".npy"); }
};

Case load_case(const std::string& name) {
  Case c;
  c.dir = reference_dir() + "/" + name;
  std::ifstream in(c.dir + "/config.json");
  auto j = nlohmann::json::parse(in);
  c.tokens = j["tokens"];
  c.aux_grad = j["aux_grad"];
  c.cfg.d_model = j["d_model"];
  c.cfg.expert_ff = j["expert_ff"];
  c.cfg.shared_ff = j["shared_ff"];
  c.cfg.aux_alpha = j["aux_alpha"];
  c.cfg.router.num_experts = j["num_experts"];
  c.cfg.router.num_groups = j["num_groups"];
  c.cfg.router.top_k = j["top_k"];
  c.cfg.router.mode = parse_routing_mode(j["mode"]);
  c.cfg.router.renormalize = j["renormalize"];
  c.cfg.router.topk_group = j["topk_group"];
  return c;
}

MoeWeights load_weights(const Case& c) {
  MoeWeights w;
  w.gate = c.load("gate");
  w.router_scale = c.load("router_scale");
  w.experts_gate = c.load("experts_gate");
  w.experts_up = c.load("experts_up");
  w.experts_down = c.load("experts_down");
  if (c.cfg.shared_ff > 0) {
    w.shared_gate = c.load("shared_gate");
    w.shared_up = c.load("shared_up");
    w.shared_down = c.load("shared_down");
  }
  return w;
}

struct Tolerance {
  double forward, grad;
};

void check_case(const std::string& name, DType dtype, Tolerance tol) {
  SCOPED_TRACE(name + " " + dtype_name(dtype));
  Case c = load_case(name);
  MoeLayer layer(c.cfg, load_weights(c));
  layer.set_compute_dtype(dtype);
  Tensor x = c.load("x"), dy = c.load("dy");
  const int64_t t = c.tokens, d = c.cfg.d_model, k = c.cfg.router.top_k;

  Tensor y({t, d});
  MoeCache cache;
  float aux = layer.forward(x.f32(), t, y.f32(), cache);

  // Routing is exact: the gate is f32 in both modes and the reference guarantees margins.
  NpyArray idx = read_npy(c.dir + "/topk_idx.npy");
  ASSERT_EQ(int64_t(idx.i32.size()), t * k);
  for (int64_t i = 0; i < t * k; ++i) ASSERT_EQ(cache.routing.expert[i], idx.i32[i]) << "entry " << i;
  EXPECT_LT(test::rel_error(cache.routing.weight.data(), c.load("topk_weight").f32(), t * k), 1e-5);
  EXPECT_LT(test::rel_error(cache.routing.probs.data(), c.load("probs").f32(), t * c.cfg.router.num_experts), 1e-5);
  EXPECT_LT(test::rel_error(&aux, c.load("aux_loss").f32(), 1), 1e-5);
  EXPECT_LT(test::rel_error(y, c.load("y")), tol.forward) << "y";

  Tensor dx({t, d});
  MoeWeights grads = MoeWeights::zeros(c.cfg);
  grads.router_scale.fill(0.0f);
  layer.backward(x.f32(), cache, dy.f32(), c.aux_grad, dx.f32(), grads);
  EXPECT_LT(test::rel_error(dx, c.load("dx")), tol.grad) << "dx";
  for (auto [grad_name, grad] : grads.named()) {
    if (grad->empty()) continue;
    EXPECT_LT(test::rel_error(*grad, c.load(std::string("d_") + grad_name)), tol.grad) << "d_" << grad_name;
  }
}

TEST(MoeReference, AllCasesMatchInF32) {
  auto names = case_names();
  ASSERT_GE(names.size(), 10u);
  for (const auto& name : names) check_case(name, DType::f32, {1e-5, 1e-5});
}

// bf16 expert and shared-expert weights and activations (f32 accumulation, f32 gate): stated
// tolerances of 1.5e-2 (forward) and 3e-2 (gradients), relative to each tensor's largest entry.
TEST(MoeReference, AllCasesMatchInBf16) {
  for (const auto& name : case_names()) check_case(name, DType::bf16, {1.5e-2, 3e-2});
}

}  // namespace
}  // namespace moge::moe
