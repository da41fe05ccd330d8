#pragma once
// Decode GEMV over bf16 weights: y[r, o] = Σ_k x[r, k] · W[o, k] for a handful of activation
// rows, with x already rounded to bf16 (the rounding oneDNN's bf16 matmul applies too), f32
// products and sums. oneDNN's bf16 path at one row read 81% of the bandwidth and takes one
// fork/join per matrix; this kernel runs on a range of output rows, so linear_group (weight.h)
// can give every thread one share of all of a layer's expert matrices.
#include <cstdint>

#include "moge/core/dtype.h"

namespace moge::kernels {

// The most activation rows run as a GEMV (decode, small batches): by the bf16 GEMV (more rows:
// oneDNN's GEMM) and in linear_group's one team (weight.h).
constexpr int64_t kGemvMaxRows = 4;

// AVX-512 BF16 (vdpbf16ps) on this CPU, and not switched off by MOGE_BF16_GEMV=onednn.
bool gemv_bf16_supported();

// y[r * ldy + o] for r < rows, o in [o_begin, o_end); W [out, in] with row stride ldw.
// The AVX-512 kernel sums lane-parallel, so it equals the scalar reference only to f32 rounding.
void gemv_bf16(int64_t rows, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in, int64_t o_begin,
               int64_t o_end, float* y, int64_t ldy);
// The reference: k ascending, one f32 accumulator.
void gemv_bf16_scalar(int64_t rows, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int64_t in,
                      int64_t o_begin, int64_t o_end, float* y, int64_t ldy);

}  // namespace moge::kernels
