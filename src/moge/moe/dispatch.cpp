#include "moge/moe/dispatch.h"

#include <algorithm>
#include <cstring>

#include <omp.h>

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
  // Entry i's row moves by its expert's shift: the shift of every unpadded row first, then one
  // lookup an entry (a binary search over the experts an entry cost more than the rest together).
  thread_local std::vector<int32_t> shift;
  shift.resize(size_t(dispatch.rows()));
  for (int e = 0; e < n; ++e)
    std::fill(shift.begin() + dispatch.offsets[e], shift.begin() + dispatch.offsets[e + 1],
              int32_t(p.offsets[e] - dispatch.offsets[e]));
  p.row_of.resize(dispatch.row_of.size());
  for (size_t i = 0; i < dispatch.row_of.size(); ++i) p.row_of[i] = dispatch.row_of[i] + shift[size_t(dispatch.row_of[i])];
  return p;
}

void gather_rows(const Dispatch& dispatch, const float* x, int d, float* rows, RowRange range) {
  const int64_t begin = std::max<int64_t>(range.begin, 0), end = std::min(range.end, dispatch.rows());
  // Nested in a team's unit of work it would be a team of one anyway: skip the region.
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
  for (int64_t r = begin; r < end; ++r) {
    const int32_t t = dispatch.token[r];
    if (t >= 0) std::memcpy(rows + (r - begin) * d, x + int64_t(t) * d, d * sizeof(float));
    else std::memset(rows + (r - begin) * d, 0, d * sizeof(float));
  }
}

namespace {

// Row-wise passes below read the K rows of one token scattered over a buffer of T·K rows, too
// large for L2 and written long before: a cache miss at the start of every row. The rows of the
// token kPrefetchAhead tokens on are requested in advance.
constexpr int64_t kPrefetchAhead = 2;

void prefetch_token_rows(const Dispatch& dispatch, const float* rows, int d, int64_t t, RowRange range) {
  if (t >= dispatch.tokens) return;
  const int k = dispatch.top_k;
  for (int i = 0; i < k; ++i) {
    const int64_t r = dispatch.row_of[t * k + i];
    if (!range.contains(r)) continue;
    const char* p = reinterpret_cast<const char*>(rows + (r - range.begin) * d);
    for (int64_t b = 0; b < int64_t(d) * int64_t(sizeof(float)); b += 64) __builtin_prefetch(p + b);
  }
}

}  // namespace

void scatter_add_rows(const Dispatch& dispatch, const float* rows, int d, float* x, RowRange range) {
  const int k = dispatch.top_k;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < dispatch.tokens; ++t) {
    prefetch_token_rows(dispatch, rows, d, t + kPrefetchAhead, range);
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
    prefetch_token_rows(dispatch, rows, d, t + kPrefetchAhead, range);
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

namespace {

// One row r of combine_rows_backward: entry i = t*K + k it serves; src, dst: its rows.
inline void combine_row_backward(int32_t i, int k, const float* rows_r, const float* weight, const float* dy, int d,
                                 float* d_rows_r, float* d_weight) {
  const float* dyt = dy + int64_t(i / k) * d;
  const float w = weight[i];
  float dot = 0.0f;
  // simd: a fixed lane order (the build's), not a serial chain of adds.
#pragma omp simd reduction(+ : dot)
  for (int j = 0; j < d; ++j) {
    dot += dyt[j] * rows_r[j];
    d_rows_r[j] = w * dyt[j];
  }
  d_weight[i] = dot;
}

}  // namespace

std::vector<int32_t> row_entries(const Dispatch& dispatch) {
  std::vector<int32_t> entry(size_t(dispatch.rows()), -1);
  for (size_t i = 0; i < dispatch.row_of.size(); ++i) entry[size_t(dispatch.row_of[i])] = int32_t(i);
  return entry;
}

void combine_rows_backward_part(const Dispatch& dispatch, const int32_t* entry, const float* rows,
                                const float* weight, const float* dy, int d, float* d_rows, float* d_weight,
                                RowRange range) {
  const int64_t begin = std::max<int64_t>(range.begin, 0), end = std::min(range.end, dispatch.rows());
  for (int64_t r = begin; r < end; ++r)
    if (entry[r] >= 0)
      combine_row_backward(entry[r], dispatch.top_k, rows + r * d, weight, dy, d, d_rows + r * d, d_weight);
}

void combine_rows_backward(const Dispatch& dispatch, const float* rows, const float* weight, const float* dy, int d,
                           float* d_rows, float* d_weight, RowRange range) {
  // In row order, so that rows and d_rows stream through memory (dy, T rows, stays in cache);
  // every output element is computed as in token order, by one thread.
  const int64_t entries = dispatch.tokens * dispatch.top_k;
  const int64_t begin = std::max<int64_t>(range.begin, 0), end = std::min(range.end, dispatch.rows());
  for (int64_t i = 0; i < entries; ++i)
    if (!range.contains(dispatch.row_of[i])) d_weight[i] = 0.0f;
  const std::vector<int32_t> entry_of = row_entries(dispatch);
  const int32_t* entry = entry_of.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = begin; r < end; ++r)
    if (entry[r] >= 0)
      combine_row_backward(entry[r], dispatch.top_k, rows + (r - range.begin) * d, weight, dy, d,
                           d_rows + (r - range.begin) * d, d_weight);
}

}  // namespace moge::moe
