#include "moge/moe/layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moge/core/buffer.h"
#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/moe/balance.h"

namespace moge::moe {

using kernels::MatRef;

MoeWeights MoeWeights::zeros(const MoeConfig& c) {
  const int64_t n = c.router.num_experts, d = c.d_model, f = c.expert_ff, s = c.shared_ff;
  MoeWeights w;
  w.gate = Tensor({n, d});
  w.router_scale = Tensor({1, n});
  w.router_scale.fill(1.0f);
  w.experts_gate = Tensor({n, f, d});
  w.experts_up = Tensor({n, f, d});
  w.experts_down = Tensor({n, d, f});
  if (s > 0) {
    w.shared_gate = Tensor({s, d});
    w.shared_up = Tensor({s, d});
    w.shared_down = Tensor({d, s});
  }
  return w;
}

std::vector<std::pair<const char*, Tensor*>> MoeWeights::named() {
  return {{"gate", &gate},
          {"router_scale", &router_scale},
          {"experts_gate", &experts_gate},
          {"experts_up", &experts_up},
          {"experts_down", &experts_down},
          {"shared_gate", &shared_gate},
          {"shared_up", &shared_up},
          {"shared_down", &shared_down}};
}

void MoeWeights::check(const MoeConfig& cfg) const {
  MoeWeights expected = zeros(cfg);
  auto mine = const_cast<MoeWeights*>(this)->named();
  auto want = expected.named();
  for (size_t i = 0; i < mine.size(); ++i) {
    const Tensor& t = *mine[i].second;
    const Tensor& e = *want[i].second;
    moge::check(t.shape() == e.shape(), std::string("MoE weight '") + mine[i].first + "' has shape " +
                                            shape_str(t.shape()) + ", expected " + shape_str(e.shape()));
    moge::check(t.empty() || t.dtype() == DType::f32,
                std::string("MoE weight '") + mine[i].first + "' must be f32 (master weights)");
  }
}

MoeLayer::MoeLayer(const MoeConfig& cfg, MoeWeights weights) : cfg_(cfg), w_(std::move(weights)) {
  cfg_.validate();
  w_.check(cfg_);
  bind_master_weights();
}

namespace {
void check_tensor(const Tensor& t, const Shape& shape, const std::string& name) {
  moge::check(t.shape() == shape, "MoE weight '" + name + "' has shape " + shape_str(t.shape()) + ", expected " +
                                      shape_str(shape));
  moge::check(t.dtype() == DType::f32, "MoE weight '" + name + "' must be f32");
}

const kernels::WeightRef& checked(const kernels::Weight& w, int64_t out, int64_t in, const std::string& name) {
  moge::check(w.out() == out && w.in() == in, "MoE weight '" + name + "' is [" + std::to_string(w.out()) + ", " +
                                                  std::to_string(w.in()) + "], expected [" + std::to_string(out) +
                                                  ", " + std::to_string(in) + "]");
  return w.ref();
}
}  // namespace

MoeLayer MoeLayer::for_inference(const MoeConfig& cfg, MoeInferenceWeights w) {
  cfg.validate();
  const int64_t n = cfg.router.num_experts, d = cfg.d_model, f = cfg.expert_ff, s = cfg.shared_ff;
  check_tensor(w.gate, {n, d}, "gate");
  check_tensor(w.router_scale, {1, n}, "router_scale");
  check(int64_t(w.experts_gate.size()) == n && int64_t(w.experts_up.size()) == n && int64_t(w.experts_down.size()) == n,
        "MoE inference weights need " + std::to_string(n) + " experts");
  MoeLayer layer;
  layer.cfg_ = cfg;
  layer.has_masters_ = false;
  for (int64_t e = 0; e < n; ++e) {
    const std::string j = "experts." + std::to_string(e) + ".";
    if (w.experts_gate[e].empty() && w.experts_up[e].empty() && w.experts_down[e].empty()) {
      layer.experts_.push_back({});  // held by another device (expert parallelism)
      continue;
    }
    layer.experts_.push_back({checked(w.experts_gate[e], f, d, j + "gate_proj"),
                              checked(w.experts_up[e], f, d, j + "up_proj"),
                              checked(w.experts_down[e], d, f, j + "down_proj")});
  }
  if (s > 0) {
    layer.shared_ = {checked(w.shared_gate, s, d, "shared_expert.gate_proj"),
                     checked(w.shared_up, s, d, "shared_expert.up_proj"),
                     checked(w.shared_down, d, s, "shared_expert.down_proj")};
  }
  layer.inference_ = std::move(w);  // moves keep the data pointers: the refs stay valid
  layer.gate_ = layer.inference_.gate.f32();
  layer.router_scale_ = layer.inference_.router_scale.f32();
  layer.compute_dtype_ = DType::f32;  // not meaningful without master weights
  return layer;
}

void MoeLayer::init_random(uint64_t seed) {
  Rng rng(seed);
  auto fill = [&](Tensor& t, double fan_in) {
    float sd = float(1.0 / std::sqrt(fan_in));
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.normal() * sd;
  };
  fill(w_.gate, cfg_.d_model);
  w_.router_scale.fill(1.0f);
  fill(w_.experts_gate, cfg_.d_model);
  fill(w_.experts_up, cfg_.d_model);
  fill(w_.experts_down, cfg_.expert_ff);
  if (cfg_.shared_ff > 0) {
    fill(w_.shared_gate, cfg_.d_model);
    fill(w_.shared_up, cfg_.d_model);
    fill(w_.shared_down, cfg_.shared_ff);
  }
  set_compute_dtype(compute_dtype_);
}

void MoeLayer::set_compute_dtype(DType dtype) {
  moge::check(has_masters_, "set_compute_dtype needs master weights (this layer was built for inference)");
  compute_dtype_ = dtype;
  std::pair<Tensor*, const Tensor*> copies[] = {
      {&c_experts_gate_, &w_.experts_gate}, {&c_experts_up_, &w_.experts_up}, {&c_experts_down_, &w_.experts_down},
      {&c_shared_gate_, &w_.shared_gate},   {&c_shared_up_, &w_.shared_up},   {&c_shared_down_, &w_.shared_down}};
  for (auto [copy, master] : copies) *copy = dtype == DType::f32 ? Tensor() : master->to(dtype);
  bind_master_weights();
}

namespace {
// A [rows, cols] matrix starting `offset` elements into t, in t's compute copy when there is one.
kernels::WeightRef matrix(const Tensor& master, const Tensor& copy, int64_t offset, int64_t rows, int64_t cols) {
  kernels::WeightRef w;
  w.out = rows;
  w.in = cols;
  w.format = copy.empty() ? kernels::WeightFormat::f32 : kernels::WeightFormat::bf16;
  w.dense = copy.empty() ? MatRef::f32(master.f32() + offset, cols) : MatRef::bf16(copy.bf16_data() + offset, cols);
  return w;
}

}  // namespace

void MoeLayer::bind_master_weights() {
  const int64_t d = cfg_.d_model, f = cfg_.expert_ff;
  gate_ = w_.gate.f32();
  router_scale_ = w_.router_scale.f32();
  experts_.clear();
  for (int64_t e = 0; e < cfg_.router.num_experts; ++e)
    experts_.push_back({matrix(w_.experts_gate, c_experts_gate_, e * f * d, f, d),
                        matrix(w_.experts_up, c_experts_up_, e * f * d, f, d),
                        matrix(w_.experts_down, c_experts_down_, e * d * f, d, f)});
  const int64_t s = cfg_.shared_ff;
  if (s > 0)
    shared_ = {matrix(w_.shared_gate, c_shared_gate_, 0, s, d), matrix(w_.shared_up, c_shared_up_, 0, s, d),
               matrix(w_.shared_down, c_shared_down_, 0, d, s)};
}

bool MoeLayer::has_expert(int e) const { return experts_[size_t(e)].gate.out > 0; }

void MoeLayer::require_expert(int e) const {
  // The message is built only on failure: this runs for every expert of every call.
  if (!has_expert(e)) throw Error("MoE: expert " + std::to_string(e) + " got tokens but is not held here");
}

void MoeLayer::route(const float* x, int64_t tokens, Routing& routing) const {
  router_forward(cfg_.router, x, tokens, cfg_.d_model, gate_, router_scale_, routing);
}

void MoeLayer::expert_jobs(const float* xs, float* ye, MoeCache& c, int e_begin, int e_end,
                           std::vector<MlpJob>& jobs) const {
  const int d = cfg_.d_model, f = cfg_.expert_ff;
  const int64_t base = c.dispatch.offsets[e_begin], rows = c.dispatch.offsets[e_end] - base;
  float *g = sized(c.g, rows * f), *u = sized(c.u, rows * f), *h = sized(c.h, rows * f);
  for (int e = e_begin; e < e_end; ++e) {
    const int64_t r0 = c.dispatch.offsets[e] - base, count = c.dispatch.expert_rows(e);
    if (count == 0) continue;
    require_expert(e);
    jobs.push_back({&experts_[e], count, f, xs + r0 * d, {g + r0 * f, u + r0 * f, h + r0 * f}, ye + r0 * d});
  }
}

// An expert packed into AMX tiles runs its rows in pieces of at most kAmxPieceRows (layer.h),
// each piece its whole MLP: past ~700 rows its activations
// (g, u, h, y: 10 KB a row at d 1024, f 512) no longer stay in the L2 between the products, and
// its time a row rose with its rows (7.0-7.6 µs at 1000-1400 rows against 6.1-6.5 at 400-800,
// sim-mid p 2048, D 8); in pieces it stays at 6.3-6.6. The kernel's rows are independent, so the
// pieces give the same bits.
void MoeLayer::run_experts(const float* xs, float* ye, MoeCache& c, int e_begin, int e_end) const {
  thread_local std::vector<MlpJob> jobs;
  jobs.clear();
  expert_jobs(xs, ye, c, e_begin, e_end, jobs);
  if (std::none_of(jobs.begin(), jobs.end(), [](const MlpJob& j) { return j.w->gate.amx_tiles; }))
    return mlp_forward_group(jobs.data(), jobs.size());
  const int d = cfg_.d_model;
  for (const MlpJob& j : jobs) {
    const int64_t step = j.w->gate.amx_tiles ? kAmxPieceRows : j.rows;
    for (int64_t r = 0; r < j.rows; r += step) {
      MlpJob piece = j;
      piece.rows = std::min(step, j.rows - r);
      piece.x = j.x + r * d;
      piece.y = j.y + r * d;
      piece.act = {j.act.g + r * j.ff, j.act.u + r * j.ff, j.act.h + r * j.ff};
      mlp_forward_group(&piece, 1);
    }
  }
}

void MoeLayer::shared_job(const float* x, int64_t tokens, float* y, MoeCache& c, std::vector<MlpJob>& jobs) const {
  const int s = cfg_.shared_ff;
  if (s == 0) {
    std::fill(y, y + tokens * cfg_.d_model, 0.0f);
    return;
  }
  jobs.push_back({&shared_, tokens, s, x, {sized(c.sg, tokens * s), sized(c.su, tokens * s), sized(c.sh, tokens * s)}, y});
}

void MoeLayer::run_shared(const float* x, int64_t tokens, float* y, MoeCache& c) const {
  thread_local std::vector<MlpJob> jobs;
  jobs.clear();
  shared_job(x, tokens, y, c, jobs);
  mlp_forward_group(jobs.data(), jobs.size());
}

namespace {

// Rows an expert's block is padded to a multiple of (training), and the rows of one unit of the
// shared expert's forward.
constexpr int kExpertRowAlign = 32;
constexpr int64_t kSharedRowBlock = 128;

// One unit of the padded forward or backward: an expert (rows of the padded dispatch) or a block
// of the shared expert's rows. Largest first, for the dynamic schedule's balance.
struct Unit {
  int expert;  // -1: shared expert
  int64_t r0, rows;
};

// Every expert of the padded dispatch p that got rows, one unit each.
void add_expert_units(const Dispatch& p, std::vector<Unit>& units) {
  for (int e = 0; e + 1 < int(p.offsets.size()); ++e)
    if (p.expert_rows(e) > 0) units.push_back({e, p.offsets[e], p.expert_rows(e)});
}

void sort_units(std::vector<Unit>& units) {
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) { return a.rows > b.rows; });
}

}  // namespace

void MoeLayer::forward_padded(const float* x, int64_t tokens, float* y, MoeCache& c) const {
  const int d = cfg_.d_model, f = cfg_.expert_ff, s = cfg_.shared_ff;
  c.padded = pad_dispatch(c.dispatch, kExpertRowAlign);
  c.padded_layout = true;
  const Dispatch& p = c.padded;
  const int64_t rows = p.rows();
  float* xs = sized(c.xs, rows * d);
  float* ye = sized(c.ye, rows * d);
  float *g = sized(c.g, rows * f), *u = sized(c.u, rows * f), *h = sized(c.h, rows * f);
  float *sg = nullptr, *su = nullptr, *sh = nullptr;
  if (s > 0) sg = sized(c.sg, tokens * s), su = sized(c.su, tokens * s), sh = sized(c.sh, tokens * s);
  else std::fill(y, y + tokens * d, 0.0f);

  thread_local std::vector<Unit> units;
  units.clear();
  add_expert_units(p, units);
  for (const Unit& un : units) require_expert(un.expert);
  if (s > 0)
    for (int64_t r0 = 0; r0 < tokens; r0 += kSharedRowBlock) units.push_back({-1, r0, std::min(kSharedRowBlock, tokens - r0)});
  sort_units(units);
  const Unit* list = units.data();  // thread_local: the team reads the master's through this
  const int64_t count = int64_t(units.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    const Unit un = list[i];
    if (un.expert >= 0) {
      // The expert's rows gathered here, not for all experts before: its GEMMs then read them
      // from cache (all experts' rows are twice the L2).
      gather_rows(p, x, d, xs + un.r0 * d, {un.r0, un.r0 + un.rows});
      mlp_forward(un.rows, d, f, xs + un.r0 * d, experts_[un.expert],
                  {g + un.r0 * f, u + un.r0 * f, h + un.r0 * f}, ye + un.r0 * d);
    } else
      mlp_forward(un.rows, d, s, x + un.r0 * d, shared_, {sg + un.r0 * s, su + un.r0 * s, sh + un.r0 * s},
                  y + un.r0 * d);
  }
  combine_rows(p, ye, c.routing.weight.data(), d, y);
}

float MoeLayer::forward(const float* x, int64_t tokens, float* y, MoeCache& c) const {
  const int d = cfg_.d_model, n = cfg_.router.num_experts;
  route(x, tokens, c.routing);
  c.aux_loss = cfg_.aux_alpha > 0 ? aux_loss(c.routing, n, cfg_.aux_alpha) : 0.0f;
  c.dispatch = make_dispatch(c.routing, n);
  if (has_masters_) {
    forward_padded(x, tokens, y, c);
    return c.aux_loss;
  }
  c.padded_layout = false;

  const int64_t rows = c.dispatch.rows();
  float* xs = sized(c.xs, rows * d);
  float* ye = sized(c.ye, rows * d);
  gather_rows(c.dispatch, x, d, xs);
  // The routed experts and the shared expert (which writes y; the routed experts add to it) as
  // one group: run_experts + run_shared, with 2 fork/joins instead of 4.
  thread_local std::vector<MlpJob> jobs;
  jobs.clear();
  expert_jobs(xs, ye, c, 0, n, jobs);
  shared_job(x, tokens, y, c, jobs);
  mlp_forward_group(jobs.data(), jobs.size());
  combine_rows(c.dispatch, ye, c.routing.weight.data(), d, y);
  return c.aux_loss;
}

void MoeLayer::backward_shared(const float* x, int64_t tokens, MoeCache& c, const float* dy, float* dx,
                               MoeWeights& grads) const {
  moge::check(has_masters_, "backward needs master weights (this layer was built for inference)");
  const int d = cfg_.d_model, s = cfg_.shared_ff;
  if (s == 0) {
    std::fill(dx, dx + tokens * d, 0.0f);
    return;
  }
  mlp_backward(tokens, d, s, x, shared_, {c.sg.data(), c.su.data(), c.sh.data()}, dy, dx, grads.shared_gate.f32(),
               grads.shared_up.f32(), grads.shared_down.f32());
}

void MoeLayer::backward_experts(const float* xs, const float* d_ye, float* d_xs, MoeCache& c, int e_begin, int e_end,
                                MoeWeights& grads) const {
  moge::check(has_masters_, "backward needs master weights (this layer was built for inference)");
  const int d = cfg_.d_model, f = cfg_.expert_ff;
  const int64_t base = c.dispatch.offsets[e_begin];
  for (int e = e_begin; e < e_end; ++e) {
    const int64_t r0 = c.dispatch.offsets[e] - base, count = c.dispatch.expert_rows(e);
    if (count == 0) continue;
    mlp_backward(count, d, f, xs + r0 * d, experts_[e], {c.g.data() + r0 * f, c.u.data() + r0 * f, c.h.data() + r0 * f},
                 d_ye + r0 * d, d_xs + r0 * d, grads.experts_gate.f32() + e * f * d,
                 grads.experts_up.f32() + e * f * d, grads.experts_down.f32() + e * d * f);
  }
}

void MoeLayer::backward_router(const float* x, const Routing& routing, const float* d_weight, float aux_grad,
                               float* dx, MoeWeights& grads, MoeCache& c) const {
  // weights -> p (plus the aux loss) -> logits -> gate and x.
  const int n = cfg_.router.num_experts;
  float* d_probs = sized(c.d_probs, routing.tokens * n);
  std::fill(d_probs, d_probs + routing.tokens * n, 0.0f);
  router_weights_backward(cfg_.router, routing, router_scale_, d_weight, d_probs, grads.router_scale.f32());
  if (cfg_.aux_alpha > 0) aux_loss_backward(routing, n, cfg_.aux_alpha, aux_grad, d_probs);
  router_logits_backward(cfg_.router, routing, x, cfg_.d_model, gate_, d_probs, grads.gate.f32(), dx);
}

void MoeLayer::backward_padded(const float* x, MoeCache& c, const float* dy, float aux_grad, float* dx,
                               MoeWeights& grads) const {
  const int d = cfg_.d_model, f = cfg_.expert_ff;
  const Dispatch& p = c.padded;
  const int64_t tokens = c.routing.tokens, rows = p.rows();
  backward_shared(x, tokens, c, dy, dx, grads);
  float* d_ye = sized(c.d_ye, rows * d);
  float* d_xs = sized(c.d_xs, rows * d);
  float* d_weight = sized(c.d_weight, tokens * c.routing.top_k);
  const std::vector<int32_t> entries = row_entries(p);

  thread_local std::vector<Unit> units;
  units.clear();
  add_expert_units(p, units);
  sort_units(units);
  const Unit* list = units.data();  // thread_local: the team reads the master's through this
  const int64_t count = int64_t(units.size());
  float *dg = grads.experts_gate.f32(), *du = grads.experts_up.f32(), *dd = grads.experts_down.f32();
  const float *ye = c.ye.data(), *weight = c.routing.weight.data();
  const int32_t* entry = entries.data();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    const Unit un = list[i];
    const int e = un.expert;
    // The expert's output gradients (and its entries' weight gradients) here, just before its
    // GEMMs read them. Every entry is served by one real row: all of d_weight is written.
    // Padding rows: xs, g, u, h are 0 there and d_ye must be too (combine_rows_backward_part
    // writes only real rows), so they add exact zeros to the weight gradients.
    const int64_t real = c.dispatch.expert_rows(e);
    combine_rows_backward_part(p, entry, ye, weight, dy, d, d_ye, d_weight, {un.r0, un.r0 + real});
    std::fill(d_ye + (un.r0 + real) * d, d_ye + (un.r0 + un.rows) * d, 0.0f);
    mlp_backward(un.rows, d, f, c.xs.data() + un.r0 * d, experts_[e],
                 {c.g.data() + un.r0 * f, c.u.data() + un.r0 * f, c.h.data() + un.r0 * f}, d_ye + un.r0 * d,
                 d_xs + un.r0 * d, dg + e * f * d, du + e * f * d, dd + e * d * f);
  }
  scatter_add_rows(p, d_xs, d, dx);
  backward_router(x, c.routing, d_weight, aux_grad, dx, grads, c);
}

void MoeLayer::backward(const float* x, MoeCache& c, const float* dy, float aux_grad, float* dx,
                        MoeWeights& grads) const {
  if (c.padded_layout) {
    moge::check(has_masters_, "backward needs master weights (this layer was built for inference)");
    return backward_padded(x, c, dy, aux_grad, dx, grads);
  }
  const int d = cfg_.d_model;
  const int64_t tokens = c.routing.tokens, rows = c.dispatch.rows();
  backward_shared(x, tokens, c, dy, dx, grads);
  // Through the weighted sum: d expert outputs and d routing weights.
  float* d_ye = sized(c.d_ye, rows * d);
  float* d_xs = sized(c.d_xs, rows * d);
  float* d_weight = sized(c.d_weight, tokens * c.routing.top_k);
  combine_rows_backward(c.dispatch, c.ye.data(), c.routing.weight.data(), dy, d, d_ye, d_weight);
  backward_experts(c.xs.data(), d_ye, d_xs, c, 0, cfg_.router.num_experts, grads);
  scatter_add_rows(c.dispatch, d_xs, d, dx);
  backward_router(x, c.routing, d_weight, aux_grad, dx, grads, c);
}

}  // namespace moge::moe
