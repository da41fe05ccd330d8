// Quantization, dequantization, activation preparation, the scalar reference kernels and the
// runtime dispatch. The SIMD twins live in quant_avx2.cpp and quant_avx512.cpp.
#include "moge/kernels/quant.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "moge/core/error.h"

namespace moge::kernels {

namespace {

constexpr int64_t kQ8MaxIn = 131072;  // in · 127 · 127 < 2^31
constexpr int kQ4Block = 32;

std::string shape(int64_t out, int64_t in) {
  std::string s = "[";
  s += std::to_string(out);
  s += ", ";
  s += std::to_string(in);
  s += "]";
  return s;
}

void check_finite_row(const float* w, int64_t in, int64_t o, const char* what, int64_t out) {
  for (int64_t k = 0; k < in; ++k)
    if (!std::isfinite(w[k]))
      throw Error(std::string(what) + ": weight " + shape(out, in) + " has a non-finite value at [" +
                  std::to_string(o) + ", " + std::to_string(k) + "]");
}

// --- Dispatch ----------------------------------------------------------------------------------

constexpr int kUnset = -1;
std::atomic<int> g_kernel{kUnset};

QuantKernel best_kernel() {
  if (quant_kernel_supported(QuantKernel::avx512_vnni)) return QuantKernel::avx512_vnni;
  if (quant_kernel_supported(QuantKernel::avx2)) return QuantKernel::avx2;
  return QuantKernel::scalar;
}

QuantKernel auto_kernel() {
  const char* env = std::getenv("MOGE_QUANT_KERNEL");
  if (!env || !*env || std::strcmp(env, "auto") == 0) return best_kernel();
  QuantKernel k;
  if (std::strcmp(env, "scalar") == 0) k = QuantKernel::scalar;
  else if (std::strcmp(env, "avx2") == 0) k = QuantKernel::avx2;
  else if (std::strcmp(env, "avx512_vnni") == 0 || std::strcmp(env, "avx512") == 0) k = QuantKernel::avx512_vnni;
  else throw Error(std::string("MOGE_QUANT_KERNEL: unknown kernel '") + env + "' (scalar, avx2, avx512_vnni, auto)");
  if (!quant_kernel_supported(k))
    throw Error(std::string("MOGE_QUANT_KERNEL: this CPU does not support '") + env + "'");
  return k;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void check_gemm(const char* what, int64_t rows, int64_t ldx, int64_t ldy, int64_t out, int64_t in) {
  check(rows >= 0 && out >= 1 && in >= 1 && ldx >= in && ldy >= out,
        std::string(what) + ": bad shapes: x [" + std::to_string(rows) + ", " + std::to_string(in) + "] (ldx " +
            std::to_string(ldx) + "), W " + shape(out, in) + ", y ldy " + std::to_string(ldy));
}

// Splits [0, out) over the OpenMP team in contiguous ranges aligned to 16 outputs (whole tiles,
// and no two threads writing the same 64-byte line of y), and runs fn on each.
template <class Fn>
void parallel_over_outputs(int64_t out, int64_t weight_bytes, Fn&& fn) {
  const bool parallel = weight_bytes >= (64 << 10) && omp_get_max_threads() > 1 && !omp_in_parallel();
  if (!parallel) {
    fn(int64_t(0), out);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunks = (out + 15) / 16;
    const int64_t c0 = chunks * t / nt, c1 = chunks * (t + 1) / nt;
    const int64_t o0 = std::min(out, c0 * 16), o1 = std::min(out, c1 * 16);
    if (o0 < o1) fn(o0, o1);
  }
}

}  // namespace

// --- Kernel selection ------------------------------------------------------------------------------

const char* quant_kernel_name(QuantKernel k) {
  switch (k) {
    case QuantKernel::scalar: return "scalar";
    case QuantKernel::avx2: return "avx2";
    case QuantKernel::avx512_vnni: return "avx512_vnni";
  }
  return "?";
}

bool quant_kernel_supported(QuantKernel k) {
  switch (k) {
    case QuantKernel::scalar: return true;
    case QuantKernel::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case QuantKernel::avx512_vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  return false;
}

QuantKernel quant_kernel() {
  int k = g_kernel.load(std::memory_order_relaxed);
  if (k == kUnset) {
    k = int(auto_kernel());
    g_kernel.store(k, std::memory_order_relaxed);
  }
  return QuantKernel(k);
}

const char* quant_kernel_name() { return quant_kernel_name(quant_kernel()); }

void set_quant_kernel(QuantKernel k) {
  check(quant_kernel_supported(k), std::string("set_quant_kernel: this CPU does not support ") + quant_kernel_name(k));
  g_kernel.store(int(k), std::memory_order_relaxed);
}

void reset_quant_kernel() { g_kernel.store(kUnset, std::memory_order_relaxed); }

// --- Quantization ------------------------------------------------------------------------------------

Q8Weight quantize_q8(const float* w, int64_t out, int64_t in) {
  check(out >= 1 && in >= 1 && in <= kQ8MaxIn,
        "quantize_q8: weight " + shape(out, in) + ": need out >= 1 and 1 <= in <= " + std::to_string(kQ8MaxIn));
  Q8Weight r;
  r.out = out;
  r.in = in;
  r.q = AlignedBuffer(size_t(out * in));
  r.scale = AlignedBuffer(size_t(out) * sizeof(float));
  r.row_sum = AlignedBuffer(size_t(out) * sizeof(int32_t));
  int8_t* q = r.q_data();
  float* scale = r.scale_data();
  int32_t* row_sum = r.row_sum_data();
  for (int64_t o = 0; o < out; ++o) check_finite_row(w + o * in, in, o, "quantize_q8", out);
#pragma omp parallel for schedule(static) if (out * in >= (1 << 20))
  for (int64_t o = 0; o < out; ++o) {
    const float* wr = w + o * in;
    float amax = 0.0f;
    for (int64_t k = 0; k < in; ++k) amax = std::max(amax, std::abs(wr[k]));
    const float s = amax / 127.0f;
    scale[o] = s;
    int32_t sum = 0;
    for (int64_t k = 0; k < in; ++k) {
      const int v = s > 0.0f ? int(std::clamp(std::nearbyint(wr[k] / s), -127.0f, 127.0f)) : 0;
      q[o * in + k] = int8_t(v);
      sum += v;
    }
    row_sum[o] = sum;
  }
  return r;
}

Q4Weight quantize_q4(const float* w, int64_t out, int64_t in) {
  check(out >= 1 && in >= kQ4Block && in % kQ4Block == 0,
        "quantize_q4: weight " + shape(out, in) + ": need out >= 1 and in a positive multiple of 32");
  const int64_t nb = in / kQ4Block;
  Q4Weight r;
  r.out = out;
  r.in = in;
  r.qs = AlignedBuffer(size_t(out * in / 2));
  r.scale = AlignedBuffer(size_t(out * nb) * sizeof(uint16_t));
  uint8_t* qs = r.qs_data();
  uint16_t* scale = r.scale_data();
  for (int64_t o = 0; o < out; ++o) {
    check_finite_row(w + o * in, in, o, "quantize_q4", out);
    for (int64_t b = 0; b < nb; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < kQ4Block; ++j) amax = std::max(amax, std::abs(w[o * in + b * kQ4Block + j]));
      check(amax / 7.5f <= 65504.0f, "quantize_q4: weight " + shape(out, in) + ": block scale of row " +
                                         std::to_string(o) + " overflows f16 (max |w| = " + std::to_string(amax) + ")");
    }
  }
#pragma omp parallel for schedule(static) if (out * in >= (1 << 20))
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* wb = w + o * in + b * kQ4Block;
      float amax = 0.0f;
      for (int j = 0; j < kQ4Block; ++j) amax = std::max(amax, std::abs(wb[j]));
      const float t = amax / 7.5f;
      uint16_t h = f32_to_f16(t);
      if (f16_to_f32(h) < t) ++h;  // round up: every |w| / d <= 7.5
      const float d = f16_to_f32(h);
      scale[o * nb + b] = h;
      uint8_t* out_b = qs + o * (in / 2) + b * (kQ4Block / 2);
      for (int j = 0; j < kQ4Block / 2; ++j) {
        int lo = 0, hi = 0;
        if (d > 0.0f) {
          lo = int(std::clamp(std::nearbyint(wb[j] / d), -8.0f, 7.0f));
          hi = int(std::clamp(std::nearbyint(wb[j + 16] / d), -8.0f, 7.0f));
        }
        out_b[j] = uint8_t((lo + 8) | ((hi + 8) << 4));
      }
    }
  }
  return r;
}

void dequantize_q8(const Q8Ref& w, float* dst) {
  for (int64_t o = 0; o < w.out; ++o)
    for (int64_t k = 0; k < w.in; ++k) dst[o * w.in + k] = float(w.q[o * w.in + k]) * w.scale[o];
}

void dequantize_q4(const Q4Ref& w, float* dst) {
  const int64_t nb = w.in / kQ4Block;
  for (int64_t o = 0; o < w.out; ++o)
    for (int64_t b = 0; b < nb; ++b) {
      const float d = f16_to_f32(w.scale[o * nb + b]);
      const uint8_t* p = w.qs + o * (w.in / 2) + b * (kQ4Block / 2);
      float* q = dst + o * w.in + b * kQ4Block;
      for (int j = 0; j < 16; ++j) {
        q[j] = float(int(p[j] & 0x0f) - 8) * d;
        q[j + 16] = float(int(p[j] >> 4) - 8) * d;
      }
    }
}

namespace {

// quantize_activation_row, with the result XORed by `flip` (0x80: u8 = qx + 128 for vpdpbusd).
// `omp simd` lets the compiler vectorize the max reduction (max is exact in any order) and the
// rounding (IEEE, the same in every lane), so every kernel path sees the same integers.
float quantize_row(const float* x, int64_t n, int8_t* q, uint8_t flip) {
  float amax = 0.0f;
#pragma omp simd reduction(max : amax)
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::abs(x[k]));
  if (!(amax > 0.0f) || !std::isfinite(amax)) {  // zero row (or garbage in: no UB, zeros out)
    std::memset(q, int8_t(flip), size_t(n));
    return 0.0f;
  }
  const float inv = 127.0f / amax;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) q[k] = int8_t(int32_t(std::nearbyint(x[k] * inv)) ^ flip);
  return amax / 127.0f;
}

}  // namespace

float quantize_activation_row(const float* x, int64_t n, int8_t* q) { return quantize_row(x, n, q, 0); }

// --- Scalar reference kernels --------------------------------------------------------------------------

namespace detail {

void gemm_q8_scalar(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy) {
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int8_t* wr = w.q + o * w.in;
    for (int64_t r = 0; r < a.rows; ++r) {
      const int8_t* xr = a.x + r * a.ldx;
      int32_t acc = 0;
      for (int64_t k = 0; k < w.in; ++k) acc += int32_t(xr[k]) * int32_t(wr[k]);
      y[r * ldy + o] = float(acc) * (a.scale[r] * w.scale[o]);
    }
  }
}

void gemm_q4_scalar(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy) {
  const int64_t nb = w.in / kQ4Block;
  for (int64_t o = o_begin; o < o_end; ++o) {
    for (int64_t r = 0; r < a.rows; ++r) {
      const int8_t* xr = a.x + r * a.ldx;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* p = w.qs + o * (w.in / 2) + b * 16;
        const int8_t* xb = xr + b * kQ4Block;
        int32_t dot = 0;
        for (int j = 0; j < 16; ++j)
          dot += (int32_t(p[j] & 0x0f) - 8) * xb[j] + (int32_t(p[j] >> 4) - 8) * xb[j + 16];
        acc += f16_to_f32(w.scale[o * nb + b]) * float(dot);
      }
      y[r * ldy + o] = a.scale[r] * acc;
    }
  }
}

}  // namespace detail

// --- Activation preparation and drivers ------------------------------------------------------------------

namespace detail {

void prepare_q8(QuantKernel kernel, int64_t rows, const float* x, int64_t ldx, int64_t in, PreparedActs& p) {
  const int64_t ld = round_up(in, 64);
  p.x.assign(size_t(rows * ld), 0);
  p.scale.resize(size_t(rows));
  const uint8_t flip = kernel == QuantKernel::avx512_vnni ? 0x80 : 0;  // u8 = qx + 128: flip the top bit
  for (int64_t r = 0; r < rows; ++r) p.scale[r] = quantize_row(x + r * ldx, in, p.x.data() + r * ld, flip);
  p.acts = {rows, p.x.data(), ld, nullptr, 0, p.scale.data()};
}

void prepare_q4(QuantKernel kernel, int64_t rows, const float* x, int64_t ldx, int64_t in, PreparedActs& p) {
  const int64_t nb = in / kQ4Block;
  p.scale.resize(size_t(rows));
  if (kernel == QuantKernel::scalar) {
    p.x.resize(size_t(rows * in));
    for (int64_t r = 0; r < rows; ++r) p.scale[r] = quantize_activation_row(x + r * ldx, in, p.x.data() + r * in);
    p.acts = {rows, p.x.data(), in, nullptr, 0, p.scale.data()};
    return;
  }
  const int64_t g = kernel == QuantKernel::avx512_vnni ? 4 : 2;  // blocks per group (vector bytes / 16)
  const int64_t ngroups = (nb + g - 1) / g;
  const int64_t ld = ngroups * g * kQ4Block, ldc = ngroups * g * 4;
  p.tmp.resize(size_t(in));
  p.x.assign(size_t(rows * ld), 0);
  p.corr.assign(size_t(rows * ldc), 0);
  for (int64_t r = 0; r < rows; ++r) {
    p.scale[r] = quantize_activation_row(x + r * ldx, in, p.tmp.data());
    int8_t* xr = p.x.data() + r * ld;
    int32_t* cr = p.corr.data() + r * ldc;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t grp = b / g, j = b % g;
      const int8_t* qb = p.tmp.data() + b * kQ4Block;
      int8_t* lo = xr + grp * g * kQ4Block + j * 16;
      std::memcpy(lo, qb, 16);
      std::memcpy(lo + g * 16, qb + 16, 16);
      int32_t sum = 0;
      for (int k = 0; k < kQ4Block; ++k) sum += qb[k];
      cr[grp * g * 4 + j * 4] = -8 * sum;
    }
  }
  p.acts = {rows, p.x.data(), ld, p.corr.data(), ldc, p.scale.data()};
}

Q8RangeFn q8_range_fn(QuantKernel k) {
  return k == QuantKernel::avx512_vnni ? gemm_q8_avx512 : k == QuantKernel::avx2 ? gemm_q8_avx2 : gemm_q8_scalar;
}

Q4RangeFn q4_range_fn(QuantKernel k) {
  return k == QuantKernel::avx512_vnni ? gemm_q4_avx512 : k == QuantKernel::avx2 ? gemm_q4_avx2 : gemm_q4_scalar;
}

}  // namespace detail

namespace {
thread_local detail::PreparedActs t_acts;  // reused: no allocation per call
}

void gemm_q8(int64_t rows, const float* x, int64_t ldx, const Q8Ref& w, float* y, int64_t ldy) {
  check_gemm("gemm_q8", rows, ldx, ldy, w.out, w.in);
  check(w.in <= kQ8MaxIn, "gemm_q8: W " + shape(w.out, w.in) + ": in > " + std::to_string(kQ8MaxIn));
  if (rows == 0) return;
  const QuantKernel kernel = quant_kernel();
  detail::prepare_q8(kernel, rows, x, ldx, w.in, t_acts);
  const detail::QuantActs& acts = t_acts.acts;
  const auto fn = detail::q8_range_fn(kernel);
  parallel_over_outputs(w.out, w.out * w.in, [&](int64_t o0, int64_t o1) { fn(acts, w, o0, o1, y, ldy); });
}

void gemm_q4(int64_t rows, const float* x, int64_t ldx, const Q4Ref& w, float* y, int64_t ldy) {
  check_gemm("gemm_q4", rows, ldx, ldy, w.out, w.in);
  check(w.in % kQ4Block == 0, "gemm_q4: W " + shape(w.out, w.in) + ": in must be a multiple of 32");
  if (rows == 0) return;
  const QuantKernel kernel = quant_kernel();
  detail::prepare_q4(kernel, rows, x, ldx, w.in, t_acts);
  const detail::QuantActs& acts = t_acts.acts;
  const auto fn = detail::q4_range_fn(kernel);
  parallel_over_outputs(w.out, w.out * w.in / 2, [&](int64_t o0, int64_t o1) { fn(acts, w, o0, o1, y, ldy); });
}

}  // namespace moge::kernels
