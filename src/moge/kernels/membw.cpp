#include "moge/kernels/membw.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "moge/core/buffer.h"
#include "moge/core/clock.h"

namespace moge::kernels {
namespace {

// The probe must be limited by memory, not by the core: a plain `sum += p[i]` loop is one chain
// of dependent vector adds (4 cycles each), which on this Xeon caps a core at ~16 B/cycle and
// made the 2-thread figure read low (oneDNN's bf16 GEMV then "beat" it by 26%). Eight independent
// accumulators of 64 bytes each keep 8 loads in flight per core; on CPUs without AVX-512 the
// compiler's vectorization of the same eight-way loop does the same job.
__attribute__((target("avx512f"))) float sum_avx512(const float* p, size_t n) {
  __m512 acc[8];
  for (auto& a : acc) a = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 128 <= n; i += 128)
    for (int u = 0; u < 8; ++u) acc[u] = _mm512_add_ps(acc[u], _mm512_load_ps(p + i + 16 * u));
  for (int u = 1; u < 8; ++u) acc[0] = _mm512_add_ps(acc[0], acc[u]);
  // The 16 lanes summed through memory: GCC 12's _mm512_reduce_add_ps warns about an undefined
  // placeholder inside its own header.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  float s = 0;
  for (float lane : lanes) s += lane;
  for (; i < n; ++i) s += p[i];
  return s;
}

float sum_portable(const float* p, size_t n) {
  float acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += p[i + u];
  float s = 0;
  for (float a : acc) s += a;
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

double read_bandwidth_once(const float* p, size_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static volatile float sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  float sum = 0;
#pragma omp parallel reduction(+ : sum)
  {
    // Contiguous 64-byte-aligned slices, one a thread (the buffer is 64-byte aligned).
    const size_t nt = size_t(omp_get_num_threads()), t = size_t(omp_get_thread_num());
    const size_t lines = n / 16, l0 = lines * t / nt, l1 = lines * (t + 1) / nt;
    const size_t begin = l0 * 16, end = t + 1 == nt ? n : l1 * 16;
    sum += avx512 ? sum_avx512(p + begin, end - begin) : sum_portable(p + begin, end - begin);
  }
  const double s = seconds_since(t0);
  sink = sink + sum;
  return double(n * sizeof(float)) / s / 1e9;
}

double measure_read_bandwidth(size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  AlignedBuffer buffer(n * sizeof(float));  // zero-filled: every page is touched before timing
  const float* p = reinterpret_cast<const float*>(buffer.data());
  double best = 0;
  for (int r = 0; r < repeats; ++r) best = std::max(best, read_bandwidth_once(p, n));
  return best;
}

}  // namespace moge::kernels
