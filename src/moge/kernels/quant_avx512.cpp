// AVX-512 VNNI twins of the scalar reference kernels in quant.cpp (formats: quant.h).
// Compiled for any target: only these functions carry the AVX-512 target attribute, and the
// dispatcher calls them only when the CPU has the features.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some results from _mm512_undefined_*() (reduce_add, cast128 to
// 512) and then warn about them: not a defect of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "moge/kernels/quant.h"

#define MOGE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

namespace moge::kernels::detail {

namespace {

// acc += u8 · s8 (vpdpbusd). Inline asm: with the GCC 12 intrinsic, accumulators kept in arrays
// got register copies around every instruction (rows = 4 ran 2x slower). Zen 4 retires one
// 512-bit vpdpbusd a cycle.
MOGE_AVX512 inline __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}

// Σ of the 16 int32 lanes, wrapping mod 2^32 (GCC's _mm512_reduce_add_epi32 adds as signed
// int, which overflow makes undefined; the offset trick below relies on the wrap).
MOGE_AVX512 inline uint32_t reduce_add_wrapping(__m512i v) {
  __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
  return uint32_t(_mm_cvtsi128_si32(t));
}

// Tiles: R activation rows × NO output rows, U independent accumulators along `in`.
//  - rows <= 4 (decode): NO = 1. Each thread then walks its output rows one after the other,
//    so the weights are ONE sequential stream: measured on Zen 4, 24.7 GB/s on one core, against
//    13 GB/s when 4 weight rows are read side by side (4 short streams, with or without
//    software prefetch). ILP comes from U accumulators along `in`. On Intel (Emerald Rapids)
//    that stream still needs a software prefetch kDecodePrefetchBytes ahead (quant.h) to get
//    near the read bandwidth; with it, the streams of Q4 (nibbles, scales) no longer limit it.
//  - rows > 4: compute-bound (1 vpdpbusd per cycle); NO = 4 (Q8) / 2 (Q4) reuses every
//    activation vector from a register NO times instead of reloading it (16 rows × 2 KiB of
//    activations do not fit L1 next to the weights). NO rows side by side are NO short streams,
//    which the hardware prefetchers serve poorly (1 core: 11.9 GB/s for 4 streams); the first
//    row chunk therefore prefetches, into L2, the tile after next LINEARLY, one line per line
//    consumed (18.6 GB/s in the same test; the T0 hint or the next tile gave less).

// Q8: acc[o][r] += (qx + 128) · q over U·64 weights a step, masked tail.
template <int R, int NO, int U>
MOGE_AVX512 void q8_tile(const QuantActs& a, int64_t r0, const Q8Ref& w, int64_t o0, float* y, int64_t ldy) {
  const int64_t in = w.in;
  __m512i acc[NO][R][U];
  for (int o = 0; o < NO; ++o)
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) acc[o][r][u] = _mm512_setzero_si512();
  const int8_t* wp = w.q + o0 * in;
  const int8_t* xp = a.x + r0 * a.ldx;
  const bool prefetch = NO > 1 && r0 == 0;
  const char* pf = reinterpret_cast<const char*>(wp + 2 * NO * in);  // the tile after next
  int64_t k = 0;
  for (; k + 64 * U <= in; k += 64 * U)
    for (int u = 0; u < U; ++u) {
      __m512i wv[NO];
      for (int o = 0; o < NO; ++o) wv[o] = _mm512_loadu_si512(wp + o * in + k + 64 * u);
      if (NO == 1) prefetch_decode(wp + k + 64 * u);
      if (prefetch)
        for (int o = 0; o < NO; ++o) _mm_prefetch(pf + (k + 64 * u) * NO + 64 * o, _MM_HINT_T1);
      for (int r = 0; r < R; ++r) {
        const __m512i xv = _mm512_loadu_si512(xp + r * a.ldx + k + 64 * u);
        for (int o = 0; o < NO; ++o) acc[o][r][u] = dpbusd(acc[o][r][u], xv, wv[o]);
      }
    }
  for (; k < in; k += 64) {  // rest: whole vectors, then a masked tail (x is zero-padded to ldx)
    const __mmask64 m = in - k >= 64 ? ~__mmask64(0) : _cvtu64_mask64(~0ull >> (64 - (in - k)));
    __m512i wv[NO];
    for (int o = 0; o < NO; ++o) wv[o] = _mm512_maskz_loadu_epi8(m, wp + o * in + k);
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_loadu_si512(xp + r * a.ldx + k);
      for (int o = 0; o < NO; ++o) acc[o][r][0] = dpbusd(acc[o][r][0], xv, wv[o]);
    }
  }
  for (int o = 0; o < NO; ++o)
    for (int r = 0; r < R; ++r) {
      __m512i t = acc[o][r][0];
      for (int u = 1; u < U; ++u) t = _mm512_add_epi32(t, acc[o][r][u]);
      // Σ (qx + 128)·q − 128·Σ q = Σ qx·q; wrap-around int32 arithmetic makes it exact.
      const uint32_t s = reduce_add_wrapping(t) - 128u * uint32_t(w.row_sum[o0 + o]);
      y[(r0 + r) * ldy + o0 + o] = float(int32_t(s)) * (a.scale[r0 + r] * w.scale[o0 + o]);
    }
}

// Q4: per group of 4 blocks (128 weights = 64 packed bytes): low nibbles = elements 0..15 of
// blocks 0..3, high nibbles = elements 16..31; int32 lanes 4j..4j+3 belong to block j.
MOGE_AVX512 inline void q4_load_group(const uint8_t* qs, const uint16_t* sc, int64_t nblocks, __m512i& lo,
                                      __m512i& hi, __m512& d) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512i v;
  __m128i h;
  if (nblocks == 4) {
    v = _mm512_loadu_si512(qs);
    h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc));
  } else {  // a last partial group: zeros beyond (the activations and corrections are zero too)
    v = _mm512_maskz_loadu_epi8(_cvtu64_mask64(~0ull >> (64 - 16 * nblocks)), qs);
    h = _mm_maskz_loadu_epi16(__mmask8((1u << nblocks) - 1), sc);
  }
  lo = _mm512_and_si512(v, nib);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
  d = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_cvtph_ps(h)));
}

// acc[o][r] += d · float(corr + Σ nibble · qx) for group g of NO weight rows and R activation rows.
template <int R, int NO>
MOGE_AVX512 inline void q4_group(const QuantActs& a, const int8_t* xp, const int32_t* cp, int64_t g,
                                 const uint8_t* const (&wp)[NO], const uint16_t* const (&sp)[NO], int64_t nblocks,
                                 bool prefetch, __m512 (&acc)[NO][R]) {
  if (NO > 1 && prefetch) {  // as in q8_tile: the tile after next, linearly; its scales too
    const int64_t nb = a.ldc / 4;  // blocks a row (rounded up to whole groups; over-prefetch is harmless)
    const char* pf = reinterpret_cast<const char*>(wp[0] + 2 * NO * 16 * nb);
    for (int o = 0; o < NO; ++o) _mm_prefetch(pf + g * 64 * NO + 64 * o, _MM_HINT_T1);
    if (g * 64 < NO * nb * 2) _mm_prefetch(reinterpret_cast<const char*>(sp[0] + 2 * NO * nb) + g * 64, _MM_HINT_T1);
  }
  if (NO == 1) {  // kDecodePrefetchBytes ahead in the nibbles, and as many blocks ahead in the scales
    prefetch_decode(wp[0] + g * 64);
    if (g % 8 == 0) _mm_prefetch(reinterpret_cast<const char*>(sp[0] + g * 4) + kDecodePrefetchBytes / 8, _MM_HINT_T1);
  }
  __m512i lo[NO], hi[NO];
  __m512 d[NO];
  for (int o = 0; o < NO; ++o) q4_load_group(wp[o] + g * 64, sp[o] + g * 4, nblocks, lo[o], hi[o], d[o]);
  for (int r = 0; r < R; ++r) {
    const int8_t* xg = xp + r * a.ldx + g * 128;
    const __m512i xlo = _mm512_loadu_si512(xg), xhi = _mm512_loadu_si512(xg + 64);
    const __m512i c = _mm512_loadu_si512(cp + r * a.ldc + g * 16);  // -8·Σ qx per block
    for (int o = 0; o < NO; ++o) {
      const __m512i s = dpbusd(dpbusd(c, lo[o], xlo), hi[o], xhi);
      acc[o][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d[o], acc[o][r]);
    }
  }
}

template <int R, int NO, int U>
MOGE_AVX512 void q4_tile(const QuantActs& a, int64_t r0, const Q4Ref& w, int64_t o0, float* y, int64_t ldy) {
  const int64_t nb = w.in / 32, full = nb / 4, rem = nb % 4;
  __m512 acc[U][NO][R];
  for (int u = 0; u < U; ++u)
    for (int o = 0; o < NO; ++o)
      for (int r = 0; r < R; ++r) acc[u][o][r] = _mm512_setzero_ps();
  const uint8_t* wp[NO];
  const uint16_t* sp[NO];
  for (int o = 0; o < NO; ++o) {
    wp[o] = w.qs + (o0 + o) * (w.in / 2);
    sp[o] = w.scale + (o0 + o) * nb;
  }
  const int8_t* xp = a.x + r0 * a.ldx;
  const int32_t* cp = a.corr + r0 * a.ldc;
  const bool pf = r0 == 0;
  int64_t g = 0;
  for (; g + U <= full; g += U)
    for (int u = 0; u < U; ++u) q4_group<R, NO>(a, xp, cp, g + u, wp, sp, 4, pf, acc[u]);
  for (; g < full; ++g) q4_group<R, NO>(a, xp, cp, g, wp, sp, 4, pf, acc[0]);
  if (rem) q4_group<R, NO>(a, xp, cp, full, wp, sp, rem, pf, acc[0]);
  for (int o = 0; o < NO; ++o)
    for (int r = 0; r < R; ++r) {
      __m512 t = acc[0][o][r];
      for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[u][o][r]);
      y[(r0 + r) * ldy + o0 + o] = a.scale[r0 + r] * _mm512_reduce_add_ps(t);
    }
}

// Row chunks of up to 4 activation rows over one tile of NO output rows (its weights stay in L1
// while the chunks pass over them).
template <template <int, int, int> class K, int NO, int U, class W>
MOGE_AVX512 void row_chunks(const QuantActs& a, const W& w, int64_t o0, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= a.rows; r += 4) K<4, NO, U>::run(a, r, w, o0, y, ldy);
  switch (a.rows - r) {
    case 1: K<1, NO, U>::run(a, r, w, o0, y, ldy); break;
    case 2: K<2, NO, U>::run(a, r, w, o0, y, ldy); break;
    case 3: K<3, NO, U>::run(a, r, w, o0, y, ldy); break;
    default: break;
  }
}

template <int R, int NO, int U>
struct Q8K {
  MOGE_AVX512 static void run(const QuantActs& a, int64_t r0, const Q8Ref& w, int64_t o0, float* y, int64_t ldy) {
    q8_tile<R, NO, U>(a, r0, w, o0, y, ldy);
  }
};
template <int R, int NO, int U>
struct Q4K {
  MOGE_AVX512 static void run(const QuantActs& a, int64_t r0, const Q4Ref& w, int64_t o0, float* y, int64_t ldy) {
    q4_tile<R, NO, U>(a, r0, w, o0, y, ldy);
  }
};

}  // namespace

MOGE_AVX512 void gemm_q8_avx512(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y,
                                int64_t ldy) {
  int64_t o = o_begin;
  if (a.rows > 4)
    for (; o + 4 <= o_end; o += 4) row_chunks<Q8K, 4, 1>(a, w, o, y, ldy);
  for (; o < o_end; ++o) row_chunks<Q8K, 1, 4>(a, w, o, y, ldy);
}

MOGE_AVX512 void gemm_q4_avx512(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y,
                                int64_t ldy) {
  int64_t o = o_begin;
  if (a.rows > 4)
    for (; o + 2 <= o_end; o += 2) row_chunks<Q4K, 2, 1>(a, w, o, y, ldy);
  for (; o < o_end; ++o) {
    if (a.rows == 1) Q4K<1, 1, 4>::run(a, 0, w, o, y, ldy);
    else row_chunks<Q4K, 1, 2>(a, w, o, y, ldy);
  }
}

}  // namespace moge::kernels::detail
