#pragma once
// The one GEMM entry point of moge, over oneDNN's matmul primitive.
//
//   C[m, n] (f32) = op(A)[m, k] · op(B)[k, n]   (+ C when accumulate)
//
// Row-major operands; op() transposes when the operand's `trans` flag is set, so a weight stored
// PyTorch-style as [out, in] is used as B = {W, trans = true} for y = x · Wᵀ. A and B may be f32 or
// bf16; accumulation is always f32. When their dtypes differ the f32 one is rounded to bf16 first
// (weights decide the compute type). Primitives are created once per problem (sizes, strides,
// dtypes, flags) and kept in a bounded LRU cache: oneDNN's fast kernels need the sizes at
// creation. k above 64, and m above 64 unless Rows::padded, run as a multiple of 32 plus a tail (two
// executions), so sizes that vary from call to call (tokens per expert) reuse a bounded set of
// primitives.
#include <cstdint>

#include "moge/core/dtype.h"

namespace moge::kernels {

struct MatRef {
  const void* data;
  DType dtype;
  int64_t ld;          // elements between consecutive rows as stored
  bool trans = false;  // use the transpose of the stored matrix

  static MatRef f32(const float* p, int64_t ld, bool trans = false) { return {p, DType::f32, ld, trans}; }
  static MatRef bf16(const moge::bf16* p, int64_t ld, bool trans = false) { return {p, DType::bf16, ld, trans}; }
};

// How a row count m above 64 (Rows::padded: above 48) runs.
// `bucketed`: a multiple of 32 plus a tail, two executions, so row counts that vary from call to
// call reuse a bounded set of primitives; but oneDNN re-packs B in each execution, so an expert's
// time jumps at every row count past a multiple of 32 (~35 µs at n = 512, k = 1024).
// `padded`: one execution of m rounded up to a multiple of 16, A copied into zero-padded rows and
// C through a scratch buffer. oneDNN 2.6's AMX brgemm picks its row block as a divisor of m, and
// for m with a divisor like 53, 59 or 61 (424, 472, 477, ...) it runs at a third of the speed
// (2.5 against 8-9 µs a row, n = 512, k = 1024, one thread; m = 53 or 59 alone, one block, 6x
// slower than 64); multiples of 16 nearly always block well. Time is then near linear in m, which
// expert-parallel balance needs (equal pairs on two devices cost equal time however they fall on
// experts), at most 15 rows are wasted (a few more where a multiple of 16 blocks badly), and one
// primitive serves 16 row counts. A transposed A runs one exact execution instead (no padded rows
// to copy into).
enum class Rows { bucketed, padded };

void matmul(int64_t m, int64_t n, int64_t k, MatRef a, MatRef b, float* c, int64_t ldc,
            bool accumulate = false, Rows rows = Rows::bucketed);

// The first of the at most two executions a size d (m under Rows::bucketed, and k always) runs
// as: d itself up to 64, else its largest multiple of 32; the rest, d - bulk, is the second.
int64_t bucketed_bulk(int64_t d);

// The rows Rows::padded runs m as (A not transposed): m itself up to 48, above it the least
// multiple of 16 from m up that oneDNN does not block into slow row blocks (matmul.cpp).
int64_t padded_row_count(int64_t m);

// Number of oneDNN primitives created so far (for tests of the cache).
int matmul_primitive_count();

// The ISA oneDNN dispatches to, for benchmark output ("avx512_core_bf16", ...).
const char* matmul_isa();

}  // namespace moge::kernels
