#include "moge/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moge::kernels {

void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t tokens,
                       int64_t first_position, const AttentionShape& s) {
  const int hd = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t q_stride = int64_t(s.heads) * hd, kv_stride = int64_t(s.kv_heads) * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < tokens; ++t) {
      for (int h = 0; h < s.heads; ++h) {
        const int64_t keys = first_position + t + 1;
        const float* qv = q + t * q_stride + int64_t(h) * hd;
        const int kvh = h / group;
        scores.resize(keys);
        float mx = -INFINITY;
        for (int64_t j = 0; j < keys; ++j) {
          const float* kv = k + j * kv_stride + int64_t(kvh) * hd;
          float dot = 0.0f;
          for (int i = 0; i < hd; ++i) dot += qv[i] * kv[i];
          scores[j] = dot * scale;
          mx = std::max(mx, scores[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < keys; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
        float* o = out + t * q_stride + int64_t(h) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int64_t j = 0; j < keys; ++j) {
          const float w = scores[j] / sum;
          const float* vv = v + j * kv_stride + int64_t(kvh) * hd;
          for (int i = 0; i < hd; ++i) o[i] += w * vv[i];
        }
      }
    }
  }
}

}  // namespace moge::kernels
