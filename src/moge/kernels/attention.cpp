#include "moge/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moge::kernels {
namespace {

// Strides and constants shared by the passes: rows of q/out are [H, hd], rows of k/v [kv_heads, hd].
struct Layout {
  int hd, group;  // group: query heads per kv head
  int64_t q_stride, kv_stride;
  float scale;

  explicit Layout(const AttentionShape& s)
      : hd(s.head_dim), group(s.heads / s.kv_heads), q_stride(int64_t(s.heads) * s.head_dim),
        kv_stride(int64_t(s.kv_heads) * s.head_dim), scale(1.0f / std::sqrt(float(s.head_dim))) {}

  const float* q_row(const float* base, int64_t t, int h) const { return base + t * q_stride + int64_t(h) * hd; }
  const float* kv_row(const float* base, int64_t j, int kvh) const { return base + j * kv_stride + int64_t(kvh) * hd; }
};

float dot(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// The scaled score of query row qv against key j. Forward and backward both call this, so the
// probabilities backward recomputes are the forward's own.
float score(const Layout& l, const float* qv, const float* k, int64_t j, int kvh) {
  return dot(qv, l.kv_row(k, j, kvh), l.hd) * l.scale;
}

// One query row qv of head h attending keys 0 .. keys-1: writes o [hd], returns the log-sum-exp
// of the scores. `scores` is scratch.
float attend(const Layout& l, const float* qv, const float* k, const float* v, int64_t keys, int h,
             std::vector<float>& scores, float* o) {
  const int kvh = h / l.group;
  scores.resize(keys);
  float mx = -INFINITY;
  for (int64_t j = 0; j < keys; ++j) mx = std::max(mx, scores[j] = score(l, qv, k, j, kvh));
  float sum = 0.0f;
  for (int64_t j = 0; j < keys; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
  std::fill(o, o + l.hd, 0.0f);
  for (int64_t j = 0; j < keys; ++j) {
    const float w = scores[j] / sum;
    const float* vv = l.kv_row(v, j, kvh);
    for (int i = 0; i < l.hd; ++i) o[i] += w * vv[i];
  }
  return mx + std::log(sum);
}

// Every (token, head) of the queries; lse may be null.
void attend_all(const float* q, const float* k, const float* v, float* out, float* lse, int64_t tokens,
                int64_t first_position, const AttentionShape& s) {
  const Layout l(s);
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < tokens; ++t) {
      for (int h = 0; h < s.heads; ++h) {
        float* o = out + t * l.q_stride + int64_t(h) * l.hd;
        const float log_sum = attend(l, l.q_row(q, t, h), k, v, first_position + t + 1, h, scores, o);
        if (lse) lse[t * s.heads + h] = log_sum;
      }
    }
  }
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t tokens,
                       int64_t first_position, const AttentionShape& s) {
  attend_all(q, k, v, out, nullptr, tokens, first_position, s);
}

void attention_forward_train(const float* q, const float* k, const float* v, float* out, float* lse, int64_t tokens,
                             const AttentionShape& s) {
  attend_all(q, k, v, out, lse, tokens, 0, s);
}

// With p_tj = exp(s_tj − lse_t) and s_tj = scale · q_t · k_j (j ≤ t), per head:
//   dv_j = Σ_t p_tj dout_t,   ds_tj = p_tj (dout_t · v_j − D_t),   D_t = dout_t · out_t,
//   dq_t = scale Σ_j ds_tj k_j,   dk_j = scale Σ_t ds_tj q_t.
// Two passes that each own their outputs, so nothing is shared between threads: one over query
// rows (dq), one over key rows (dk, dv, summed over the heads of the group). The second
// recomputes the probabilities the first computed: twice the score arithmetic, no atomics, no
// tokens² buffer.
void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dq, float* dk, float* dv, int64_t tokens, const AttentionShape& s) {
  const Layout l(s);
  const int H = s.heads, hd = l.hd;
  std::vector<float> D(size_t(tokens * H));
#pragma omp parallel
  {
#pragma omp for collapse(2) schedule(static)
    for (int64_t t = 0; t < tokens; ++t)
      for (int h = 0; h < H; ++h) D[size_t(t * H + h)] = dot(l.q_row(dout, t, h), l.q_row(out, t, h), hd);

    // dq: query t of head h against keys 0..t.
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < tokens; ++t) {
      for (int h = 0; h < H; ++h) {
        const int kvh = h / l.group;
        const float* qv = l.q_row(q, t, h);
        const float* dy = l.q_row(dout, t, h);
        const float lse_t = lse[t * H + h], D_t = D[size_t(t * H + h)];
        float* g = dq + t * l.q_stride + int64_t(h) * hd;
        std::fill(g, g + hd, 0.0f);
        for (int64_t j = 0; j <= t; ++j) {
          const float p = std::exp(score(l, qv, k, j, kvh) - lse_t);
          const float ds = p * (dot(dy, l.kv_row(v, j, kvh), hd) - D_t);
          const float* kv = l.kv_row(k, j, kvh);
          for (int i = 0; i < hd; ++i) g[i] += ds * kv[i];
        }
        for (int i = 0; i < hd; ++i) g[i] *= l.scale;
      }
    }

    // dk, dv: key j of kv head kvh against the queries t ≥ j of every head in its group.
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t j = 0; j < tokens; ++j) {
      for (int kvh = 0; kvh < s.kv_heads; ++kvh) {
        const float* vv = l.kv_row(v, j, kvh);
        float* gk = dk + j * l.kv_stride + int64_t(kvh) * hd;
        float* gv = dv + j * l.kv_stride + int64_t(kvh) * hd;
        std::fill(gk, gk + hd, 0.0f);
        std::fill(gv, gv + hd, 0.0f);
        for (int h = kvh * l.group; h < (kvh + 1) * l.group; ++h) {
          for (int64_t t = j; t < tokens; ++t) {
            const float* qv = l.q_row(q, t, h);
            const float* dy = l.q_row(dout, t, h);
            const float p = std::exp(score(l, qv, k, j, kvh) - lse[t * H + h]);
            const float ds = p * (dot(dy, vv, hd) - D[size_t(t * H + h)]);
            for (int i = 0; i < hd; ++i) {
              gv[i] += p * dy[i];
              gk[i] += ds * qv[i];
            }
          }
        }
        for (int i = 0; i < hd; ++i) gk[i] *= l.scale;
      }
    }
  }
}

}  // namespace moge::kernels
