#include "moge/moe/dispatch.h"

#include <algorithm>
#include <cstring>

namespace moge::moe {

Dispatch make_dispatch(const Routing& routing, int num_experts) {
  Dispatch d;
  d.tokens = routing.tokens;
  d.top_k = routing.top_k;
  const int64_t entries = routing.tokens * routing.top_k;
  d.offsets.assign(num_experts + 1, 0);
  for (int64_t i = 0; i < entries; ++i) ++d.offsets[routing.expert[i] + 1];
  for (int e = 0; e < num_experts; ++e) d.offsets[e + 1] += d.offsets[e];
  d.token.resize(entries);
  d.row_of.resize(entries);
  std::vector<int64_t> next(d.offsets.begin(), d.offsets.end() - 1);
  for (int64_t i = 0; i < entries; ++i) {  // counting sort: stable in token order
    int64_t row = next[routing.expert[i]]++;
    d.token[row] = int32_t(i / routing.top_k);
    d.row_of[i] = int32_t(row);
  }
  return d;
}

Dispatch pad_dispatch(const Dispatch& dispatch, int align) {
  Dispatch p;
  p.tokens = dispatch.tokens;
  p.top_k = dispatch.top_k;
  const int n = int(dispatch.offsets.size()) - 1;
  p.offsets.assign(n + 1, 0);
  for (int e = 0; e < n; ++e) p.offsets[e + 1] = p.offsets[e] + (dispatch.expert_rows(e) + align - 1) / align * align;
  p.token.assign(size_t(p.offsets[n]), -1);
  for (int e = 0; e < n; ++e)
    std::copy(dispatch.token.begin() + dispatch.offsets[e], dispatch.token.begin() + dispatch.offsets[e + 1],
              p.token.begin() + p.offsets[e]);
  p.row_of.resize(dispatch.row_of.size());
  // Entry i's row moves by its expert's shift; experts own increasing row ranges, so a row's
  // expert is the last e with offsets[e] <= row.
  for (size_t i = 0; i < dispatch.row_of.size(); ++i) {
    const int64_t r = dispatch.row_of[i];
    const int e = int(std::upper_bound(dispatch.offsets.begin(), dispatch.offsets.end(), r) - dispatch.offsets.begin()) - 1;
    p.row_of[i] = int32_t(r - dispatch.offsets[e] + p.offsets[e]);
  }
  return p;
}

void gather_rows(const Dispatch& dispatch, const float* x, int d, float* rows, RowRange range) {
  const int64_t begin = std::max<int64_t>(range.begin, 0), end = std::min(range.end, dispatch.rows());
#pragma omp parallel for schedule(static)
  for (int64_t r = begin; r < end; ++r) {
    const int32_t t = dispatch.token[r];
    if (t >= 0) std::memcpy(rows + (r - begin) * d, x + int64_t(t) * d, d * sizeof(float));
    else std::memset(rows + (r - begin) * d, 0, d * sizeof(float));
  }
}

void scatter_add_rows(const Dispatch& dispatch, const float* rows, int d, float* x, RowRange range) {
  const int k = dispatch.top_k;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < dispatch.tokens; ++t) {
    float* xt = x + t * d;
    for (int i = 0; i < k; ++i) {
      const int64_t r = dispatch.row_of[t * k + i];
      if (!range.contains(r)) continue;
      const float* src = rows + (r - range.begin) * d;
      for (int j = 0; j < d; ++j) xt[j] += src[j];
    }
  }
}

void combine_rows(const Dispatch& dispatch, const float* rows, const float* weight, int d, float* y, RowRange range) {
  const int k = dispatch.top_k;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < dispatch.tokens; ++t) {
    float* yt = y + t * d;
    for (int i = 0; i < k; ++i) {
      const int64_t r = dispatch.row_of[t * k + i];
      if (!range.contains(r)) continue;
      const float* src = rows + (r - range.begin) * d;
      const float w = weight[t * k + i];
      for (int j = 0; j < d; ++j) yt[j] += w * src[j];
    }
  }
}

void combine_rows_backward(const Dispatch& dispatch, const float* rows, const float* weight, const float* dy, int d,
                           float* d_rows, float* d_weight, RowRange range) {
  const int k = dispatch.top_k;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < dispatch.tokens; ++t) {
    const float* dyt = dy + t * d;
    for (int i = 0; i < k; ++i) {
      const int64_t r = dispatch.row_of[t * k + i];
      if (!range.contains(r)) {
        d_weight[t * k + i] = 0.0f;
        continue;
      }
      const float* src = rows + (r - range.begin) * d;
      float* dst = d_rows + (r - range.begin) * d;
      const float w = weight[t * k + i];
      float dot = 0.0f;
      // simd: a fixed lane order (the build's), not a serial chain of adds.
#pragma omp simd reduction(+ : dot)
      for (int j = 0; j < d; ++j) {
        dot += dyt[j] * src[j];
        dst[j] = w * dyt[j];
      }
      d_weight[t * k + i] = dot;
    }
  }
}

}  // namespace moge::moe
