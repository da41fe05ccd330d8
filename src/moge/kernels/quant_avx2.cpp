// AVX2 (+FMA, F16C) twins of the scalar reference kernels in quant.cpp (formats: quant.h), for
// CPUs without AVX-512 VNNI. No vpdpbusd: u8·s8 products go through vpmaddubsw (pairs to i16)
// and vpmaddwd by ones (to i32).
#include <immintrin.h>

#include <cstring>

#include "moge/kernels/quant.h"

#define MOGE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace moge::kernels::detail {

namespace {

// Q8: Σ qx·q = Σ |q| · sign(qx, q): vpmaddubsw(u8 |q|, s8 ±qx) pairs stay within i16 because
// |qx|, |q| <= 127 (2·127·127 = 32258).
template <int R, int NO>
MOGE_AVX2 void q8_tile(const QuantActs& a, int64_t r0, const Q8Ref& w, int64_t o0, float* y, int64_t ldy) {
  const int64_t in = w.in;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][NO];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < NO; ++o) acc[r][o] = _mm256_setzero_si256();
  const int8_t* wp[NO];
  for (int o = 0; o < NO; ++o) wp[o] = w.q + (o0 + o) * in;
  const int8_t* xp = a.x + r0 * a.ldx;
  int64_t k = 0;
  for (; k + 32 <= in; k += 32) {
    __m256i wv[NO], wa[NO];
    for (int o = 0; o < NO; ++o) {
      wv[o] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp[o] + k));
      wa[o] = _mm256_abs_epi8(wv[o]);
    }
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + r * a.ldx + k));
      for (int o = 0; o < NO; ++o) {
        const __m256i p = _mm256_maddubs_epi16(wa[o], _mm256_sign_epi8(xv, wv[o]));
        acc[r][o] = _mm256_add_epi32(acc[r][o], _mm256_madd_epi16(p, ones));
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < NO; ++o) {
      const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(acc[r][o]), _mm256_extracti128_si256(acc[r][o], 1));
      const __m128i s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      const __m128i s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xb1));
      int32_t s = _mm_cvtsi128_si32(s1);
      const int8_t* xr = xp + r * a.ldx;
      for (int64_t t = k; t < in; ++t) s += int32_t(xr[t]) * int32_t(wp[o][t]);  // tail < 32
      y[(r0 + r) * ldy + o0 + o] = float(s) * (a.scale[r0 + r] * w.scale[o0 + o]);
    }
}

MOGE_AVX2 inline __m256i dot_u8s8(__m256i u, __m256i s, __m256i ones) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones);
}

// Q4: per group of 2 blocks (64 weights = 32 packed bytes): low nibbles = elements 0..15 of
// blocks 0, 1; high nibbles = 16..31; int32 lanes 0..3 block 0, 4..7 block 1. A last single
// block (odd block count) is one 16-byte load: lanes 0..3 its low half, 4..7 its high half.
template <int R, int NO>
MOGE_AVX2 void q4_tile(const QuantActs& a, int64_t r0, const Q4Ref& w, int64_t o0, float* y, int64_t ldy) {
  const int64_t nb = w.in / 32, full = nb / 2;
  const bool odd = nb % 2;
  const __m256i nib = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const __m256i spread = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  __m256 acc[R][NO];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < NO; ++o) acc[r][o] = _mm256_setzero_ps();
  const uint8_t* wp[NO];
  const uint16_t* sp[NO];
  for (int o = 0; o < NO; ++o) {
    wp[o] = w.qs + (o0 + o) * (w.in / 2);
    sp[o] = w.scale + (o0 + o) * nb;
  }
  const int8_t* xp = a.x + r0 * a.ldx;
  const int32_t* cp = a.corr + r0 * a.ldc;
  for (int64_t g = 0; g < full; ++g) {
    __m256i lo[NO], hi[NO];
    __m256 d[NO];
    for (int o = 0; o < NO; ++o) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp[o] + g * 32));
      lo[o] = _mm256_and_si256(v, nib);
      hi[o] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
      int32_t h2;
      std::memcpy(&h2, sp[o] + g * 2, 4);
      d[o] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(h2))), spread);
    }
    for (int r = 0; r < R; ++r) {
      const int8_t* xg = xp + r * a.ldx + g * 64;
      const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg));
      const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + 32));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp + r * a.ldc + g * 8));
      for (int o = 0; o < NO; ++o) {
        const __m256i s = _mm256_add_epi32(_mm256_add_epi32(c, dot_u8s8(lo[o], xlo, ones)), dot_u8s8(hi[o], xhi, ones));
        acc[r][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d[o], acc[r][o]);
      }
    }
  }
  if (odd) {
    const int64_t g = full;
    __m256i wv[NO];
    __m256 d[NO];
    for (int o = 0; o < NO; ++o) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp[o] + g * 32));
      const __m128i n = _mm256_castsi256_si128(nib);
      wv[o] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), n), _mm_and_si128(v, n));
      d[o] = _mm256_set1_ps(f16_to_f32(sp[o][g * 2]));
    }
    for (int r = 0; r < R; ++r) {
      const int8_t* xg = xp + r * a.ldx + g * 64;
      const __m256i xv = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xg + 32)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(xg)));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp + r * a.ldc + g * 8));
      for (int o = 0; o < NO; ++o) {
        const __m256i s = _mm256_add_epi32(c, dot_u8s8(wv[o], xv, ones));
        acc[r][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d[o], acc[r][o]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < NO; ++o) {
      const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[r][o]), _mm256_extractf128_ps(acc[r][o], 1));
      const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
      const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
      y[(r0 + r) * ldy + o0 + o] = a.scale[r0 + r] * _mm_cvtss_f32(s1);
    }
}

template <int R, int NO>
struct Q8K {
  MOGE_AVX2 static void run(const QuantActs& a, int64_t r0, const Q8Ref& w, int64_t o0, float* y, int64_t ldy) {
    q8_tile<R, NO>(a, r0, w, o0, y, ldy);
  }
};
template <int R, int NO>
struct Q4K {
  MOGE_AVX2 static void run(const QuantActs& a, int64_t r0, const Q4Ref& w, int64_t o0, float* y, int64_t ldy) {
    q4_tile<R, NO>(a, r0, w, o0, y, ldy);
  }
};

// Output tiles of NO rows outer, row chunks of up to 2 (16 ymm registers) inner.
template <template <int, int> class K, int NO, class W>
MOGE_AVX2 void run_rows(const QuantActs& a, const W& w, int64_t o0, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 2 <= a.rows; r += 2) K<2, NO>::run(a, r, w, o0, y, ldy);
  if (r < a.rows) K<1, NO>::run(a, r, w, o0, y, ldy);
}

// Few rows: one output row at a time, so each thread's weights are one sequential stream (see
// quant_avx512.cpp: side-by-side weight rows are short streams that DRAM serves much slower).
// More rows: pairs of output rows, each activation vector then serves two.
template <template <int, int> class K, class W>
MOGE_AVX2 void run_outputs(const QuantActs& a, const W& w, int64_t o_begin, int64_t o_end, float* y, int64_t ldy) {
  int64_t o = o_begin;
  if (a.rows > 4)
    for (; o + 2 <= o_end; o += 2) run_rows<K, 2>(a, w, o, y, ldy);
  for (; o < o_end; ++o) run_rows<K, 1>(a, w, o, y, ldy);
}

}  // namespace

MOGE_AVX2 void gemm_q8_avx2(const QuantActs& a, const Q8Ref& w, int64_t o_begin, int64_t o_end, float* y,
                            int64_t ldy) {
  run_outputs<Q8K>(a, w, o_begin, o_end, y, ldy);
}

MOGE_AVX2 void gemm_q4_avx2(const QuantActs& a, const Q4Ref& w, int64_t o_begin, int64_t o_end, float* y,
                            int64_t ldy) {
  run_outputs<Q4K>(a, w, o_begin, o_end, y, ldy);
}

}  // namespace moge::kernels::detail
