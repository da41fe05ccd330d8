// Two ways to attend, chosen by the number of new tokens alone (so training and inference agree
// bitwise on the same call):
//  - tiled (kTiledMinTokens or more tokens: prefill, training): per query head and block of
//    query rows, S = Q·Kᵀ, a causal softmax row by row in SIMD, O = P·V; the backward is the same
//    tiles in reverse (see attention_backward). Up to kSmallTileKeys keys the products run
//    through tile_gemm on blocks of kSmallBlock rows, beyond through kernels::matmul (oneDNN) on
//    blocks of kBlock rows.
//  - one row at a time (decoding a few tokens): a query against every key of the cache. Products
//    of a few rows with a key count that grows every step would create a oneDNN primitive per
//    step in the tiled form.
#include "moge/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "moge/core/buffer.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/tile_gemm.h"
#include "moge/kernels/transpose.h"
#include "moge/kernels/vmath.h"

namespace moge::kernels {
namespace {

constexpr int64_t kTiledMinTokens = 16;
// Query rows per tile: bounds the S scratch (kBlock × keys) for long prompts, and skips most of
// the masked upper triangle (3/4 of the full product is computed at T = 2 · kBlock).
constexpr int64_t kBlock = 64;
// The same for tile_gemm's tiles: smaller blocks skip more of the masked triangle (at T = 128, 19%
// of the computed product is masked against 33% with 64-row blocks), and cost no extra library calls.
constexpr int64_t kSmallBlock = 32;

// Tiles of calls with at most this many keys (training, short prompts) are products small
// enough for tile_gemm on the calling thread; beyond, kernels::matmul (oneDNN) computes them.
constexpr int64_t kSmallTileKeys = 512;
constexpr int kSmallTileHeadDim = 128;

// Strides and constants shared by the passes: rows of q/out are [H, hd], rows of k/v [kv_heads, hd].
struct Layout {
  int hd, group, kv_heads;  // group: query heads per kv head
  int64_t q_stride, kv_stride;
  float scale;

  explicit Layout(const AttentionShape& s)
      : hd(s.head_dim), group(s.heads / s.kv_heads), kv_heads(s.kv_heads), q_stride(int64_t(s.heads) * s.head_dim),
        kv_stride(int64_t(s.kv_heads) * s.head_dim), scale(1.0f / std::sqrt(float(s.head_dim))) {}

  const float* q_row(const float* base, int64_t t, int h) const { return base + t * q_stride + int64_t(h) * hd; }
  float* q_row(float* base, int64_t t, int h) const { return base + t * q_stride + int64_t(h) * hd; }
  const float* kv_row(const float* base, int64_t j, int kvh) const { return base + j * kv_stride + int64_t(kvh) * hd; }

  // Operands of the tile products: rows t0.. of head h in a [tokens, H, hd] array, rows 0.. of kv
  // head kvh in a [keys, kv_heads, hd] array.
  MatRef q_tile(const float* base, int64_t t0, int h, bool trans = false) const {
    return MatRef::f32(q_row(base, t0, h), q_stride, trans);
  }
  MatRef kv_tile(const float* base, int kvh, bool trans = false) const {
    return MatRef::f32(kv_row(base, 0, kvh), kv_stride, trans);
  }
};

// Σ a·b; the simd reduction lets GCC vectorize (a fixed order for a given build, so deterministic).
float dot(const float* a, const float* b, int n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// The causal softmax of one row of raw scores s[0 .. len-1] (scaled here), in place; s[len .. n-1],
// the masked keys, become 0. Returns the log-sum-exp of the scaled scores.
float softmax_row(float* s, int64_t len, int64_t n, float scale) {
  const float mx = scale * vmath::max(s, len);  // scale > 0
  const double sum = vmath::exp_affine(s, scale, -mx, s, len);
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < len; ++j) s[j] *= inv;
  std::fill(s + len, s + n, 0.0f);
  return mx + float(std::log(sum));
}

// --- One row at a time -------------------------------------------------------------------------

// One query row qv of head h attending keys 0 .. keys-1: writes o [hd], returns the log-sum-exp.
float attend_row(const Layout& l, const float* qv, const float* k, const float* v, int64_t keys, int h,
                 std::vector<float>& p, float* o) {
  const int kvh = h / l.group;
  p.resize(size_t(keys));
  for (int64_t j = 0; j < keys; ++j) p[size_t(j)] = dot(qv, l.kv_row(k, j, kvh), l.hd);
  const float lse = softmax_row(p.data(), keys, keys, l.scale);
  std::fill(o, o + l.hd, 0.0f);
  for (int64_t j = 0; j < keys; ++j) {
    const float w = p[size_t(j)];
    const float* vv = l.kv_row(v, j, kvh);
#pragma omp simd
    for (int i = 0; i < l.hd; ++i) o[i] += w * vv[i];
  }
  return lse;
}

void attend_rows(const Layout& l, const float* q, const float* k, const float* v, float* out, float* lse,
                 int64_t tokens, int64_t first_position, int heads) {
#pragma omp parallel
  {
    std::vector<float> p;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < tokens; ++t)
      for (int h = 0; h < heads; ++h) {
        const float log_sum =
            attend_row(l, l.q_row(q, t, h), k, v, first_position + t + 1, h, p, l.q_row(out, t, h));
        if (lse) lse[t * heads + h] = log_sum;
      }
  }
}

// --- Tiles -------------------------------------------------------------------------------------

// Whether a call whose tiles see up to `keys` keys runs them through tile_gemm.
bool small_tiles(const Layout& l, int64_t keys) { return keys <= kSmallTileKeys && l.hd <= kSmallTileHeadDim; }

// The transpose of every kv head of x [keys, kv_heads, hd]: t [kv_heads][hd][keys], so that Q·Kᵀ
// and dO·Vᵀ read B row-major in tile_gemm.
void transpose_heads(const Layout& l, const float* x, int64_t keys, std::vector<float>& t) {
  t.resize(size_t(l.kv_heads) * l.hd * keys);
  for (int kvh = 0; kvh < l.kv_heads; ++kvh)
    transpose(l.kv_row(x, 0, kvh), keys, l.hd, l.kv_stride, t.data() + size_t(kvh) * l.hd * keys, keys);
}

// C[rows, n] (+)= A · Bᵀ-or-B products of one tile through tile_gemm (small) or matmul. A and C are
// row-major views (`a`, lda; `c`, ldc); B is given both ways: `b` as a MatRef for matmul and, for
// tile_gemm, `b_rows` row-major [k, n] with ldb.
struct Product {
  bool small;
  int64_t block_rows() const { return small ? kSmallBlock : kBlock; }
  void operator()(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const MatRef& b,
                  const float* b_rows, int64_t ldb, float* c, int64_t ldc, bool accumulate = false) const {
    if (small) return tile_gemm(m, n, k, a, a_row, a_col, b_rows, ldb, c, ldc, accumulate);
    const bool a_trans = a_row == 1 && a_col != 1;
    matmul(m, n, k, MatRef::f32(a, a_trans ? a_col : a_row, a_trans), b, c, ldc, accumulate);
  }
};
// kernels::matmul is called from inside OpenMP loops: oneDNN then runs each product on the
// calling thread, and every product is computed whole by one thread, so results do not depend on
// the thread count.

// Query rows [t0, t0 + rows) against keys [0, first_position + t0 + rows): row r sees keys up to
// first_position + t0 + r.
struct Tile {
  int64_t t0, rows, keys;
  int64_t visible(int64_t r, int64_t first_position) const { return first_position + t0 + r + 1; }
};

Tile tile(int64_t block, int64_t tokens, int64_t first_position, int64_t block_rows) {
  const int64_t t0 = block * block_rows, rows = std::min(block_rows, tokens - t0);
  return {t0, rows, first_position + t0 + rows};
}

void attend_tiles(const Layout& l, const float* q, const float* k, const float* v, float* out, float* lse,
                  int64_t tokens, int64_t first_position, int heads) {
  const int64_t keys = first_position + tokens;
  const Product product{small_tiles(l, keys)};
  const int64_t block_rows = product.block_rows(), blocks = (tokens + block_rows - 1) / block_rows;
  thread_local std::vector<float> kt;  // the caller's; the team reads it through kt_data
  if (product.small) transpose_heads(l, k, keys, kt);
  const float* kt_data = kt.data();
#pragma omp parallel
  {
    thread_local std::vector<float> s;  // each thread's, kept across calls
    // Units largest first (the last block sees the most keys), for the dynamic schedule's balance.
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < blocks * heads; ++u) {
      const int h = int(u % heads), kvh = h / l.group;
      const Tile tl = tile(blocks - 1 - u / heads, tokens, first_position, block_rows);
      s.resize(size_t(tl.rows * tl.keys));
      product(tl.rows, tl.keys, l.hd, l.q_row(q, tl.t0, h), l.q_stride, 1, l.kv_tile(k, kvh, true),
              kt_data + size_t(kvh) * l.hd * keys, keys, s.data(), tl.keys);
      for (int64_t r = 0; r < tl.rows; ++r) {
        const float log_sum = softmax_row(s.data() + r * tl.keys, tl.visible(r, first_position), tl.keys, l.scale);
        if (lse) lse[(tl.t0 + r) * heads + h] = log_sum;
      }
      product(tl.rows, l.hd, tl.keys, s.data(), tl.keys, 1, l.kv_tile(v, kvh), l.kv_row(v, 0, kvh), l.kv_stride,
              l.q_row(out, tl.t0, h), l.q_stride);
    }
  }
}

void attend(const float* q, const float* k, const float* v, float* out, float* lse, int64_t tokens,
            int64_t first_position, const AttentionShape& s) {
  const Layout l(s);
  if (tokens >= kTiledMinTokens) attend_tiles(l, q, k, v, out, lse, tokens, first_position, s.heads);
  else attend_rows(l, q, k, v, out, lse, tokens, first_position, s.heads);
}

// The backward of one query head h over every block, into dq (its rows of head h) and dk_h, dv_h
// [tokens, hd], this head's shares of dk and dv. Blocks run last to first: the last sees every key
// and writes all of dk_h and dv_h, the earlier ones add to a prefix.
// kt, vt: the transposes of k and v (transpose_heads) when product.small.
void backward_head(const Layout& l, const Product& product, int h, const float* q, const float* k, const float* v,
                   const float* kt, const float* vt, const float* out, const float* lse, const float* dout, float* dq,
                   float* dk_h, float* dv_h, int64_t tokens, int heads, std::vector<float>& p, std::vector<float>& ds) {
  const int kvh = h / l.group;
  const int64_t block_rows = product.block_rows(), blocks = (tokens + block_rows - 1) / block_rows;
  const float* kt_h = kt + size_t(kvh) * l.hd * tokens;
  const float* vt_h = vt + size_t(kvh) * l.hd * tokens;
  for (int64_t b = blocks - 1; b >= 0; --b) {
    const Tile tl = tile(b, tokens, 0, block_rows);
    const int64_t n = tl.keys;
    p.resize(size_t(tl.rows * n));
    ds.resize(p.size());
    product(tl.rows, n, l.hd, l.q_row(q, tl.t0, h), l.q_stride, 1, l.kv_tile(k, kvh, true), kt_h, tokens, p.data(), n);
    product(tl.rows, n, l.hd, l.q_row(dout, tl.t0, h), l.q_stride, 1, l.kv_tile(v, kvh, true), vt_h, tokens,
            ds.data(), n);  // dP
    for (int64_t r = 0; r < tl.rows; ++r) {
      const int64_t t = tl.t0 + r, len = tl.visible(r, 0);
      float* pr = p.data() + r * n;
      float* dsr = ds.data() + r * n;
      const float D = dot(l.q_row(dout, t, h), l.q_row(out, t, h), l.hd);
      vmath::exp_affine_no_sum(pr, l.scale, -lse[t * heads + h], pr, len);  // p = exp(scale · s − lse)
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) dsr[j] = l.scale * pr[j] * (dsr[j] - D);  // scale folded into dS
      std::fill(pr + len, pr + n, 0.0f);
      std::fill(dsr + len, dsr + n, 0.0f);
    }
    const bool add = b < blocks - 1;
    product(tl.rows, l.hd, n, ds.data(), n, 1, l.kv_tile(k, kvh), l.kv_row(k, 0, kvh), l.kv_stride,
            l.q_row(dq, tl.t0, h), l.q_stride);
    product(n, l.hd, tl.rows, ds.data(), 1, n, l.q_tile(q, tl.t0, h), l.q_row(q, tl.t0, h), l.q_stride, dk_h, l.hd,
            add);
    product(n, l.hd, tl.rows, p.data(), 1, n, l.q_tile(dout, tl.t0, h), l.q_row(dout, tl.t0, h), l.q_stride, dv_h,
            l.hd, add);
  }
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t tokens,
                       int64_t first_position, const AttentionShape& s) {
  attend(q, k, v, out, nullptr, tokens, first_position, s);
}

void attention_forward_train(const float* q, const float* k, const float* v, float* out, float* lse, int64_t tokens,
                             const AttentionShape& s) {
  attend(q, k, v, out, lse, tokens, 0, s);
}

// With p_tj = exp(s_tj − lse_t) and s_tj = scale · q_t · k_j (j ≤ t), per head, as tiles:
//   dP = dO·Vᵀ,  D_t = dout_t · out_t,  dS = P ∘ (dP − D),
//   dQ = scale · dS·K,  dK = scale · dSᵀ·Q,  dV = Pᵀ·dO.
// Each query head is one unit of work (dq rows of its own; dk and dv shares in scratch); the
// shares of the heads of a group are then summed in head order. Every element is thus summed by
// one thread in a fixed order, whatever the thread count.
void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dq, float* dk, float* dv, int64_t tokens, const AttentionShape& s) {
  if (tokens <= 0) return;
  const Layout l(s);
  const int H = s.heads, hd = l.hd;
  const int64_t share = tokens * hd;
  // Scratch kept across calls (training calls this once a sequence and layer): thread_local, the
  // caller's, read by the team through the pointers below.
  thread_local std::vector<float> dk_scratch, dv_scratch, kt_scratch, vt_scratch;
  float* dk_heads = sized(dk_scratch, size_t(H * share));
  float* dv_heads = sized(dv_scratch, size_t(H * share));
  const Product product{small_tiles(l, tokens)};
  if (product.small) transpose_heads(l, k, tokens, kt_scratch), transpose_heads(l, v, tokens, vt_scratch);
  const float* kt = kt_scratch.data();
  const float* vt = vt_scratch.data();
#pragma omp parallel
  {
    thread_local std::vector<float> p, ds;  // each thread's, kept across calls
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < H; ++h)
      backward_head(l, product, h, q, k, v, kt, vt, out, lse, dout, dq, dk_heads + h * share, dv_heads + h * share,
                    tokens, H, p, ds);

#pragma omp for collapse(2) schedule(static)
    for (int64_t j = 0; j < tokens; ++j)
      for (int kvh = 0; kvh < s.kv_heads; ++kvh) {
        float* gk = dk + j * l.kv_stride + int64_t(kvh) * hd;
        float* gv = dv + j * l.kv_stride + int64_t(kvh) * hd;
        const int64_t h0 = int64_t(kvh) * l.group;
        std::copy_n(dk_heads + h0 * share + j * hd, hd, gk);
        std::copy_n(dv_heads + h0 * share + j * hd, hd, gv);
        for (int64_t h = h0 + 1; h < h0 + l.group; ++h)
          for (int i = 0; i < hd; ++i) {
            gk[i] += dk_heads[size_t(h * share + j * hd + i)];
            gv[i] += dv_heads[size_t(h * share + j * hd + i)];
          }
      }
  }
}

}  // namespace moge::kernels
