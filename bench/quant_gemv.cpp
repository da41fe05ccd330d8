// bench/quant_gemv: the decode GEMVs (kernels::linear: quantized kernels/quant.h, bf16
// kernels/gemv_bf16.h) against the memory read bandwidth, and bf16 through oneDNN for comparison.
//
//   quant_gemv_bench [--quick]
//
// 1. STREAM-like bandwidth over a 1 GiB f32 array: a read-only sum (kernels/membw: the access
//    pattern of weight streaming, the probe `moge bench` divides by) and a triad a = b + s·c over
//    three 1/3 GiB arrays (counted as 3 streams, no write-allocate), best of 5, with 1 and 2
//    OpenMP threads. For reference only: the ratios below use the probe next to each sweep.
// 2. y[rows, out] = x[rows, in] · Wᵀ over many different weight matrices of one expert-like
//    shape (out, in) = (1024, 2048) and (2048, 1024), called one after the other (a "sweep"), as
//    many as make >= 256 MiB in that format: 64 bf16, 128 Q8, 228 Q4 matrices (2 M weights
//    each), 8x the 32 MiB L3, so every call streams its weights from DRAM as in MoE decode.
//    (With only 64 Q4 matrices, 72 MiB, the victim L3 still served part of each sweep: Q4 read
//    ~118% of STREAM.) Formats: bf16 through oneDNN (kernels::matmul), bf16 through linear()
//    (our GEMV up to kGemvMaxRows rows), Q8, Q4; the kernel column names what ran.
//    rows = 1 (decode GEMV), 8 and 16 (small batches).
//    weight GB/s = bytes of all weight arrays (incl. scales) per sweep / sweep time (median).
//    "of read bandwidth": every timed sweep follows one pass of the read probe over 256 MiB, and
//    the ratio is the median over the sweeps of (weight GB/s / that probe's GB/s): on this VM the
//    bandwidth drifts 12-30 GB/s within minutes, and only side-by-side passes compare (goal:
//    >= 85% at rows = 1). tokens/s = rows / time of one matrix (tokens through one expert matrix).
//    At least 5 timed sweeps and 0.15 s after one warm-up sweep.
// 3. One token through the 8 experts of a MoE layer (gate, up and down, rows = 1): one linear()
//    per matrix (24 fork/joins) against kernels::linear_group (2), ratio as in 2.
// Progress goes to stderr; the tables to stdout. The rows flag `busy` when this process got
// less than 90% of its threads' CPU time (other processes were running: rerun when quiet).
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "moge/core/buffer.h"
#include "moge/core/dtype.h"
#include "moge/core/rng.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/membw.h"
#include "moge/kernels/gemv_bf16.h"
#include "moge/kernels/quant.h"
#include "moge/kernels/weight.h"

using namespace moge;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kMinMatrices = 64;
constexpr size_t kSweepBytes = size_t(256) << 20;

int matrices_for(size_t bytes) { return std::max<int>(kMinMatrices, int((kSweepBytes + bytes - 1) / bytes)); }
constexpr double kMinCpuShare = 0.9;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::string first_line_of(const char* path, const char* prefix) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!prefix || line.rfind(prefix, 0) == 0) return prefix ? line.substr(line.find(':') + 2) : line;
  return "unknown";
}

struct Timing {
  double seconds;    // median of the timed repetitions
  double ratio;      // median over the repetitions of (bytes / time) / the read bandwidth just before
  double cpu_share;  // CPU time / (wall × threads) over them
};

// The read-bandwidth probe's buffer (kernels/membw), read right before every timed repetition.
constexpr size_t kProbeBytes = size_t(256) << 20;
const float* probe_buffer() {
  static AlignedBuffer b(kProbeBytes);  // zero-filled: touched
  return reinterpret_cast<const float*>(b.data());
}

// f() reads `bytes` of weights. Each repetition is a probe pass then f(), so every ratio compares
// the kernel with the bandwidth the machine had a few milliseconds before.
template <class F>
Timing time_median(F&& f, double bytes, int min_reps, double min_seconds) {
  f();  // warm-up
  std::vector<double> ts, ratios;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = Clock::now();
  do {
    const double read_gbs = kernels::read_bandwidth_once(probe_buffer(), kProbeBytes / 4);
    const auto t = Clock::now();
    f();
    ts.push_back(seconds_since(t));
    ratios.push_back(bytes / ts.back() / 1e9 / read_gbs);
  } while (int(ts.size()) < min_reps || seconds_since(t0) < min_seconds);
  const double wall = seconds_since(t0);
  std::sort(ts.begin(), ts.end());
  std::sort(ratios.begin(), ratios.end());
  return {ts[ts.size() / 2], ratios[ratios.size() / 2], (process_cpu_seconds() - cpu0) / (wall * omp_get_max_threads())};
}

// --- STREAM-like ------------------------------------------------------------------------------

struct Stream {
  double read_gbs, triad_gbs;
};

// The read figure is the library's probe (the one `moge bench` divides by); the triad is only
// printed for comparison with published STREAM numbers.
Stream measure_stream(float* a, int64_t n, int reps) {
  Stream s{kernels::measure_read_bandwidth(size_t(n) * 4, reps), 0};
  const int64_t m = n / 3;
  float *x = a, *b = a + m, *c = a + 2 * m;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < m; ++i) x[i] = b[i] + 0.5f * c[i];
    s.triad_gbs = std::max(s.triad_gbs, double(m) * 12 / seconds_since(t0) / 1e9);
  }
  return s;
}

// --- Weights: one random matrix, 64 copies of it in each format -------------------------------

AlignedBuffer clone(const AlignedBuffer& b) {
  AlignedBuffer c(b.size());
  std::memcpy(c.data(), b.data(), b.size());
  return c;
}

enum class Format { bf16_onednn, bf16, q8, q4 };
const char* format_name(Format f) {
  return f == Format::bf16_onednn ? "bf16" : f == Format::bf16 ? "bf16" : f == Format::q8 ? "q8" : "q4";
}

kernels::WeightRef bf16_ref(const AlignedBuffer& b, int64_t out, int64_t in) {
  kernels::WeightRef w;
  w.format = kernels::WeightFormat::bf16;
  w.dense = kernels::MatRef::bf16(reinterpret_cast<const moge::bf16*>(b.data()), in);
  w.out = out, w.in = in;
  return w;
}

// The kernel linear() runs for a weight format (the bench prints it on every row).
std::string kernel_of(Format f, int64_t rows) {
  if (f == Format::bf16_onednn || (f == Format::bf16 && !(rows <= kernels::kGemvMaxRows && kernels::gemv_bf16_supported())))
    return std::string("onednn ") + kernels::matmul_isa();
  if (f == Format::bf16) return "gemv_bf16 avx512_bf16";
  return kernels::quant_kernel_name();
}

struct Experts {
  int64_t out, in;
  std::vector<AlignedBuffer> bf16;
  std::vector<kernels::Q8Weight> q8;
  std::vector<kernels::Q4Weight> q4;
  size_t bytes_bf16 = 0, bytes_q8 = 0, bytes_q4 = 0;  // one matrix

  Experts(int64_t out_, int64_t in_) : out(out_), in(in_) {
    Rng rng(uint64_t(out * 31 + in));
    std::vector<float> w(size_t(out * in));
    for (float& v : w) v = 0.02f * rng.normal();
    AlignedBuffer b(w.size() * sizeof(moge::bf16));
    f32_to_bf16(w.data(), reinterpret_cast<moge::bf16*>(b.data()), w.size());
    const kernels::Q8Weight q8_0 = kernels::quantize_q8(w.data(), out, in);
    const kernels::Q4Weight q4_0 = kernels::quantize_q4(w.data(), out, in);
    bytes_bf16 = b.size();
    bytes_q8 = q8_0.bytes();
    bytes_q4 = q4_0.bytes();
    for (int e = 0; e < matrices_for(bytes_bf16); ++e) bf16.push_back(clone(b));
    for (int e = 0; e < matrices_for(bytes_q8); ++e) {
      kernels::Q8Weight a;
      a.out = out;
      a.in = in;
      a.q = clone(q8_0.q);
      a.scale = clone(q8_0.scale);
      a.row_sum = clone(q8_0.row_sum);
      q8.push_back(std::move(a));
    }
    for (int e = 0; e < matrices_for(bytes_q4); ++e) {
      kernels::Q4Weight c;
      c.out = out;
      c.in = in;
      c.qs = clone(q4_0.qs);
      c.scale = clone(q4_0.scale);
      q4.push_back(std::move(c));
    }
  }

  size_t bytes(Format f) const { return f == Format::q8 ? bytes_q8 : f == Format::q4 ? bytes_q4 : bytes_bf16; }
  std::vector<kernels::WeightRef> refs(Format f) const {
    std::vector<kernels::WeightRef> r;
    if (f == Format::q8)
      for (const auto& w : q8) r.push_back({kernels::WeightFormat::q8, {}, w.ref(), {}, out, in});
    else if (f == Format::q4)
      for (const auto& w : q4) r.push_back({kernels::WeightFormat::q4, {}, {}, w.ref(), out, in});
    else
      for (const auto& b : bf16) r.push_back(bf16_ref(b, out, in));
    return r;
  }
};

struct Row {
  int threads;
  int64_t out, in, rows;
  Format format;
  std::string kernel;
  double us_per_matrix, weight_gbs, stream_ratio, gops, tokens_per_s, vs_bf16, cpu_share;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  const int max_threads = omp_get_max_threads();
  std::vector<int> thread_counts = {1, 2};
  if (max_threads < 2 || quick) thread_counts = {std::min(2, max_threads)};
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");

  std::printf("# quant_gemv: sweeps of >= %zu MiB of weights (>= %d matrices); cpu: %s\n", kSweepBytes >> 20,
              kMinMatrices, first_line_of("/proc/cpuinfo", "model name").c_str());
  std::printf("# kernels: quantized %s, bf16 oneDNN %s; OPENBLAS_CORETYPE=%s; loadavg at start: %s\n",
              kernels::quant_kernel_name(), kernels::matmul_isa(), coretype ? coretype : "(unset)",
              first_line_of("/proc/loadavg", nullptr).c_str());

  // 1. STREAM.
  const int64_t n = (int64_t(1) << 30) / 4;
  std::fprintf(stderr, "stream: allocating and touching 1 GiB...\n");
  AlignedBuffer big(size_t(n) * 4);
  float* a = reinterpret_cast<float*>(big.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = 1.0f;
  std::vector<Stream> stream(3);
  std::printf("\n## STREAM-like bandwidth (1 GiB, best of 5)\n\n| threads | read-only sum GB/s | triad GB/s |\n|---|---|---|\n");
  for (int t : thread_counts) {
    std::fprintf(stderr, "stream: %d thread(s)\n", t);
    omp_set_num_threads(t);
    stream[t] = measure_stream(a, n, quick ? 2 : 5);
    std::printf("| %d | %.1f | %.1f |\n", t, stream[t].read_gbs, stream[t].triad_gbs);
    std::fflush(stdout);
  }
  big = AlignedBuffer();

  // 2. GEMV / small GEMM. The read bandwidth is measured again before each block (threads ×
  // shape): on a VM it drifts by 2x over minutes, and the ratio must compare like with like.
  const std::vector<int64_t> row_counts = {1, 8, 16};
  const int min_reps = quick ? 2 : 5;
  const double min_seconds = quick ? 0.0 : 0.15;
  std::vector<Row> results;
  const auto start = Clock::now();
  std::fprintf(stderr, "gemv: building >= %zu MiB of [1024, 2048] and [2048, 1024] matrices in bf16, q8, q4...\n",
               kSweepBytes >> 20);
  const Experts ex_up(1024, 2048), ex_down(2048, 1024);
  Rng rng(5);
  std::vector<float> x(size_t(16 * 2048)), y(size_t(16 * 2048));
  for (float& v : x) v = rng.normal();
  for (const Experts* ex : {&ex_up, &ex_down}) {
    const int64_t out = ex->out, in = ex->in;
    for (int t : thread_counts) {
      omp_set_num_threads(t);
      for (int64_t rows : row_counts) {
        double bf16_us = 0;
        for (Format f : {Format::bf16_onednn, Format::bf16, Format::q8, Format::q4}) {
          std::fprintf(stderr, "gemv: [%lld, %lld] %s rows=%lld threads=%d (%.0f s)\n", (long long)out, (long long)in,
                       format_name(f), (long long)rows, t, seconds_since(start));
          const std::vector<kernels::WeightRef> refs = ex->refs(f);
          const int count = int(refs.size());
          const Timing tm = time_median(
              [&] {
                for (int e = 0; e < count; ++e) {
                  if (f == Format::bf16_onednn) {
                    kernels::MatRef b = refs[e].dense;
                    b.trans = true;
                    kernels::matmul(rows, out, in, kernels::MatRef::f32(x.data(), in), b, y.data(), out);
                  } else {
                    kernels::linear(rows, x.data(), refs[e], y.data());
                  }
                }
              },
              double(ex->bytes(f)) * count, min_reps, min_seconds);
          const double per_matrix = tm.seconds / count;
          if (f == Format::bf16_onednn) bf16_us = per_matrix * 1e6;
          const double gbs = double(ex->bytes(f)) / per_matrix / 1e9;
          results.push_back({t, out, in, rows, f, kernel_of(f, rows), per_matrix * 1e6, gbs, tm.ratio,
                             2.0 * double(rows * out * in) / per_matrix / 1e9, double(rows) / per_matrix,
                             bf16_us / (per_matrix * 1e6), tm.cpu_share});
        }
      }
    }
  }

  std::printf("\n## GEMV / small GEMM, sweeps over >= %zu MiB of weights (median sweep)\n\n", kSweepBytes >> 20);
  std::printf("| threads | out×in | rows | format | kernel | µs/matrix | weight GB/s | of read bandwidth | GOP/s | "
              "tokens/s (one matrix) | speed-up vs bf16 oneDNN | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : results)
    std::printf("| %d | %lld×%lld | %lld | %s | %s | %.1f | %.1f | %.0f%% | %.1f | %.0f | %.2f× | %s |\n", r.threads,
                (long long)r.out, (long long)r.in, (long long)r.rows, format_name(r.format), r.kernel.c_str(),
                r.us_per_matrix, r.weight_gbs, 100 * r.stream_ratio, r.gops, r.tokens_per_s, r.vs_bf16,
                r.cpu_share < kMinCpuShare ? "busy" : "");
  std::fflush(stdout);

  // 3. One token through one MoE layer's 8 experts (gate, up [1024, 2048], down [2048, 1024]),
  // rows = 1: a linear() per matrix (24 fork/joins) against linear_group (2: gate and up of all
  // 8 sharing one x, then the 8 downs). Experts rotate through all the matrices of section 2.
  std::printf("\n## One token through 8 experts (gate, up, down), rows = 1: per matrix vs linear_group\n\n"
              "| threads | format | kernel | path | µs/token-layer | weight GB/s | of read bandwidth | note |\n"
              "|---|---|---|---|---|---|---|---|\n");
  constexpr int kTopK = 8;
  std::vector<float> h(size_t(kTopK * 1024)), g(size_t(2 * kTopK * 1024)), yd(size_t(kTopK * 2048));
  for (float& v : h) v = rng.normal();
  for (int t : thread_counts) {
    omp_set_num_threads(t);
    for (Format f : {Format::bf16, Format::q8, Format::q4}) {
      const std::vector<kernels::WeightRef> up = ex_up.refs(f), down = ex_down.refs(f);
      const int layers = int(down.size()) / kTopK, n_up = int(up.size());
      const double bytes = double(layers * kTopK) * (2.0 * double(ex_up.bytes(f)) + double(ex_down.bytes(f)));
      for (bool grouped : {false, true}) {
        std::fprintf(stderr, "layer: %s %s threads=%d (%.0f s)\n", format_name(f), grouped ? "group" : "per matrix", t,
                     seconds_since(start));
        std::vector<kernels::LinearTask> tasks;
        const Timing tm = time_median(
            [&] {
              for (int l = 0; l < layers; ++l) {
                const int e0 = l * kTopK;
                tasks.clear();
                for (int e = 0; e < kTopK; ++e) {
                  const float* xe = x.data();
                  tasks.push_back({&up[(2 * (e0 + e)) % n_up], 1, xe, g.data() + 2 * e * 1024});
                  tasks.push_back({&up[(2 * (e0 + e) + 1) % n_up], 1, xe, g.data() + (2 * e + 1) * 1024});
                }
                if (grouped) kernels::linear_group(tasks.data(), tasks.size());
                else for (const auto& k : tasks) kernels::linear(1, k.x, *k.w, k.y);
                tasks.clear();
                for (int e = 0; e < kTopK; ++e)
                  tasks.push_back({&down[e0 + e], 1, h.data() + e * 1024, yd.data() + e * 2048});
                if (grouped) kernels::linear_group(tasks.data(), tasks.size());
                else for (const auto& k : tasks) kernels::linear(1, k.x, *k.w, k.y);
              }
            },
            bytes, min_reps, min_seconds);
        const double gbs = bytes / tm.seconds / 1e9;
        std::printf("| %d | %s | %s | %s | %.1f | %.1f | %.0f%% | %s |\n", t, format_name(f), kernel_of(f, 1).c_str(),
                    grouped ? "linear_group" : "linear per matrix", tm.seconds / layers * 1e6, gbs, 100 * tm.ratio,
                    tm.cpu_share < kMinCpuShare ? "busy" : "");
        std::fflush(stdout);
      }
    }
  }
  std::printf("\n# loadavg at end: %s; total %.1f s\n", first_line_of("/proc/loadavg", nullptr).c_str(),
              seconds_since(start));
  return 0;
}
