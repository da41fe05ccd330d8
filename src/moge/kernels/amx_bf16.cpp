// AMX bf16 GEMM (amx_bf16.h). Only the functions that use AMX or AVX-512 carry the target
// attribute, and they run only where amx_bf16_available().
#include "moge/kernels/amx_bf16.h"

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#define MOGE_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))
#define MOGE_AMX_INLINE MOGE_AMX __attribute__((always_inline)) inline

namespace moge::kernels {
namespace {

// Linux keeps AMX's 8 KB tile state off until a process asks for it (arch_prctl).
constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;

bool cpu_has_amx_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = d & (1u << 24), amx_bf16 = d & (1u << 22);
  return tile && amx_bf16 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
}

// Tile registers 0-3 accumulate C (2 x 2 blocks of 16 x 16 f32), 4-5 hold x (16 rows x 32 bf16
// each), 6-7 hold W (16 k-pairs x 16 columns x 2). All are 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
constexpr TileConfig eight_full_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  return cfg;
}
// At namespace scope: built in a local, GCC 12 dropped the stores that LDTILECFG reads.
constexpr TileConfig kTileConfig = eight_full_tiles();

MOGE_AMX void load_tile_config() { _tile_loadconfig(&kTileConfig); }
MOGE_AMX void release_tiles() { _tile_release(); }

// GCC 12 warns that the intrinsics' own _mm512_undefined_epi32() "may be used uninitialized"
// once they are inlined here (a false positive: those lanes are never read).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Transposes the 16 x 16 block of 32-bit elements held in r[0..15] (its rows), in place.
MOGE_AMX_INLINE void transpose16(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // b[4i + q], 128-bit lane L: rows 4i..4i+3 of column 4L + q.
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int q = 0; q < 4; ++q) {
    const __m512i s0 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0x88), s1 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0xDD);
    const __m512i s2 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0x88);
    const __m512i s3 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0xDD);
    r[q] = _mm512_shuffle_i32x4(s0, s2, 0x88);
    r[4 + q] = _mm512_shuffle_i32x4(s1, s3, 0x88);
    r[8 + q] = _mm512_shuffle_i32x4(s0, s2, 0xDD);
    r[12 + q] = _mm512_shuffle_i32x4(s1, s3, 0xDD);
  }
}
#pragma GCC diagnostic pop

// A pair of bf16 read as one 32-bit element: 16 rows of W at one k-pair column are a column of
// dwords, and the tile wants them as a row, so each 16 x 16 dword block is transposed.
MOGE_AMX void pack_tiles(int64_t n, int64_t k, const bf16* w, int64_t ldw, bf16* tiles) {
  const int64_t kbs = k / 32;
  for (int64_t nb = 0; nb < n / 16; ++nb)
    for (int64_t kb = 0; kb < kbs; ++kb) {
      __m512i r[16];
      for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_si512(w + (nb * 16 + j) * ldw + kb * 32);
      transpose16(r);
      bf16* tile = tiles + (nb * kbs + kb) * 512;
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(tile + i * 32, r[i]);
    }
}

// Rows [r0, r1) of x as bf16 (round to nearest even), into xb with row stride k.
MOGE_AMX void to_bf16_rows(const float* x, int64_t k, int64_t r0, int64_t r1, bf16* xb) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < k; c += 32) {
      const float* s = x + r * k + c;
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s));
      _mm512_storeu_si512(xb + r * k + c, (__m512i)v);
    }
}

// C tiles 2·pair and 2·pair + 1 (16 rows, columns 0-15 and 16-31 of a column block) into
// `rows` rows of y: a whole block straight into y, the last partial one through scratch. (The
// tile is named in the instruction's text, so it cannot be a parameter: `pair` picks it.)
MOGE_AMX_INLINE void store_rows(int pair, float* y, int64_t n, int64_t rows) {
  alignas(64) float part[2][16 * 16];
  const bool whole = rows == 16;
  float* left = whole ? y : part[0];
  float* right = whole ? y + 16 : part[1];
  const int64_t stride = whole ? n * int64_t(sizeof(float)) : 64;
  if (pair == 0) {
    _tile_stored(0, left, stride);
    _tile_stored(1, right, stride);
  } else {
    _tile_stored(2, left, stride);
    _tile_stored(3, right, stride);
  }
  if (whole) return;
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(y + i * n, part[0] + i * 16, 64);
    std::memcpy(y + i * n + 16, part[1] + i * 16, 64);
  }
}

// Columns [32 cb, 32 cb + 32) of y, every block of 32 rows of x against two column tiles of W.
// xb holds x in bf16 rounded up to 16 rows (zeros after m).
MOGE_AMX void column_block(int64_t m, int64_t n, int64_t k, const bf16* xb, const bf16* tiles, int64_t cb,
                           float* y) {
  const int64_t kbs = k / 32, x_stride = k * int64_t(sizeof(bf16));
  const bf16* w0 = tiles + (2 * cb) * kbs * 512;
  const bf16* w1 = w0 + kbs * 512;
  for (int64_t r = 0; r < m; r += 32) {
    const bool two = r + 16 < m;
    const bf16* x0 = xb + r * k;
    const bf16* x1 = x0 + 16 * k;
    _tile_zero(0);
    _tile_zero(1);
    if (two) {
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t kb = 0; kb < kbs; ++kb) {
        _tile_loadd(4, x0 + kb * 32, x_stride);
        _tile_loadd(5, x1 + kb * 32, x_stride);
        _tile_loadd(6, w0 + kb * 512, 64);
        _tile_loadd(7, w1 + kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    } else {
      for (int64_t kb = 0; kb < kbs; ++kb) {
        _tile_loadd(4, x0 + kb * 32, x_stride);
        _tile_loadd(6, w0 + kb * 512, 64);
        _tile_loadd(7, w1 + kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
    }
    float* y0 = y + r * n + cb * 32;
    store_rows(0, y0, n, std::min<int64_t>(16, m - r));
    if (two) store_rows(1, y0 + 16 * n, n, std::min<int64_t>(16, m - r - 16));
  }
}

}  // namespace

bool amx_bf16_available() {
  static const bool ok = cpu_has_amx_bf16() && syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return ok;
}

void amx_pack_weight(int64_t n, int64_t k, const bf16* w, int64_t ldw, bf16* tiles) { pack_tiles(n, k, w, ldw, tiles); }

void amx_linear_bf16(int64_t m, const float* x, int64_t n, int64_t k, const bf16* tiles, float* y) {
  if (m == 0) return;
  const int64_t padded = (m + 15) / 16 * 16;
  thread_local std::vector<bf16> xb_buffer;
  xb_buffer.resize(size_t(padded * k));
  bf16* xb = xb_buffer.data();
  std::memset(static_cast<void*>(xb + m * k), 0, size_t((padded - m) * k) * sizeof(bf16));
  // A team only for more than one tile of rows: at decode a fork/join costs more than the product.
#pragma omp parallel if (m > 16 && omp_get_max_threads() > 1 && !omp_in_parallel())
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    to_bf16_rows(x, k, m * t / nt, m * (t + 1) / nt, xb);
#pragma omp barrier
    load_tile_config();
#pragma omp for schedule(static)
    for (int64_t cb = 0; cb < n / 32; ++cb) column_block(m, n, k, xb, tiles, cb, y);
    release_tiles();
  }
}

}  // namespace moge::kernels
