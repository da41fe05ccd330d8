// bench/quant_gemv: quantized GEMV / small GEMM (kernels/quant.h) against the memory bandwidth
// measured in the same run, and against bf16 weights through moge::kernels::matmul (oneDNN).
//
//   quant_gemv_bench [--quick]
//
// 1. STREAM-like bandwidth over a 1 GiB f32 array: a read-only sum (kernels/membw: the access
//    pattern of weight streaming, the reference for the ratios below) and a triad a = b + s·c over three 1/3 GiB
//    arrays (counted as 3 streams, no write-allocate), best of 5, with 1 and 2 OpenMP threads.
// 2. y[rows, out] = x[rows, in] · Wᵀ over many different weight matrices of one expert-like
//    shape (out, in) = (1024, 2048) and (2048, 1024), called one after the other (a "sweep"), as
//    many as make >= 256 MiB in that format: 64 bf16, 128 Q8, 228 Q4 matrices (2 M weights
//    each), 8x the 32 MiB L3, so every call streams its weights from DRAM as in MoE decode.
//    (With only 64 Q4 matrices, 72 MiB, the victim L3 still served part of each sweep: Q4 read
//    ~118% of STREAM.) Formats: bf16 (moge::kernels::matmul, oneDNN), Q8, Q4.
//    rows = 1 (decode GEMV), 8 and 16 (small batches).
//    weight GB/s = bytes of all weight arrays (incl. scales) per sweep / sweep time, and its
//    ratio to the read-only STREAM bandwidth of the same thread count (goal: >= 85% for Q8 at
//    rows = 1); tokens/s = rows / time of one matrix (tokens through one expert matrix).
//    Median of the timed sweeps (at least 5 and 0.15 s after one warm-up sweep).
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
#include "moge/kernels/quant.h"

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
  double cpu_share;  // CPU time / (wall × threads) over them
};

template <class F>
Timing time_median(F&& f, int min_reps, double min_seconds) {
  f();  // warm-up
  std::vector<double> ts;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = Clock::now();
  do {
    const auto t = Clock::now();
    f();
    ts.push_back(seconds_since(t));
  } while (int(ts.size()) < min_reps || seconds_since(t0) < min_seconds);
  const double wall = seconds_since(t0);
  std::sort(ts.begin(), ts.end());
  return {ts[ts.size() / 2], (process_cpu_seconds() - cpu0) / (wall * omp_get_max_threads())};
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
};

enum class Format { bf16, q8, q4 };
const char* format_name(Format f) { return f == Format::bf16 ? "bf16" : f == Format::q8 ? "q8" : "q4"; }

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

  // 2. GEMV / small GEMM.
  const std::vector<int64_t> row_counts = {1, 8, 16};
  const int min_reps = quick ? 2 : 5;
  const double min_seconds = quick ? 0.0 : 0.15;
  std::vector<Row> results;
  const auto start = Clock::now();
  for (auto [out, in] : {std::pair<int64_t, int64_t>{1024, 2048}, {2048, 1024}}) {
    std::fprintf(stderr, "gemv: building >= %zu MiB of [%lld, %lld] matrices in each of bf16, q8, q4...\n",
                 kSweepBytes >> 20, (long long)out, (long long)in);
    const Experts ex(out, in);
    Rng rng(5);
    std::vector<float> x(size_t(16 * in)), y(size_t(16 * out));
    for (float& v : x) v = rng.normal();
    for (int t : thread_counts) {
      omp_set_num_threads(t);
      for (int64_t rows : row_counts) {
        double bf16_us = 0;
        for (Format f : {Format::bf16, Format::q8, Format::q4}) {
          std::fprintf(stderr, "gemv: [%lld, %lld] %s rows=%lld threads=%d (%.0f s)\n", (long long)out, (long long)in,
                       format_name(f), (long long)rows, t, seconds_since(start));
          Timing tm;
          size_t bytes;
          int count;
          std::string kernel;
          if (f == Format::bf16) {
            bytes = ex.bytes_bf16;
            count = int(ex.bf16.size());
            kernel = std::string("onednn ") + kernels::matmul_isa();
            tm = time_median(
                [&] {
                  for (int e = 0; e < count; ++e)
                    kernels::matmul(rows, out, in, kernels::MatRef::f32(x.data(), in),
                                    kernels::MatRef::bf16(reinterpret_cast<const moge::bf16*>(ex.bf16[e].data()), in, true),
                                    y.data(), out);
                },
                min_reps, min_seconds);
          } else if (f == Format::q8) {
            bytes = ex.bytes_q8;
            count = int(ex.q8.size());
            kernel = kernels::quant_kernel_name();
            tm = time_median(
                [&] {
                  for (int e = 0; e < count; ++e) kernels::gemm_q8(rows, x.data(), in, ex.q8[e], y.data(), out);
                },
                min_reps, min_seconds);
          } else {
            bytes = ex.bytes_q4;
            count = int(ex.q4.size());
            kernel = kernels::quant_kernel_name();
            tm = time_median(
                [&] {
                  for (int e = 0; e < count; ++e) kernels::gemm_q4(rows, x.data(), in, ex.q4[e], y.data(), out);
                },
                min_reps, min_seconds);
          }
          const double per_matrix = tm.seconds / count;
          if (f == Format::bf16) bf16_us = per_matrix * 1e6;
          const double gbs = double(bytes) / per_matrix / 1e9;
          results.push_back({t, out, in, rows, f, kernel, per_matrix * 1e6, gbs, gbs / stream[t].read_gbs,
                             2.0 * double(rows * out * in) / per_matrix / 1e9, double(rows) / per_matrix,
                             bf16_us / (per_matrix * 1e6), tm.cpu_share});
        }
      }
    }
  }

  std::printf("\n## GEMV / small GEMM, sweeps over >= %zu MiB of weights (median sweep)\n\n", kSweepBytes >> 20);
  std::printf("| threads | out×in | rows | format | kernel | µs/matrix | weight GB/s | of STREAM read | GOP/s | "
              "tokens/s (one matrix) | speed-up vs bf16 | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : results)
    std::printf("| %d | %lld×%lld | %lld | %s | %s | %.1f | %.1f | %.0f%% | %.1f | %.0f | %.2f× | %s |\n", r.threads,
                (long long)r.out, (long long)r.in, (long long)r.rows, format_name(r.format), r.kernel.c_str(),
                r.us_per_matrix, r.weight_gbs, 100 * r.stream_ratio, r.gops, r.tokens_per_s, r.vs_bf16,
                r.cpu_share < kMinCpuShare ? "busy" : "");
  std::printf("\n# loadavg at end: %s; total %.1f s\n", first_line_of("/proc/loadavg", nullptr).c_str(),
              seconds_since(start));
  return 0;
}
