#pragma once
// Quantized weights for W8A8 and W4A8 inference, and the GEMV/small-GEMM kernels over them:
//
//   y[rows, out] (f32) = x[rows, in] (f32) · Wᵀ,   W stored quantized as [out, in]
//
// Activations are quantized on the fly, per row, to int8; products accumulate in int32 (exact),
// and only the scales are applied in f32. Made for small `rows` (1..16: decode, small batches),
// where the work is streaming the weights once: parallel over output rows (OpenMP), each thread
// a contiguous range. Larger `rows` work too (row chunks re-read the weights from cache).
//
// ---------------------------------------------------------------------------------------------
// Q8 (W8, per-output-row scale). For a weight W[out, in] (f32):
//   scale[o]   f32            = max_k |W[o, k]| / 127            (0 for an all-zero row)
//   q[o, k]    int8           = clamp(nearbyint(W[o, k] / scale[o]), -127, 127)   (0 if scale 0)
//   row_sum[o] int32          = Σ_k q[o, k]                      (derived; kept for the VNNI path)
//   dequantized W[o, k]       = float(q[o, k]) * scale[o]
// Arrays, little-endian, no padding: q int8 [out, in] row-major, scale f32 [out],
// row_sum int32 [out]. -128 never occurs. Requires 1 <= in <= 131072 (int32 accumulation).
//
// Q4 (W4, blocks of 32 along `in`). Block b of row o holds W[o, 32b .. 32b+31]:
//   scale[o, b] f16 (IEEE binary16 bits) = max|block| / 7.5, rounded UP to the next f16, so that
//                                          every |w| / d <= 7.5          (0 for an all-zero block)
//   q           int in [-8, 7]           = clamp(nearbyint(w / d), -8, 7)   (d = f16 value; 0 if d 0)
//   dequantized w                        = float(q) * d
//   qs[o, 16b + j], j = 0..15: uint8     = (q[32b + j] + 8) | (q[32b + 16 + j] + 8) << 4
//     i.e. the LOW nibble holds element j and the HIGH nibble element j + 16 of the block, both
//     offset by +8 (unsigned 0..15; the ggml Q4_0 nibble order).
// Arrays, little-endian, no padding: qs uint8 [out, in/2] row-major, scale uint16 (f16 bits)
// [out, in/32] row-major. Requires in % 32 == 0. 4.5 bits per weight. Blocks whose max |w| is
// below ~4.6e-4 get a subnormal f16 scale and somewhat coarser steps (the bound below holds).
// Round trip: |w - dequantized w| <= d/2 (Q4) and <= scale/2 (Q8), up to f32 rounding.
//
// Activations (both kernels): each row x[r, :] of the input is quantized to int8 with
//   sx[r] = max_k |x[r, k]| / 127,  qx[r, k] = nearbyint(x[r, k] * (127 / max_k |x[r, k]|))
// (all zeros when the row is 0), by quantize_activation_row below.
//
// What the kernels compute (the scalar reference, exactly this order):
//   Q8:  y[r, o] = float(Σ_k qx[r,k]·q[o,k] (int32)) * (sx[r] * scale[o])
//   Q4:  y[r, o] = sx[r] * Σ_b (d[o,b] * float(Σ_{k in b} qx[r,k]·q[o,k]))   (f32, b ascending)
// The SIMD paths give the identical integers, so Q8 results are bit-identical to the scalar
// path; Q4 sums the same f32 terms in another order (lane-parallel), within f32 rounding.
//
// SIMD tricks (the formats above do not change per path):
//   AVX-512 VNNI, Q8: vpdpbusd multiplies u8 by s8, so activations enter as u8 = qx + 128 and
//     Σ (qx+128)·q = Σ qx·q + 128·row_sum[o]: the precomputed row_sum removes the offset.
//   AVX-512 VNNI, Q4: the unsigned nibbles n = q + 8 are the u8 operand, activations the s8 one:
//     Σ n·qx = Σ q·qx + 8·Σ_{k in b} qx, the per-block activation sum is subtracted (computed
//     once per activation row, shared by all output rows).
//   AVX2 (no VNNI): Q8 uses vpmaddubsw(|q|, sign(qx, q)) (no i16 saturation since |.| <= 127),
//     Q4 vpmaddubsw(n, qx) with the same -8·Σqx correction as VNNI.
// ---------------------------------------------------------------------------------------------
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "moge/core/buffer.h"

namespace moge::kernels {

// --- IEEE binary16 (f16) bits <-> f32, exact and portable (the Q4 scales) -------------------
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = float(m) * 0x1p-24f;  // zero or subnormal
    return sign ? -v : v;
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

// Round to nearest, ties to even; overflow gives inf; NaN stays NaN.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (x < 0x38800000u)                          // below 2^-14: subnormal f16 (or zero)
    return sign | uint16_t(std::nearbyint(std::bit_cast<float>(x) * 0x1p24f));
  return sign | uint16_t((x + 0xfffu + ((x >> 13) & 1u) - 0x38000000u) >> 13);
}

// --- Views (non-owning: e.g. over an mmap'd checkpoint) and owning weights ------------------
struct Q8Ref {
  const int8_t* q;         // [out, in]
  const float* scale;      // [out]
  const int32_t* row_sum;  // [out]
  int64_t out, in;
};

struct Q4Ref {
  const uint8_t* qs;      // [out, in / 2]
  const uint16_t* scale;  // [out, in / 32], f16 bits
  int64_t out, in;
};

struct Q8Weight {
  int64_t out = 0, in = 0;
  AlignedBuffer q, scale, row_sum;

  Q8Ref ref() const {
    return {reinterpret_cast<const int8_t*>(q.data()), reinterpret_cast<const float*>(scale.data()),
            reinterpret_cast<const int32_t*>(row_sum.data()), out, in};
  }
  int8_t* q_data() { return reinterpret_cast<int8_t*>(q.data()); }
  float* scale_data() { return reinterpret_cast<float*>(scale.data()); }
  int32_t* row_sum_data() { return reinterpret_cast<int32_t*>(row_sum.data()); }
  size_t bytes() const { return q.size() + scale.size() + row_sum.size(); }  // all arrays
};

struct Q4Weight {
  int64_t out = 0, in = 0;
  AlignedBuffer qs, scale;

  Q4Ref ref() const {
    return {reinterpret_cast<const uint8_t*>(qs.data()), reinterpret_cast<const uint16_t*>(scale.data()), out, in};
  }
  uint8_t* qs_data() { return reinterpret_cast<uint8_t*>(qs.data()); }
  uint16_t* scale_data() { return reinterpret_cast<uint16_t*>(scale.data()); }
  size_t bytes() const { return qs.size() + scale.size(); }
};

// Quantize W [out, in] (f32, row-major). Throw Error naming the shape when it is not allowed
// (out < 1, in out of range, Q4: in % 32 != 0) or a weight is not finite.
Q8Weight quantize_q8(const float* w, int64_t out, int64_t in);
Q4Weight quantize_q4(const float* w, int64_t out, int64_t in);
// dst [out, in] f32.
void dequantize_q8(const Q8Ref& w, float* dst);
void dequantize_q4(const Q4Ref& w, float* dst);

// One activation row: q[0..n) = int8 values in [-127, 127]; returns the scale sx (see above).
float quantize_activation_row(const float* x, int64_t n, int8_t* q);

// y[r * ldy + o] = (x[r * ldx + :] · W[o, :]) for r < rows, o < out (y overwritten).
// rows >= 0, ldx >= in, ldy >= out; shapes are checked (Error naming them), data is not.
void gemm_q8(int64_t rows, const float* x, int64_t ldx, const Q8Ref& w, float* y, int64_t ldy);
void gemm_q4(int64_t rows, const float* x, int64_t ldx, const Q4Ref& w, float* y, int64_t ldy);
inline void gemm_q8(int64_t rows, const float* x, int64_t ldx, const Q8Weight& w, float* y, int64_t ldy) {
  gemm_q8(rows, x, ldx, w.ref(), y, ldy);
}
inline void gemm_q4(int64_t rows, const float* x, int64_t ldx, const Q4Weight& w, float* y, int64_t ldy) {
  gemm_q4(rows, x, ldx, w.ref(), y, ldy);
}

// --- Kernel path selection ------------------------------------------------------------------
// Chosen at runtime: the best the CPU supports (avx512_vnni > avx2 > scalar), unless the
// environment variable MOGE_QUANT_KERNEL=scalar|avx2|avx512_vnni|auto says otherwise (read at
// first use; an unknown or unsupported value throws Error naming the variable), or
// set_quant_kernel() overrides both (tests force `scalar`, the reference).
enum class QuantKernel { scalar, avx2, avx512_vnni };

const char* quant_kernel_name(QuantKernel k);  // "scalar", "avx2", "avx512_vnni"
const char* quant_kernel_name();               // the path gemm_q8 / gemm_q4 run now
QuantKernel quant_kernel();
bool quant_kernel_supported(QuantKernel k);    // by this CPU
void set_quant_kernel(QuantKernel k);          // throws Error when the CPU lacks it
void reset_quant_kernel();                     // back to the automatic choice (env, then best)

// --- Internals shared by quant*.cpp (not an API) --------------------------------------------
namespace detail {

// Activations prepared for one path. Q8: x[r * ldx + k], int8 qx (scalar, avx2) or u8 qx + 128
// (avx512_vnni), zero-padded to ldx. Q4 (SIMD paths): per group of G blocks (G·32 values, G·32
// bytes) first the low halves (elements 0..15) of blocks 0..G-1, then their high halves
// (16..31), missing blocks of a last partial group zero; corr[r * ldc + 4G·g + 4j] = -8·Σ qx over
// block j of group g (other lanes 0). Scalar Q4 uses x in natural order.
struct QuantActs {
  int64_t rows;
  const int8_t* x;
  int64_t ldx;
  const int32_t* corr;
  int64_t ldc;
  const float* scale;  // sx [rows]
};

// The decode kernels (one weight row after the other: one sequential stream a thread) prefetch
// the weights this many bytes ahead of the row they read. The hardware prefetchers alone kept
// the Emerald Rapids VM at 55-58% (q4), 71-79% (q8) and 61-64% (bf16) of the read probe; 4 KiB
// ahead reached 81-97% (bench/quant_gemv, probe and kernel alternated; 2 KiB helped bf16 less,
// 8 KiB no more).
constexpr int64_t kDecodePrefetchBytes = 4096;

// The decode kernels' prefetch of p + kDecodePrefetchBytes, into L2 (prefetcht1), not L1: an L1
// prefetch holds one of the core's few L1 miss buffers until its line arrives, which capped the
// lines in flight; L2 tracks many more. On the same VM (probe and kernel alternated in one
// process, medians of 30-40 sweeps) q8 at 2 threads went from 82-87% to 88-92% of the read
// probe ([1024, 2048]), at 1 thread from 81-95% to 88-101%, the bf16 GEMV's single stream
// ([2048, 1024], 2 threads) from 87% to 90%; q4 and the 4-stream bf16 rows did not change.
// Not everywhere: in one slow spell of the VM (15 GB/s for 2 threads) T0 read 5 points more at
// 2 threads.
inline void prefetch_decode(const void* p) {
  __builtin_prefetch(static_cast<const char*>(p) + kDecodePrefetchBytes, 0, 2);  // locality 2: prefetcht1
}

// Activations prepared for one path (q8 or q4, per the layout above), owning their buffers.
struct PreparedActs {
  std::vector<int8_t> x, tmp;
  std::vector<int32_t> corr;
  std::vector<float> scale;
  QuantActs acts{};
};
void prepare_q8(QuantKernel k, int64_t rows, const float* x, int64_t ldx, int64_t in, PreparedActs& p);
void prepare_q4(QuantKernel k, int64_t rows, const float* x, int64_t ldx, int64_t in, PreparedActs& p);

// Each computes y for output rows [o_begin, o_end) and all activation rows.
using Q8RangeFn = void (*)(const QuantActs&, const Q8Ref&, int64_t, int64_t, float*, int64_t);
using Q4RangeFn = void (*)(const QuantActs&, const Q4Ref&, int64_t, int64_t, float*, int64_t);
Q8RangeFn q8_range_fn(QuantKernel k);
Q4RangeFn q4_range_fn(QuantKernel k);
void gemm_q8_scalar(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);
void gemm_q4_scalar(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);
void gemm_q8_avx2(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);
void gemm_q4_avx2(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);
void gemm_q8_avx512(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);
void gemm_q4_avx512(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy);

}  // namespace detail
}  // namespace moge::kernels
