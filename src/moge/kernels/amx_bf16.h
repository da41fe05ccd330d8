#pragma once
// A bf16 GEMM on AMX tiles whose time is linear in the rows: y[m, n] = x[m, k] · Wᵀ, x f32
// (rounded to bf16 like every bf16 product), W bf16 [n, k] packed once into tiles (below),
// accumulation f32.
//
// Why not oneDNN: its AMX kernel picks a row block that divides m, and its speed depends on the
// block: 5.3 to 6.4 µs a row for an expert's three products (d 1024, f 512, one thread) at row
// counts 16 apart, 10-17 µs for some (matmul.cpp: padded_row_count); and it copies W into its
// tile layout on every call (~35 µs a matrix). With expert parallelism MoGE gives every device
// the same number of token-expert pairs but not the same split over its experts, so a device's
// time followed how its pairs fell on row counts: at D = 8 (4 experts a device) that put the
// slowest device 4-8% over the mean. Here a product runs in steps of 16 rows of one kernel: an
// expert's time is its rows rounded up to 16 times a constant, plus a small fixed part.
//
// Tile layout of W (amx_pack_weight): tile (nb, kb), for nb < n/16 and kb < k/32, is 512 bf16 at
// (nb · k/32 + kb) · 512: its row i holds W[16 nb + j][32 kb + 2i] and W[16 nb + j][32 kb + 2i + 1]
// for j = 0..15 (AMX's "VNNI" pairs), the B operand of TDPBF16PS as it is loaded.
#include <cstdint>

#include "moge/core/dtype.h"

namespace moge::kernels {

// The CPU has AMX-TILE, AMX-BF16 and AVX512-BF16, and Linux granted this process the tile state.
bool amx_bf16_available();
// Shapes the kernel takes: n and k multiples of 32.
inline bool amx_bf16_fits(int64_t n, int64_t k) { return n > 0 && k > 0 && n % 32 == 0 && k % 32 == 0; }

// W [n, k] (ldw elements between rows) into the tile layout above; `tiles` holds n · k values.
// Needs amx_bf16_available() and amx_bf16_fits(n, k).
void amx_pack_weight(int64_t n, int64_t k, const bf16* w, int64_t ldw, bf16* tiles);

// y[m, n] = x[m, k] · Wᵀ, W as packed by amx_pack_weight (overwrites y). Runs on the OpenMP team
// when it has more than one thread and m is above 16, split over blocks of 32 columns of y
// (every element's sum is the same either way).
void amx_linear_bf16(int64_t m, const float* x, int64_t n, int64_t k, const bf16* tiles, float* y);

}  // namespace moge::kernels
