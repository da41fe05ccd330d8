#include "moge/kernels/matmul.h"

#include <cstddef>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <dnnl.hpp>
#include <omp.h>

#include "moge/core/buffer.h"

namespace moge::kernels {
namespace {

using dnnl::memory;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

memory::data_type to_dnnl(DType t) { return t == DType::f32 ? memory::data_type::f32 : memory::data_type::bf16; }

// Strides of a logical [rows, cols] view of a row-major matrix with leading dimension ld.
memory::dims strides_of(const MatRef& r) { return r.trans ? memory::dims{1, r.ld} : memory::dims{r.ld, 1}; }

// One primitive per exact problem. oneDNN's fastest kernels (brgemm) need every size and stride
// at creation: a run-time m falls back to its plain GEMM, 1.2-6x slower for the 16-128-row
// products of per-expert GEMMs (measured on this machine, 2 threads). Creation costs ~0.3 ms, so
// primitives are kept in a bounded cache, least recently used out first. The exception is a
// handful of rows (decode): there brgemm is 2-4x slower than oneDNN's GEMV/small-GEMM path, which
// a run-time m selects (f32 up to 8 rows; bf16 only for 1 row, where its run-time path is worse
// beyond that), and one primitive then serves every such m.
struct Key {
  int threads;  // oneDNN fixes a primitive's parallel split when it is created
  DType dtype;
  bool trans_a, trans_b, accumulate;
  int64_t m, n, k, lda, ldb, ldc;
  auto operator<=>(const Key&) const = default;
};

constexpr size_t kCacheCapacity = 4096;
constexpr int64_t kRuntimeRows = DNNL_RUNTIME_DIM_VAL;

struct Prepared {
  dnnl::matmul primitive;
  memory::desc scratchpad;
};

// LRU: the list holds entries most recently used first; the map finds them. O(log n) a lookup,
// O(1) to refresh or evict (a scan for the oldest entry cost more than the GEMMs in training).
struct Cache {
  using Order = std::list<std::pair<Key, Prepared>>;
  std::mutex mutex;
  Order order;
  std::map<Key, Order::iterator> index;
  int created = 0;
};
Cache& cache() {
  static Cache c;
  return c;
}

Prepared create_primitive(const Key& key) {
  auto dt = to_dnnl(key.dtype);
  memory::desc a_md({key.m, key.k}, dt, key.trans_a ? memory::dims{1, key.lda} : memory::dims{key.lda, 1});
  memory::desc b_md({key.k, key.n}, dt, key.trans_b ? memory::dims{1, key.ldb} : memory::dims{key.ldb, 1});
  memory::desc c_md({key.m, key.n}, memory::data_type::f32, {key.ldc, 1});
  dnnl::primitive_attr attr;
  // We pass the scratchpad ourselves: by default oneDNN allocates it on every execution, which
  // for brgemm's packed-operand buffers means fresh pages (page faults) on every call.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (key.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine());
  return {dnnl::matmul(pd), pd.scratchpad_desc()};
}

Prepared primitive_for(const Key& key) {
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  if (auto it = c.index.find(key); it != c.index.end()) {
    c.order.splice(c.order.begin(), c.order, it->second);
    return it->second->second;
  }
  if (c.order.size() >= kCacheCapacity) {
    c.index.erase(c.order.back().first);
    c.order.pop_back();
  }
  c.order.emplace_front(key, create_primitive(key));
  c.index.emplace(key, c.order.begin());
  ++c.created;
  return c.order.front().second;
}

// A problem as one thread executes it: the primitive plus its memory objects and argument map,
// built on the thread's first execution of the problem and pointed at each call's data after.
// Building them every call (descriptors, allocations) cost ~2 µs an execution, against 30-50 µs
// for an expert's GEMM in training, which runs ~1150 of them a step.
struct Bound {
  Prepared prim;
  memory a, b, c, scratch;
  std::unordered_map<int, memory> args;
};
// Problems a thread keeps bound; past this many it starts over (sizes vary little in a run).
constexpr size_t kBoundCapacity = 1024;

// One oneDNN execution of exactly this problem (dtypes already equal, k > 0).
void run_primitive(int64_t m, int64_t n, int64_t k, const MatRef& a, const MatRef& b, float* c, int64_t ldc,
                   bool accumulate) {
  const int64_t max_runtime_rows = a.dtype == DType::f32 ? 8 : 1;
  const int64_t key_m = m <= max_runtime_rows ? kRuntimeRows : m;
  const Key key{omp_get_max_threads(), a.dtype, a.trans, b.trans, accumulate, key_m, n, k, a.ld, b.ld, ldc};
  thread_local dnnl::stream stream(engine());
  thread_local AlignedBuffer scratchpad;
  // Bound by the exact m: a run-time-m primitive's memory objects still have this call's m.
  thread_local std::map<Key, Bound> bound;
  Key exact = key;
  exact.m = m;
  auto it = bound.find(exact);
  if (it == bound.end()) {
    if (bound.size() >= kBoundCapacity) bound.clear();
    Bound x{primitive_for(key), {}, {}, {}, {}, {}};
    const auto dt = to_dnnl(a.dtype);
    x.a = memory({{m, k}, dt, strides_of(a)}, engine(), nullptr);
    x.b = memory({{k, n}, dt, strides_of(b)}, engine(), nullptr);
    x.c = memory({{m, n}, memory::data_type::f32, {ldc, 1}}, engine(), nullptr);
    x.scratch = memory(x.prim.scratchpad, engine(), nullptr);
    x.args = {{DNNL_ARG_SRC, x.a}, {DNNL_ARG_WEIGHTS, x.b}, {DNNL_ARG_DST, x.c}, {DNNL_ARG_SCRATCHPAD, x.scratch}};
    it = bound.emplace(exact, std::move(x)).first;
  }
  Bound& x = it->second;
  if (x.prim.scratchpad.get_size() > scratchpad.size()) scratchpad = AlignedBuffer(x.prim.scratchpad.get_size());
  x.a.set_data_handle(const_cast<void*>(a.data));
  x.b.set_data_handle(const_cast<void*>(b.data));
  x.c.set_data_handle(c);
  x.scratch.set_data_handle(scratchpad.data());
  x.prim.primitive.execute(stream, x.args);
  stream.wait();
}

// Sizes that change from call to call — tokens per expert: m in the forward and input-gradient
// GEMMs, k in the weight-gradient ones — took hundreds of values in training, each a new
// primitive: the cache thrashed (164 creations a step, a quarter of the step). So m and k above
// kExactUpTo are cut into a bulk that is a multiple of kBucket and a tail below kBucket, each an
// exact primitive: at most range / kBucket + kBucket primitives per shape, for one or two
// executions a call. (A run-time size instead would lose brgemm; padding would copy operands.)
constexpr int64_t kExactUpTo = 64, kBucket = 32;
// Rows::padded rounds m above kPadAbove up to a multiple of kPadTo. Single-block row counts are
// slow too: m = 53, 59, 61 take 5-6x the time of m = 64 (n = 512, k = 1024, one thread), 51, 57,
// 58 and 62 2-3x, while 33-48 run at the speed of 48. Multiples of 16 waste half the rows that
// multiples of 32 do (8.5 against 15.7 on average over m = 65..584) at no cost in speed.
constexpr int64_t kPadAbove = 48, kPadTo = 16;

// [0, d) as at most two pieces: calls fn(offset, size) for each.
template <class Fn>
void for_each_piece(int64_t d, Fn&& fn) {
  const int64_t bulk = bucketed_bulk(d);
  fn(int64_t(0), bulk);
  if (bulk < d) fn(bulk, d - bulk);
}

// The operand `r` advanced by `rows` logical rows and `cols` logical columns.
MatRef offset(MatRef r, int64_t rows, int64_t cols) {
  const int64_t elements = r.trans ? cols * r.ld + rows : rows * r.ld + cols;
  r.data = static_cast<const char*>(r.data) + elements * int64_t(dtype_size(r.dtype));
  return r;
}

// Thread-local scratch for rounding an f32 operand to bf16.
const bf16* as_bf16(const MatRef& r, int64_t rows, int64_t cols, std::vector<bf16>& scratch) {
  // Stored extent: rows x cols logically; stored as (trans ? cols x rows : rows x cols) with ld.
  int64_t stored_rows = r.trans ? cols : rows, stored_cols = r.trans ? rows : cols;
  scratch.resize(size_t(stored_rows) * r.ld);
  const float* src = static_cast<const float*>(r.data);
  for (int64_t i = 0; i < stored_rows; ++i) f32_to_bf16(src + i * r.ld, scratch.data() + i * r.ld, stored_cols);
  return scratch.data();
}

// A's m rows as a contiguous [padded_m, k] copy in `dtype` (bf16 rounds an f32 A), rows from m
// on zero. A must not be transposed.
const void* padded_rows(const MatRef& a, int64_t m, int64_t padded_m, int64_t k, DType dtype,
                        std::vector<std::byte>& scratch) {
  const size_t row_bytes = size_t(k) * dtype_size(dtype);
  scratch.resize(size_t(padded_m) * row_bytes);
  for (int64_t i = 0; i < m; ++i) {
    std::byte* dst = scratch.data() + size_t(i) * row_bytes;
    const char* src = static_cast<const char*>(a.data) + size_t(i * a.ld) * dtype_size(a.dtype);
    if (a.dtype == dtype) std::memcpy(dst, src, row_bytes);
    else f32_to_bf16(reinterpret_cast<const float*>(src), reinterpret_cast<bf16*>(dst), k);
  }
  std::memset(scratch.data() + size_t(m) * row_bytes, 0, size_t(padded_m - m) * row_bytes);
  return scratch.data();
}

}  // namespace

int64_t bucketed_bulk(int64_t d) { return d > kExactUpTo ? d - d % kBucket : d; }

// Rows::padded: the least multiple of kPadTo from m up whose AMX row block is a fast one. oneDNN
// 2.6 takes as row block the largest divisor of m in [32, 64]; blocks of 53, 58, 59, 61 and 62
// rows are the slow ones (4.3-7.2 µs a row on average against 2.5-3.0 for every other block,
// m = 96..600, n = 512, k = 1024, one thread), and multiples of 32 can have them too: 928 = 16 · 58
// and 992 = 16 · 62 ran at 5 µs a row, 1696 and 1888 at 8.5, their neighbours at 3. Blocks of 46
// cost 1.2x: an expert's three products (d 1024, f 512) at 368 = 8 · 46 and 736 rows took 9.5 µs
// a row against 7.3-8.3 at every other multiple of 16 from 96 to 1024 but the blocks above. With
// two threads on 1024 x 2048 and 2048 x 1024 weights, blocks of 34, 37 and 38 are slow too: 272,
// 304, 544, 592 and 608 rows ran at 6.6-8.3 µs a row against 4.4-6.3 for their neighbours (the
// row counts interleaved, best of nine, three sweeps), so 592 padded to 624 takes ~28% less time.
int64_t padded_row_count(int64_t m) {
  if (m <= kPadAbove) return m;
  auto slow_block = [](int64_t rows) {
    for (int64_t b = 64; b >= 32; --b)
      if (rows % b == 0)
        return b == 34 || b == 37 || b == 38 || b == 46 || b == 53 || b == 58 || b == 59 || b == 61 || b == 62;
    return false;
  };
  int64_t rows = (m + kPadTo - 1) / kPadTo * kPadTo;
  while (slow_block(rows)) rows += kPadTo;
  return rows;
}

void matmul(int64_t m, int64_t n, int64_t k, MatRef a, MatRef b, float* c, int64_t ldc, bool accumulate, Rows rows) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // oneDNN rejects empty reductions; the product is zero.
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
    return;
  }
  thread_local std::vector<bf16> scratch_a, scratch_b;
  const DType compute = a.dtype == b.dtype ? a.dtype : DType::bf16;  // the weights' dtype wins
  auto run_rows = [&](const MatRef& a_rows, int64_t m0, int64_t mb, float* c_rows, int64_t ldc_rows, bool acc) {
    for_each_piece(k, [&](int64_t k0, int64_t kb) {
      run_primitive(mb, n, kb, offset(a_rows, m0, k0), offset(b, k0, 0), c_rows + m0 * ldc_rows, ldc_rows,
                    acc || k0 > 0);
    });
  };
  if (b.dtype != compute) b.data = as_bf16(b, k, n, scratch_b), b.dtype = compute;

  const int64_t padded_m = rows == Rows::padded && !a.trans ? padded_row_count(m) : m;
  if (padded_m != m) {
    thread_local std::vector<std::byte> padded_a;
    thread_local std::vector<float> padded_c;
    const MatRef ap{padded_rows(a, m, padded_m, k, compute, padded_a), compute, k, false};
    padded_c.resize(size_t(padded_m * n));
    run_rows(ap, 0, padded_m, padded_c.data(), n, false);
    for (int64_t i = 0; i < m; ++i) {
      const float* src = padded_c.data() + i * n;
      float* dst = c + i * ldc;
      if (accumulate)
        for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
      else
        std::memcpy(dst, src, size_t(n) * sizeof(float));
    }
    return;
  }
  if (a.dtype != compute) a.data = as_bf16(a, m, k, scratch_a), a.dtype = compute;
  if (rows == Rows::padded) run_rows(a, 0, m, c, ldc, accumulate);
  else for_each_piece(m, [&](int64_t m0, int64_t mb) { run_rows(a, m0, mb, c, ldc, accumulate); });
}

int matmul_primitive_count() {
  std::lock_guard lock(cache().mutex);
  return cache().created;
}

const char* matmul_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return "other";
  }
}

}  // namespace moge::kernels
