#pragma once
// Dispatch: the permutation that sorts a batch's (token, expert) pairs by expert, so each expert
// runs one GEMM over a contiguous block of rows; and its inverse, which sums each token's expert
// outputs back, weighted. Stable: inside an expert, rows keep token order.
#include <cstdint>
#include <vector>

#include "moge/moe/router.h"

namespace moge::moe {

struct Dispatch {
  int64_t tokens = 0;
  int top_k = 0;
  std::vector<int64_t> offsets;  // [N + 1]: expert e owns rows [offsets[e], offsets[e + 1])
  std::vector<int32_t> token;    // [T * K]: the token each row came from
  std::vector<int32_t> row_of;   // [T * K]: the row serving routing entry t * K + i

  int64_t rows() const { return int64_t(token.size()); }
  int64_t expert_rows(int e) const { return offsets[e + 1] - offsets[e]; }
};

Dispatch make_dispatch(const Routing& routing, int num_experts);

// The same permutation with each expert's block of rows padded at its end to a multiple of
// `align` rows (training: every expert GEMM is then one oneDNN execution of a size from a small
// set). Padding rows have token -1: gather_rows makes them zero, the functions below never read
// or write them (no routing entry names them).
Dispatch pad_dispatch(const Dispatch& dispatch, int align);

// A block of a dispatch's rows, [begin, end): the experts one device holds (expert parallelism).
// The functions below take one; their row buffers then hold only those rows (row r at r - begin)
// and the routing entries served by other rows are skipped. The default is every row.
struct RowRange {
  int64_t begin = 0, end = INT64_MAX;
  bool contains(int64_t row) const { return row >= begin && row < end; }
};

// rows[r, :] = x[token[r], :], or 0 for a padding row (token -1). Called inside a parallel region
// (one expert's rows in a unit of work), it runs on the calling thread.
void gather_rows(const Dispatch& dispatch, const float* x, int d, float* rows, RowRange range = {});
// x[t, :] += sum over t's entries of rows[row_of[t*K + i], :]  (backward of gather)
void scatter_add_rows(const Dispatch& dispatch, const float* rows, int d, float* x, RowRange range = {});
// y[t, :] += sum_i weight[t*K + i] * rows[row_of[t*K + i], :], in entry order
void combine_rows(const Dispatch& dispatch, const float* rows, const float* weight, int d, float* y,
                  RowRange range = {});
// Backward of combine_rows: d_rows[r] = weight * dy[token]; d_weight[t*K + i] = <dy[t], rows[r]>
// (0 for entries outside the range).
void combine_rows_backward(const Dispatch& dispatch, const float* rows, const float* weight, const float* dy, int d,
                           float* d_rows, float* d_weight, RowRange range = {});

// The routing entry t*K + i that each row serves, -1 for a padding row: the inverse of row_of.
std::vector<int32_t> row_entries(const Dispatch& dispatch);
// combine_rows_backward of the rows in `range` alone, on the calling thread (a part of a larger
// unit of work: an expert's rows just before its backward GEMMs read them): rows and d_rows hold
// every row of the dispatch (row r at r), entry = row_entries(dispatch); d_weight is written for
// the entries these rows serve, nothing for padding rows. The same bits as combine_rows_backward.
void combine_rows_backward_part(const Dispatch& dispatch, const int32_t* entry, const float* rows,
                                const float* weight, const float* dy, int d, float* d_rows, float* d_weight,
                                RowRange range);

}  // namespace moge::moe
