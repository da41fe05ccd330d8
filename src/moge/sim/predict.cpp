#include "moge/sim/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "moge/core/error.h"
#include "moge/kernels/rmsnorm.h"
#include "moge/kernels/softmax.h"
#include "moge/kernels/swiglu.h"
#include "moge/model/linear.h"
#include "moge/moe/layer.h"

namespace moge::sim {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// What one device holds of one layer, from the model and the plan.
struct Shard {
  int64_t d, head_dim, heads, kv_heads, vocab, experts, expert_ff, shared_ff;
  int top_k;

  Shard(const model::ModelConfig& c, const ParallelPlan& p)
      : d(c.hidden_size),
        head_dim(c.head_dim),
        heads(c.num_attention_heads / p.attn_tp),
        // KV heads split when tp divides them; else each device keeps one (replicated).
        kv_heads(c.num_key_value_heads % p.attn_tp == 0 ? c.num_key_value_heads / p.attn_tp : 1),
        vocab(ceil_div(c.vocab_size, p.attn_tp)),
        experts(c.num_experts / p.expert_ep),
        expert_ff(c.moe_intermediate_size / p.expert_tp),
        shared_ff(c.shared_expert_intermediate_size / p.shared_tp),
        top_k(c.num_experts_per_tok) {}

  int64_t qkv_out() const { return (heads + 2 * kv_heads) * head_dim; }
};

// The tokens of one step as each part of the plan sees them.
struct StepShape {
  int64_t sequences;    // on the unit
  int64_t q_len;        // tokens a sequence this step (L in prefill, 1 in decode)
  int64_t attn_seqs;    // sequences on the busiest attention DP group
  int64_t attn_tokens;  // their tokens
  int64_t tokens;       // routed by the MoE layers (all of the unit's)
  int64_t padded;       // attn_tokens · attn_dp: what the all-gather moves
  int64_t shared_tokens;
};

StepShape step_shape(int64_t sequences, int64_t q_len, const ParallelPlan& p) {
  StepShape s;
  s.sequences = sequences;
  s.q_len = q_len;
  s.attn_seqs = ceil_div(sequences, p.attn_dp);
  s.attn_tokens = s.attn_seqs * q_len;
  s.tokens = sequences * q_len;
  s.padded = s.attn_tokens * p.attn_dp;
  s.shared_tokens = ceil_div(s.tokens, p.shared_dp);
  return s;
}

// The attention core (softmax(QKᵀ)V, flash style: scores never reach memory) for one step.
OpCost attention_core(const HardwareProfile& hw, const Shard& sh, const StepShape& s, double context, int kv_bytes,
                      bool prefill) {
  const double ab = hw.activation_bytes;
  const double qo = double(s.attn_tokens) * 2 * sh.heads * sh.head_dim * ab;  // read Q, write O
  const double kv_elems = 2.0 * sh.kv_heads * sh.head_dim;                    // K and V, one token
  if (prefill) {
    const double L = double(s.q_len);
    const double flops = 4.0 * s.attn_seqs * sh.heads * sh.head_dim * L * (L + 1) / 2;  // causal
    const double bytes = qo + double(s.attn_tokens) * kv_elems * (ab + kv_bytes);     // read K, V; write cache
    return roofline(hw, KernelClass::attention, ComputeType::bf16, s.q_len, flops, bytes);
  }
  const double flops = 4.0 * s.attn_seqs * sh.heads * sh.head_dim * context;
  // K and V read once per KV head, the new token's written.
  const double bytes = qo + double(s.attn_seqs) * context * kv_elems * kv_bytes + double(s.attn_seqs) * kv_elems * ab;
  // moge's CPU kernel (kernels/attention.cpp, attend_row) walks the cached rows once per QUERY
  // head, a thread a head: the arithmetic (dot, softmax, axpy per position) at the rate measured
  // with the cache hot, plus the cache's first read, cold (the rest of the step evicted it), not
  // overlapped with it: serial_cost. Calibrate measures the two terms apart (the same call on one
  // cache and on a ring of copies) and counts them so. A fused kernel streams each KV head once,
  // its arithmetic hidden under the read: the roofline.
  // Each query head's positions also cost per_position_s beyond their FLOPs (the dot product's
  // horizontal sum, the softmax's exp), which calibrate measures apart (two head widths).
  if (hw.per_call) {
    OpCost c = serial_cost(hw, KernelClass::attention, ComputeType::bf16, 1, flops, bytes);
    c.seconds += hw.efficiency(KernelClass::attention, ComputeType::bf16, 1).per_position_s * double(s.attn_seqs) *
                 double(sh.heads) * context;
    return c;
  }
  return roofline(hw, KernelClass::attention, ComputeType::bf16, 1, flops, bytes);
}

// A memory-bound element-wise kernel moving `bytes` (read and written), at the default memory
// efficiency, plus a fixed cost when it `forks` a thread team (kernel_overhead_s: the team's
// fork/join, which calibrate measures as an empty OpenMP parallel region). On a device that
// launches every kernel (the fused-kernel profiles), every kernel pays it, as its launch.
double elementwise_seconds(const HardwareProfile& hw, double bytes, bool forks = true) {
  return bytes / (hw.memory_bandwidth_bytes_s * hw.default_efficiency.memory) + (forks ? hw.kernel_overhead_s : 0);
}

// The sizes above which moge's element-wise kernels run a thread team (their OpenMP `if`
// clauses, the engine's own constants); at or below them the calling thread runs the loop alone,
// and no fork/join is paid. A decode step of a small model is mostly below them.
constexpr double kRmsnormTeam = double(kernels::kRmsnormTeamAbove);
constexpr double kSwigluTeam = double(kernels::kSwigluTeamAbove);
constexpr double kSoftmaxTeam = double(kernels::kSoftmaxTeamAbove);
constexpr double kBiasTeam = double(model::kBiasTeamAbove);
using moe::kAmxPieceRows;  // an expert in AMX tiles runs its rows in pieces of this many

// The element-wise kernels of one layer on the busiest device (decoder order): RMSNorm, RoPE on
// Q and K, the residual add, RMSNorm again on the attention tokens; the router's softmax and
// top-k over all tokens; rows permuted to experts, SwiGLU over the expert and shared
// intermediates, rows combined back, the residual add. Bytes: what each reads and writes.
// `swiglu_teams`: moge only, the expected number of routed experts whose SwiGLU (rows · width
// elements) runs a thread team (moe_matmuls).
double elementwise_layer(const HardwareProfile& hw, const Shard& sh, const StepShape& s, double pairs,
                         int64_t num_experts, double swiglu_teams) {
  const double ab = hw.activation_bytes, ta = double(s.attn_tokens), t = double(s.tokens);
  const double ts = double(s.shared_tokens), q = double(sh.heads * sh.head_dim), kv = double(sh.kv_heads * sh.head_dim);
  if (!hw.per_call)
    return elementwise_seconds(hw, 2 * ta * sh.d * ab) +                                     // input RMSNorm
           elementwise_seconds(hw, 2 * ta * (sh.heads + sh.kv_heads) * sh.head_dim * ab) +  // RoPE
           elementwise_seconds(hw, 3 * ta * sh.d * ab) +                                     // h = x + attention
           elementwise_seconds(hw, 2 * ta * sh.d * ab) +                                     // post RMSNorm
           elementwise_seconds(hw, 2 * t * num_experts * ab) +                               // softmax, top-k
           elementwise_seconds(hw, 2 * pairs * sh.d * ab) +                                  // permute
           elementwise_seconds(hw, 3 * pairs * sh.expert_ff * ab) +                          // SwiGLU, experts
           (sh.shared_ff > 0 ? elementwise_seconds(hw, 3 * ts * sh.shared_ff * ab) : 0) +
           elementwise_seconds(hw, (pairs + t) * sh.d * ab) +                                // combine
           elementwise_seconds(hw, 3 * t * sh.d * ab);                                       // y = h + moe
  // moge's CPU engine (model/model.cpp Model::forward, moe/layer.cpp MoeLayer::forward), each
  // kernel with its own rule for running a thread team:
  const double d = double(sh.d), n = double(num_experts), k = double(sh.top_k);
  return 2 * elementwise_seconds(hw, 2 * ta * d * ab, ta * d > kRmsnormTeam) +  // input and post RMSNorm
         // the bias adds after q, k, v and o (Linear::forward)
         elementwise_seconds(hw, 2 * ta * q * ab, ta * q > kBiasTeam) +
         2 * elementwise_seconds(hw, 2 * ta * kv * ab, ta * kv > kBiasTeam) +
         elementwise_seconds(hw, 2 * ta * d * ab, ta * d > kBiasTeam) +
         // RoPE on Q and on K, two calls (kernels/rope.cpp: a team when tokens > 1)
         elementwise_seconds(hw, 2 * ta * q * ab, ta > 1) + elementwise_seconds(hw, 2 * ta * kv * ab, ta > 1) +
         // the two residual adds: plain loops on the calling thread (Model::forward)
         elementwise_seconds(hw, 3 * ta * d * ab, false) + elementwise_seconds(hw, 3 * t * d * ab, false) +
         // the router's softmax, then route_probs (top-k, weights: always a team, moe/router.cpp)
         elementwise_seconds(hw, 2 * t * n * ab, t * n > kSoftmaxTeam) +
         elementwise_seconds(hw, (t * n + 2 * t * k) * ab, true) +
         // gather_rows and combine_rows: always a team (moe/dispatch.cpp)
         elementwise_seconds(hw, 2 * pairs * d * ab, true) + elementwise_seconds(hw, (pairs + t) * d * ab, true) +
         // SwiGLU: the bytes of every routed expert's, a team for those past the threshold; the
         // shared expert's
         elementwise_seconds(hw, 3 * pairs * sh.expert_ff * ab, false) + swiglu_teams * hw.kernel_overhead_s +
         (sh.shared_ff > 0 ? elementwise_seconds(hw, 3 * ts * sh.shared_ff * ab, ts * sh.shared_ff > kSwigluTeam) : 0);
}

// The attention projections of `tokens` rows: fused QKV and O, or q, k, v and o as four calls
// (moge, hw.per_call).
double projections(const HardwareProfile& hw, WeightType w, const Shard& sh, int64_t tokens) {
  const int64_t q = sh.heads * sh.head_dim, kv = sh.kv_heads * sh.head_dim;
  const double o = matmul_cost(hw, w, tokens, q, sh.d).seconds;
  if (!hw.per_call) return matmul_cost(hw, w, tokens, sh.d, sh.qkv_out()).seconds + o;
  return matmul_cost(hw, w, tokens, sh.d, q).seconds + 2 * matmul_cost(hw, w, tokens, sh.d, kv).seconds + o;
}

// Seconds of an MoE layer's matmuls on the busiest device: its routed experts (l.max_pairs rows
// of `tokens` tokens over its experts) and its shard of the shared expert (shared_tokens rows).
struct MoeTime {
  double experts = 0, shared = 0;
  // moge: the expected number of the device's routed experts whose SwiGLU runs a thread team
  // (more than kSwigluTeam elements: rows · width).
  double swiglu_teams = 0;
};

// One expert's rows when `tokens` tokens each pick it with probability p (uniform routing):
// Binomial(tokens, p) as {rows, probability}, the rows where the probability is not negligible.
std::vector<std::pair<int64_t, double>> rows_distribution(int64_t tokens, double p) {
  if (p >= 1) return {{tokens, 1.0}};
  if (p <= 0) return {{0, 1.0}};
  const double n = double(tokens), mean = n * p, sd = std::sqrt(n * p * (1 - p));
  const int64_t lo = std::max<int64_t>(0, int64_t(mean - 12 * sd) - 1), hi = std::min(tokens, int64_t(mean + 12 * sd) + 1);
  std::vector<std::pair<int64_t, double>> out;
  for (int64_t r = lo; r <= hi; ++r) {
    const double log_pmf = std::lgamma(n + 1) - std::lgamma(double(r) + 1) - std::lgamma(n - double(r) + 1) +
                           double(r) * std::log(p) + (n - double(r)) * std::log1p(-p);
    out.push_back({r, std::exp(log_pmf)});
  }
  return out;
}

MoeTime moe_matmuls(const HardwareProfile& hw, WeightType w, const Shard& sh, const ExpertLoad& l, int64_t tokens,
                    double shared_tokens, bool one_device, bool amx_experts) {
  const double pairs = l.max_pairs, touched = l.experts_touched, T = sh.shared_ff > 0 ? shared_tokens : 0;
  const int64_t d = sh.d, f = sh.expert_ff, s = sh.shared_ff;
  MoeTime t;
  if (!hw.per_call) {  // a grouped matmul for the routed experts, fused gate|up
    t.experts = grouped_matmul_cost(hw, w, pairs, touched, d, 2 * f).seconds +
                grouped_matmul_cost(hw, w, pairs, touched, f, d).seconds;
    if (T > 0) t.shared = matmul_cost(hw, w, int64_t(T), d, 2 * s).seconds + matmul_cost(hw, w, int64_t(T), s, d).seconds;
    return t;
  }
  // moge (moe/mlp.cpp, mlp_forward_group): gate and up of every job (a routed expert's rows, the
  // shared expert's tokens) in one linear_group, then down in another; a job of at most
  // group_max_rows rows joins the group's one thread team, any other runs its own three calls.
  // Which experts group depends on each one's rows, not their mean: each of the device's experts
  // gets Binomial(tokens, p) rows, p set so that they add up to the busiest device's pairs, and
  // the cost is the expectation over that distribution.
  // An MLP of width ff over `rows` rows outside the group: gate, up and down as calls of their own.
  auto separate_mlp = [&](int64_t rows, int64_t ff) {
    return 2 * matmul_cost(hw, w, rows, d, ff).seconds + matmul_cost(hw, w, rows, ff, d).seconds;
  };
  // Routed experts packed into AMX tiles (amx_experts): gate, up and down each one amx_linear_bf16
  // call at any rows, never in linear_group (weight.cpp `grouped`: tiles weights are not), in
  // pieces of at most kAmxPieceRows rows, each its whole MLP (moe/layer.h: 384 rows, then the rest),
  // so each piece's SwiGLU decides on its own whether it runs a thread team.
  auto amx_mlp = [&](int64_t rows, int64_t ff, double& swiglu_teams) {
    double t = 0;
    for (int64_t r = 0; r < rows; r += kAmxPieceRows) {
      const int64_t piece = std::min(kAmxPieceRows, rows - r);
      t += 2 * amx_matmul_cost(hw, piece, d, ff).seconds + amx_matmul_cost(hw, piece, ff, d).seconds;
      if (double(piece) * double(ff) > kSwigluTeam) swiglu_teams += 1;
    }
    return t;
  };
  const int64_t group = hw.group_max_rows(compute_type_of(w));
  const double experts = double(sh.experts), p = tokens > 0 ? pairs / (experts * double(tokens)) : 0;
  double grouped_pairs = 0, grouped_experts = 0;
  for (const auto& [rows, prob] : rows_distribution(tokens, p)) {
    if (rows == 0) continue;
    if (amx_experts) {
      double teams = 0;
      t.experts += experts * prob * amx_mlp(rows, f, teams);
      t.swiglu_teams += experts * prob * teams;
      continue;
    }
    if (double(rows) * double(f) > kSwigluTeam) t.swiglu_teams += experts * prob;
    if (rows <= group) {
      grouped_pairs += experts * prob * double(rows), grouped_experts += experts * prob;
    } else {
      t.experts += experts * prob * separate_mlp(rows, f);
    }
  }
  const bool experts_grouped = grouped_experts > 0, shared_grouped = T > 0 && T <= double(group);
  auto group_call = [&](bool routed, bool shared) {
    std::vector<GroupPart> up, down;
    if (routed) up.push_back({grouped_pairs, grouped_experts, d, 2 * f}), down.push_back({grouped_pairs, grouped_experts, f, d});
    if (shared) up.push_back({T, 1, d, 2 * s}), down.push_back({T, 1, s, d});
    return up.empty() ? 0.0 : grouped_call_cost(hw, w, up).seconds + grouped_call_cost(hw, w, down).seconds;
  };
  // One device runs the routed and the shared experts as one group (MoeLayer::forward); the
  // expert-parallel runner as two (parallel/expert_parallel.cpp: run_experts, then run_shared).
  if (one_device && experts_grouped && shared_grouped) {
    // The team splits its work by weight bytes: so, here, the classes' shares of its time.
    const double both = group_call(true, true), e_rows = grouped_experts * f, s_rows = double(s);
    t.experts += both * e_rows / (e_rows + s_rows);
    t.shared += both * s_rows / (e_rows + s_rows);
  } else {
    t.experts += group_call(experts_grouped, false);
    t.shared += group_call(false, shared_grouped);
  }
  if (T > 0 && !shared_grouped)
    t.shared += separate_mlp(int64_t(T), s);
  return t;
}

// One step on the slowest device, every layer.
StepPrediction predict_step(const model::ModelConfig& c, const HardwareProfile& hw, const ParallelPlan& p,
                            const Workload& w, const LoadModel& load, const StepShape& s, double context,
                            bool prefill) {
  const Shard sh(c, p);
  const double ab = hw.activation_bytes;
  const int D = p.devices();
  StepPrediction out;
  out.sequences = s.sequences;
  out.tokens = s.tokens;
  out.context = context;

  const double attention = projections(hw, w.weights, sh, s.attn_tokens) +
                           attention_core(hw, sh, s, context, w.kv_bytes, prefill).seconds;
  const double attn_bytes = double(s.attn_tokens) * sh.d * ab, unit_bytes = double(s.padded) * sh.d * ab;
  const double comm = collective_seconds(hw, Collective::reduce_scatter, p.attn_tp, attn_bytes) +  // O partial sums
                      collective_seconds(hw, Collective::all_gather, D, unit_bytes) +            // all tokens to all
                      collective_seconds(hw, Collective::reduce_scatter, D, unit_bytes) +        // expert outputs back
                      collective_seconds(hw, Collective::all_gather, p.attn_tp, attn_bytes);     // attention input
  // moge keeps the router in f32 (MOGE.md §1); the fused-kernel profiles cost it as bf16.
  const double router =
      matmul_cost(hw, hw.per_call ? WeightType::f32 : WeightType::bf16, s.tokens, sh.d, c.num_experts).seconds;

  // moge packs the routed experts of an expert-parallel device (ExpertSlice::own_memory: `moge
  // bench/generate --devices D|mpi`) into AMX tiles when they are bf16 and the CPU has AMX-BF16;
  // a profile that measured that kernel (efficiency.amx_tiles) costs them with it. The engine
  // packs only where the sides are multiples of 32 (kernels::amx_bf16_fits).
  const bool amx_experts = hw.per_call && hw.has_amx_tiles() && p.expert_ep > 1 && w.weights == WeightType::bf16 &&
                           sh.d % 32 == 0 && sh.expert_ff % 32 == 0;
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    const ExpertLoad l = load.layer(layer, s.tokens);
    const MoeTime moe = moe_matmuls(hw, w.weights, sh, l, s.tokens, double(s.shared_tokens), D == 1, amx_experts);
    // The kernels a device runs per touched expert (kernels_per_expert), each paying the kernel
    // overhead; moge's one (SwiGLU) is in elementwise_layer, with the team only where it forks.
    const double per_expert = hw.per_call ? 0 : l.experts_touched * hw.kernels_per_expert * hw.kernel_overhead_s;
    const double experts = router + moe.experts + per_expert;
    const double shared = moe.shared;
    out.time.elementwise += elementwise_layer(hw, sh, s, l.max_pairs, c.num_experts, moe.swiglu_teams);
    out.time.attention += attention;
    out.time.experts += experts;
    out.time.shared += shared;
    out.time.comm += w.overlap_comm ? std::max(0.0, comm - experts - shared) : comm;
    out.max_expert_pairs += l.max_pairs / c.num_hidden_layers;
    out.mean_expert_pairs += l.mean_pairs / c.num_hidden_layers;
  }
  // Logits of each sequence's last position only.
  out.time.lm_head = matmul_cost(hw, w.lm_head, s.attn_seqs, sh.d, sh.vocab).seconds;
  out.seconds = out.time.total();
  out.tokens_per_s_per_device = double(s.tokens) / (out.seconds * D);
  return out;
}

double weight_bytes(const model::ModelConfig& c, const ParallelPlan& p, WeightType type, WeightType lm_head) {
  const Shard sh(c, p);
  const double wb = weight_bytes_per_element(type), bf = 2;
  const double attention = double(sh.d) * sh.qkv_out() * wb + double(sh.heads) * sh.head_dim * sh.d * wb +
                           double(sh.qkv_out() + sh.d) * bf;  // biases
  const double router = double(c.num_experts) * sh.d * bf + c.num_experts * 4.0;
  const double norms = 2.0 * sh.d * bf;
  const double experts = double(sh.experts) * 3 * sh.d * sh.expert_ff * wb;
  const double shared = 3.0 * sh.d * sh.shared_ff * wb;
  const double layer = attention + router + norms + experts + shared;
  // Embedding and lm_head split over the vocabulary like attention's TP; the final norm.
  return layer * c.num_hidden_layers + sh.vocab * sh.d * (bf + weight_bytes_per_element(lm_head)) + sh.d * bf;
}

double activation_bytes(const model::ModelConfig& c, const HardwareProfile& hw, const ParallelPlan& p,
                        const StepShape& s, double max_pairs) {
  const Shard sh(c, p);
  const double elems = 2.0 * s.padded * sh.d +                                          // gathered input, output
                       double(s.attn_tokens) * (sh.qkv_out() + sh.heads * sh.head_dim) +  // QKV, attention out
                       max_pairs * (sh.d + 2.0 * sh.expert_ff) +                         // permuted rows, gate|up
                       double(s.shared_tokens) * 2.0 * sh.shared_ff;
  return elems * hw.activation_bytes + double(s.attn_seqs) * sh.vocab * 4.0;  // f32 logits
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

Prediction predict(const model::ModelConfig& c, const HardwareProfile& hw, const ParallelPlan& p, const Workload& w,
                   const LoadModel& load) {
  p.validate(c, hw);
  check(w.batch >= 1, "batch must be at least 1 (got " + std::to_string(w.batch) + ")");
  check(w.prompt >= 1, "prompt length must be at least 1 (got " + std::to_string(w.prompt) + ")");
  check(w.gen >= 1, "generated length must be at least 1 (got " + std::to_string(w.gen) + ")");
  check(w.prefill_batch >= 0, "prefill batch must not be negative");
  check(w.kv_bytes == 1 || w.kv_bytes == 2 || w.kv_bytes == 4, "KV cache element must be 1, 2 or 4 bytes");

  Prediction out;
  out.profile = hw.name;
  out.plan = p.to_string();
  out.devices = p.devices();
  out.devices_per_card = hw.devices_per_card;

  const int64_t prefill_seqs = w.prefill_batch > 0 ? w.prefill_batch : p.attn_dp;
  const StepShape pre = step_shape(prefill_seqs, w.prompt, p), dec = step_shape(w.batch, 1, p);
  const Shard sh(c, p);
  out.memory.capacity = hw.memory_capacity_bytes;
  out.memory.reserved = hw.memory_reserved_bytes;
  out.memory.weights = weight_bytes(c, p, w.weights, w.lm_head);
  out.memory.kv_cache = double(dec.attn_seqs) * double(w.prompt + w.gen) * c.num_hidden_layers * 2.0 * sh.kv_heads *
                        sh.head_dim * w.kv_bytes;

  // A model whose weights and KV cache fit in the cache streams them from there, step after step.
  out.in_cache = out.memory.weights + out.memory.kv_cache <= hw.cache_bytes;
  HardwareProfile cached = hw;
  if (out.in_cache) cached.memory_bandwidth_bytes_s = hw.cache_bandwidth_bytes_s;
  out.prefill = predict_step(c, cached, p, w, load, pre, double(w.prompt), true);
  // Decode at the mean context over the generation: the cost is linear in the context, so this
  // step's time is the mean of the G steps' times.
  out.decode = predict_step(c, cached, p, w, load, dec, double(w.prompt) + double(w.gen) / 2, false);
  out.memory.activations = std::max(activation_bytes(c, hw, p, pre, out.prefill.max_expert_pairs),
                                    activation_bytes(c, hw, p, dec, out.decode.max_expert_pairs));
  return out;
}

void check_memory_fit(const Prediction& r) {
  const MemoryUse& m = r.memory;
  check(m.fits(), "the model does not fit: each device of plan '" + r.plan + "' on '" + r.profile + "' needs " +
                      gib(m.total()) + " (weights " + gib(m.weights) + ", KV cache " + gib(m.kv_cache) +
                      ", activations " + gib(m.activations) + ", reserved " + gib(m.reserved) + ") but has " +
                      gib(m.capacity));
}

}  // namespace moge::sim
