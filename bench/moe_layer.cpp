// bench/moe_layer: the MoE layer's forward and forward+backward against one oneDNN GEMM of the
// same FLOPs, measured in the same run with the same thread count and dtype.
//
//   moe_layer_bench [--quick] [--json FILE]
//
// Shape: d=2048, N=64 experts in M=8 groups, K=8 (MoGE: one expert a group), expert width F=1024,
// shared width S=4096; T in {1, 16, 128, 1024} tokens (--quick: {1, 128}, about one repetition);
// f32 and bf16 compute (set_compute_dtype); 1 and 2 OpenMP threads (oneDNN runs on OpenMP).
// Weights from init_random(1), inputs and upstream gradients N(0, 1): the routing is whatever the
// random gate gives, fixed across repetitions (same x every call, so every expert GEMM shape is
// already in matmul's primitive cache after the warm-up).
//
// FLOPs counted (GEMMs only; softmax, SwiGLU, gather/combine and other elementwise work ignored):
//   forward  = 2·T·d·N (router gate) + 2·T·K·3·d·F (routed experts) + 2·T·3·d·S (shared expert)
//   backward = 2 × forward (every GEMM has a dX and a dW GEMM), so fwd+bwd = 3 × forward.
//
// Baseline: ONE GEMM C[m, n] = A[m, k] · B[k, n] through moge::kernels::matmul with m = T,
// k = d, and n chosen so that 2·m·n·k equals the layer's forward FLOPs (n = forward / (2·T·d)).
// A is f32 like the layer's activations; B is stored [n, k] and used transposed, in the compute
// dtype, exactly like a weight (so bf16 includes the same f32→bf16 rounding of A). It is the same
// amount of work and the same weight bytes as the layer (T=1 is weight streaming for both), in
// one perfectly shaped call: what a fully fused layer could reach with the same library. The
// fwd+bwd rows are compared against this same GEMM (its GFLOP/s), not a 3× larger one.
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moge/core/rng.h"
#include "moge/core/tensor.h"
#include "moge/kernels/matmul.h"
#include "moge/moe/layer.h"

using namespace moge;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kD = 2048, kN = 64, kM = 8, kK = 8, kF = 1024, kS = 4096;
constexpr double kMinCpuShare = 0.9;  // below: the row is flagged as measured on a busy machine

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) this process has used so far, all threads.
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Timing {
  double seconds;  // a call
  int reps;
  // CPU time / (wall time × threads) over the timed repetitions. Idle OpenMP threads spin for a
  // while before they sleep, so an unloaded machine gives ~0.95-1; well below means other
  // processes took our cores (a shared machine with few cores) and the row is not to be trusted.
  double cpu_share;
};

// Runs f once to warm up, then times repetitions until min_seconds have passed and at least
// min_reps ran. Calls longer than min_seconds / min_reps thus get exactly min_reps repetitions.
template <class F>
Timing time_per_call(F&& f, double min_seconds, int min_reps) {
  f();
  int reps = 0;
  const double cpu0 = process_cpu_seconds();
  auto t0 = Clock::now();
  do {
    f();
    ++reps;
  } while (reps < min_reps || seconds_since(t0) < min_seconds);
  const double wall = seconds_since(t0);
  return {wall / reps, reps, (process_cpu_seconds() - cpu0) / (wall * omp_get_max_threads())};
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

double forward_flops(int64_t t) {
  return 2.0 * t * kD * kN + 2.0 * t * kK * 3.0 * kD * kF + 2.0 * t * 3.0 * kD * kS;
}

// n of the baseline GEMM: forward_flops(T) / (2·T·d), the same for every T.
constexpr int64_t kBaselineN = kN + kK * 3 * kF + 3 * kS;

void fill_normal(Rng& rng, float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = rng.normal();
}

// The baseline GEMM's weight B, stored [n, k] like a PyTorch weight and used transposed; one B
// serves every T. Random values, not zeros, so the timing cannot profit from untouched pages.
struct Baseline {
  static constexpr int64_t n = kBaselineN;
  Tensor f32_b, bf16_b;
  Baseline() : f32_b({n, kD}) {
    Rng rng(3);
    float* p = f32_b.f32();
    for (int64_t i = 0; i < f32_b.numel(); ++i) p[i] = rng.uniform(-0.05f, 0.05f);
    bf16_b = f32_b.to(DType::bf16);
  }

  // [t, kD] · [kD, n] in the given weight dtype.
  Timing time(const float* a, int64_t t, DType dtype, double min_seconds, int min_reps) const {
    kernels::MatRef b = dtype == DType::f32 ? kernels::MatRef::f32(f32_b.f32(), kD, true)
                                            : kernels::MatRef::bf16(bf16_b.bf16_data(), kD, true);
    std::vector<float> c(t * n);
    return time_per_call([&] { kernels::matmul(t, n, kD, kernels::MatRef::f32(a, kD), b, c.data(), n); },
                         min_seconds, min_reps);
  }
};

struct Row {
  int threads;
  DType dtype;
  int64_t tokens;
  bool backward;
  double ms, tokens_per_s, gflops, gemm_gflops;
  int reps;
  double cpu_share, gemm_cpu_share;
  bool contended() const { return std::min(cpu_share, gemm_cpu_share) < kMinCpuShare; }
};

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [--quick] [--json FILE]\n", prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const auto program_start = Clock::now();
  bool quick = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      usage(argv[0]);
    }
  }
  // Big calls (T=1024 forward is ~150 GFLOP, seconds on one core) get the minimum repetitions.
  const double min_seconds = quick ? 0.0 : 0.3;
  auto min_reps_for = [&](int64_t t) { return quick ? 1 : t >= 1024 ? 2 : 3; };
  const std::vector<int64_t> token_counts = quick ? std::vector<int64_t>{1, 128} : std::vector<int64_t>{1, 16, 128, 1024};
  const int64_t t_max = token_counts.back();

  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("# moe_layer: d=%d N=%d M=%d K=%d F=%d S=%d, grouped routing (MoGE)%s\n", kD, kN, kM, kK, kF, kS,
              quick ? ", --quick" : "");
  std::printf("# cpu: %s; oneDNN isa: %s; OPENBLAS_CORETYPE=%s\n", cpu_model().c_str(), kernels::matmul_isa(),
              coretype ? coretype : "(unset)");
  std::printf("# FLOPs: fwd = 2TdN + 2TK·3dF + 2T·3dS, fwd+bwd = 3 × fwd; GEMM = one matmul m=T, k=%d, n = fwd/(2Td)\n",
              kD);
  std::fflush(stdout);

  moe::MoeConfig cfg;
  cfg.d_model = kD;
  cfg.router = {kN, kM, kK, moe::RoutingMode::grouped, false, 0};
  cfg.expert_ff = kF;
  cfg.shared_ff = kS;
  moe::MoeLayer layer(cfg);
  layer.init_random(1);

  Rng rng(2);
  std::vector<float> x(t_max * kD), y(t_max * kD), dy(t_max * kD), dx(t_max * kD);
  fill_normal(rng, x.data(), int64_t(x.size()));
  fill_normal(rng, dy.data(), int64_t(dy.size()));
  moe::MoeWeights grads = moe::MoeWeights::zeros(cfg);  // accumulates over repetitions; only timed
  moe::MoeCache cache;
  const Baseline baseline;

  const bool tty = isatty(2);
  const auto start = Clock::now();
  std::vector<Row> rows;
  const int total = 2 * 2 * int(token_counts.size());  // (threads, dtype, T) steps: fwd, fwd+bwd, GEMM each
  int step = 0;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (DType dtype : {DType::f32, DType::bf16}) {
      layer.set_compute_dtype(dtype);
      for (int64_t t : token_counts) {
        ++step;
        auto progress = [&](const char* what) {
          std::fprintf(stderr, "%s[%2d/%d] %d thread%s %-4s T=%-4lld %-7s (%.0f s elapsed)%s", tty ? "\r" : "", step,
                       total, threads, threads > 1 ? "s" : " ", dtype_name(dtype), (long long)t, what,
                       seconds_since(start), tty ? "   " : "\n");
          std::fflush(stderr);
        };
        progress("GEMM");
        const Timing gemm = baseline.time(x.data(), t, dtype, min_seconds, min_reps_for(t));
        const double gemm_gflops = 2.0 * t * baseline.n * kD / gemm.seconds / 1e9;
        for (bool backward : {false, true}) {
          progress(backward ? "fwd+bwd" : "fwd");
          const double flops = forward_flops(t) * (backward ? 3.0 : 1.0);
          Timing tm = time_per_call(
              [&] {
                layer.forward(x.data(), t, y.data(), cache);
                if (backward) layer.backward(x.data(), cache, dy.data(), 1.0f, dx.data(), grads);
              },
              min_seconds, min_reps_for(t));
          rows.push_back({threads, dtype, t, backward, tm.seconds * 1e3, t / tm.seconds, flops / tm.seconds / 1e9,
                          gemm_gflops, tm.reps, tm.cpu_share, gemm.cpu_share});
        }
      }
    }
  }
  const double elapsed = seconds_since(start);
  if (tty) std::fprintf(stderr, "\r%70s\r", "");

  std::printf("\n| threads | dtype | T    | pass    | ms/call   | tokens/s  | GFLOP/s | GEMM GFLOP/s | ratio | cpu  |\n");
  std::printf("|--------:|-------|-----:|---------|----------:|----------:|--------:|-------------:|------:|-----:|\n");
  int contended = 0;
  for (const Row& r : rows) {
    contended += r.contended();
    std::printf("| %7d | %-5s | %4lld | %-7s | %9.3f | %9.1f | %7.1f | %12.1f | %5.2f | %.2f%s |\n", r.threads,
                dtype_name(r.dtype), (long long)r.tokens, r.backward ? "fwd+bwd" : "fwd", r.ms, r.tokens_per_s,
                r.gflops, r.gemm_gflops, r.gflops / r.gemm_gflops, std::min(r.cpu_share, r.gemm_cpu_share),
                r.contended() ? "!" : "");
  }
  std::printf("\ncpu = CPU time / (wall time x threads) while timing, the lower of layer and GEMM; \"!\" (< %.2f):\n"
              "other processes took our cores, the row is unreliable. %d row%s flagged.\n",
              kMinCpuShare, contended, contended == 1 ? "" : "s");
  std::printf("\nGEMM shapes (m x n x k):");
  for (int64_t t : token_counts) std::printf(" %lld x %lld x %d;", (long long)t, (long long)kBaselineN, kD);
  std::printf("\ntime: %.0f s measuring, after %.0f s of setup (init_random, baseline weights)\n", elapsed,
              std::chrono::duration<double>(start - program_start).count());

  std::printf("\ngoal: T=%lld forward >= 80%% of the single GEMM\n", (long long)t_max);
  bool all_met = true;
  for (const Row& r : rows) {
    if (r.tokens != t_max || r.backward) continue;
    const bool met = r.gflops >= 0.8 * r.gemm_gflops;
    all_met &= met;
    std::printf("  %d thread%s %-4s: %3.0f%%  %s%s\n", r.threads, r.threads > 1 ? "s" : " ", dtype_name(r.dtype),
                100 * r.gflops / r.gemm_gflops, met ? "pass" : "miss", r.contended() ? " (busy machine, unreliable)" : "");
  }

  if (!json_path.empty()) {
    nlohmann::json j;
    j["cpu"] = cpu_model();
    j["isa"] = kernels::matmul_isa();
    j["openblas_coretype"] = coretype ? nlohmann::json(coretype) : nlohmann::json(nullptr);
    j["config"] = {{"d_model", kD}, {"num_experts", kN}, {"num_groups", kM}, {"top_k", kK},
                   {"expert_ff", kF}, {"shared_ff", kS}, {"routing", "grouped"}, {"quick", quick}};
    j["seconds"] = elapsed;  // measuring, without setup
    j["goal_met"] = all_met;
    for (const Row& r : rows)
      j["rows"].push_back({{"threads", r.threads},
                           {"dtype", dtype_name(r.dtype)},
                           {"tokens", r.tokens},
                           {"pass", r.backward ? "fwd+bwd" : "fwd"},
                           {"ms", r.ms},
                           {"tokens_per_s", r.tokens_per_s},
                           {"gflops", r.gflops},
                           {"gemm_gflops", r.gemm_gflops},
                           {"gemm_shape", {r.tokens, kBaselineN, kD}},
                           {"ratio", r.gflops / r.gemm_gflops},
                           {"reps", r.reps},
                           {"cpu_share", r.cpu_share},
                           {"gemm_cpu_share", r.gemm_cpu_share},
                           {"contended", r.contended()}});
    std::ofstream out(json_path);
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    out << j.dump(2) << "\n";
  }
  return 0;
}
