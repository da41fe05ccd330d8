#pragma once
// Token embedding: rows of an f32 table [vocab, d] looked up by token id, and the gradient.
#include <cstdint>

namespace moge::kernels {

// out[i, :] = table[tokens[i], :] for i < n; out: [n, d]. Token ids are not checked.
void embedding_forward(const float* table, const int32_t* tokens, int64_t n, int64_t d, float* out);

// dtable_accum[tokens[i], :] += dx[i, :] for i < n; dx: [n, d]. Positions that share a token sum
// into one row in position order: deterministic for any thread count (threads split the columns,
// not the positions, so no two threads ever write one element).
void embedding_backward(const int32_t* tokens, int64_t n, const float* dx, int64_t d, float* dtable_accum);

}  // namespace moge::kernels
