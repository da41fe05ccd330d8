// `moge sim calibrate`: this machine's CPU measured into a hardware profile (docs/simulator.md
// "Profiles"), by timing the kernels the engine itself runs: kernels::linear on f32, bf16, int8
// (W8A8) and int4 (W4A8) weights at GEMV and GEMM row counts, kernels::attention_forward for
// decode and prefill, the read bandwidth (kernels/membw), and all-gather / reduce-scatter through
// the comm layer (local devices, or MPI ranks under mpirun with --devices mpi).
//
// A device is what `--devices D` makes of the machine: D devices share its cores (threads / D
// each) and its memory, so every device measures at the same time as the others (a barrier
// before each measurement) and the profile holds what one device gets while all run.
#include "sim_calibrate.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

#include "devices.h"
#include "moge/core/buffer.h"
#include "moge/core/clock.h"
#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/progress.h"
#include "moge/core/rng.h"
#include "moge/core/tensor.h"
#include "moge/kernels/amx_bf16.h"
#include "moge/kernels/attention.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/membw.h"
#include "moge/kernels/swiglu.h"
#include "moge/kernels/weight.h"
#include "moge/parallel/local_comm.h"
#include "moge/sim/cost.h"
#include "moge/sim/hardware.h"

namespace moge::cli {
namespace {

using Clock = std::chrono::steady_clock;
using kernels::Weight;
using kernels::WeightFormat;


struct Settings {
  bool quick = false;
  int64_t dim = 2048;                   // weights [dim, dim], [dim/2, dim] and [dim, dim/2]
  size_t ring_bytes = size_t(1) << 30;  // weights cycled through: far beyond the caches
  // The same at a small model's width (tiny-moge's experts are [64, 128]): with the large ones,
  // each bucket's time as a line in the weight's size, whose intercept is the call's fixed cost.
  int64_t small_dim = 128;
  size_t small_ring_bytes = size_t(64) << 20;
  double target_s = 0.3;                // time each row count runs at least
  // Upper ends of the row buckets (the profile's max_rows); the last bucket is unbounded.
  std::vector<int64_t> gemv_rows = {1, 2, 4, 8, 16}, gemm_rows = {32, 64, 128, 256, 512};
  // Decode attention at a context whose cache (1 MiB at 16 query and 4 KV heads of 128) stays in
  // a core's L2 when hot; the cold call reads its cache from a ring of ring_bytes of copies.
  int64_t attn_context = 256, attn_prefill = 512;
  int64_t coll_big_floats = int64_t(8) << 20;  // 32 MB gathered
  int coll_small_calls = 200, coll_big_calls = 10;

  static Settings make(bool quick) {
    Settings s;
    if (!quick) return s;
    s.quick = true;
    s.dim = 512;
    s.ring_bytes = size_t(16) << 20;
    s.small_dim = 64;
    s.small_ring_bytes = size_t(1) << 20;
    s.target_s = 0.01;
    s.gemv_rows = {1, 16};
    s.gemm_rows = {64, 128};
    s.attn_context = 64;
    s.attn_prefill = 64;
    s.coll_big_floats = int64_t(1) << 18;
    s.coll_small_calls = 20;
    s.coll_big_calls = 3;
    return s;
  }
};

// The row counts measured for the bucket (lo, hi] of `format`: up to three spread over it, hi
// included. A model's experts get any count (tokens routed to them), and oneDNN's speed depends
// on it (up to 64 rows it runs the exact count, whose divisors set its row blocking), so one
// aligned count would flatter the bucket; above 48, bf16 runs the count padded
// (kernels::padded_row_count: its A and C copied through scratch), which unaligned counts
// measure too. f32 runs an unaligned count above 64 as two executions, a multiple of 32 and a
// tail, which the cost model charges as two kernels of their own buckets
// (sim::engine_matmul_rows): so f32 measures only counts the engine runs as one execution (the
// next one up, kernels::bucketed_bulk), each one execution of the bucket it describes.
std::vector<int64_t> bucket_rows(int64_t lo, int64_t hi, WeightFormat format) {
  std::vector<int64_t> rows;
  auto add = [&](int64_t r) {
    if (format == WeightFormat::f32) {
      while (kernels::bucketed_bulk(r) != r) ++r;
      r = std::min(r, hi);
    }
    if (r > lo && (rows.empty() || r > rows.back())) rows.push_back(r);
  };
  for (int k = 1; k <= 3; ++k) add(lo + (hi - lo) * k / 3);
  if (rows.empty() || rows.back() != hi) rows.push_back(hi);
  return rows;
}

constexpr WeightFormat kFormats[] = {WeightFormat::f32, WeightFormat::bf16, WeightFormat::q8, WeightFormat::q4};
const char* format_type(WeightFormat f) {  // the profile's compute-type name
  return f == WeightFormat::f32 ? "f32" : f == WeightFormat::bf16 ? "bf16" : f == WeightFormat::q8 ? "int8" : "int4";
}

// The best of three windows of fn's mean time a call (each window: calls until target_s / 3 has
// passed, at least 3). Interference (other processes, the VM's bandwidth swings) only slows a
// window down, so the fastest is the machine's own speed; `moge bench` keeps its best repetition
// for the same reason.
template <typename Fn>
double best_of_3(Fn&& fn, double target_s) {
  double w[3];
  for (double& t : w) {
    int64_t calls = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    do {
      fn();
      ++calls;
      elapsed = seconds_since(t0);
    } while (elapsed < target_s / 3 || calls < 3);
    t = elapsed / double(calls);
  }
  return *std::min_element(w, w + 3);
}

// A kernel's cost: seconds, FLOPs and bytes (as the cost model counts them) of one call, or
// summed over several calls.
struct Cost {
  double seconds = 0, flops = 0, bytes = 0, calls = 0;
  double weights = 0;   // weight elements a call
  double prepared = 0;  // input activation elements (rows · in) a call
  Cost& operator+=(const Cost& o) {
    seconds += o.seconds, flops += o.flops, bytes += o.bytes, calls += o.calls;
    weights += o.weights, prepared += o.prepared;
    return *this;
  }
};

// Weights in `format`, shapes taking turns (the square [dim, dim] of attention and the [dim/2,
// dim] and [dim, dim/2] of an expert's gate/up and down), copied until about `bytes`, used slot
// after slot: a GEMV then streams its weights from memory as in a model far larger than the
// caches (the L3 of a server CPU can hold a small model's whole layer), and each call pays
// whatever a new weight costs a GEMM (oneDNN packs it).
class WeightRing {
 public:
  // amx: bf16 weights packed into AMX tiles (kernels::amx_pack_weight), as expert-parallel
  // devices hold their routed experts where the CPU has AMX-BF16: kernels::linear runs them on
  // amx_linear_bf16 at every row count.
  WeightRing(WeightFormat format, int64_t dim, size_t bytes, bool amx = false) : amx_(amx) {
    const int64_t shapes[3][2] = {{dim, dim}, {dim / 2, dim}, {dim, dim / 2}};
    Rng rng(7);
    std::vector<Weight> base;
    std::vector<AlignedBuffer> packed;
    for (const auto& [out, in] : shapes) {
      Tensor t({out, in});
      for (int64_t i = 0; i < out * in; ++i) t.f32()[i] = 0.02f * rng.normal();
      base.push_back(Weight::from_f32(t, format));
      if (amx) {
        packed.emplace_back(size_t(out * in) * 2 + 64);
        auto* tiles = reinterpret_cast<bf16*>(packed.back().data());
        const kernels::MatRef& w = base.back().ref().dense;
        kernels::amx_pack_weight(out, in, static_cast<const bf16*>(w.data), w.ld, tiles);
        base.back() = Weight::amx_tiles_view(tiles, out, in);
      }
    }
    size_t total = 0;
    for (size_t i = 0; total < bytes || i < 6; ++i) {
      const Weight& w = base[i % 3];
      total += w.bytes();
      storage_.emplace_back(w.bytes() + 64);
      slots_.push_back(copy(w, storage_.back().data()));
    }
  }

  // One call of linear(rows) on each shape in turn, the slots cycling: the best window's time
  // (best_of_3) a call, and the mean FLOPs and bytes of a call.
  Cost time_linear(int64_t rows, double target_s, double activation_bytes) const {
    const int64_t in = slots_[0].in();  // dim: the widest input
    std::vector<float> x(static_cast<size_t>(rows * in)), y(static_cast<size_t>(rows * in));
    Rng rng(3);
    for (float& v : x) v = rng.normal();
    for (size_t i = 0; i < 3; ++i) kernels::linear(rows, x.data(), slots_[i].ref(), y.data());  // warm-up
    size_t next = 0;
    Cost c;
    c.calls = 1;
    c.seconds = best_of_3([&] { kernels::linear(rows, x.data(), slots_[next++ % slots_.size()].ref(), y.data()); },
                            target_s);
    // FLOPs and bytes over the executions the engine runs (sim::engine_matmul_rows: bf16 above 48
    // rows computes kernels::padded_row_count's rows), as the cost model counts them; the
    // preparation on the real rows.
    for (size_t i = 0; i < 3; ++i) {
      const Weight& w = slots_[i];
      // AMX tiles: the rows rounded up to 16 (sim::amx_tile_rows), one kernel.
      const std::vector<int64_t> executed =
          amx_? std::vector<int64_t>{sim::amx_tile_rows(rows)}
               : sim::engine_matmul_rows(sim::parse_weight_type(format_type(w.format())), rows);
      for (const int64_t r : executed) {
        c.flops += 2.0 * double(r) * w.in() * w.out() / 3;
        c.bytes += (double(w.in()) * w.out() * wbytes() + double(r) * double(w.in() + w.out()) * activation_bytes) / 3;
      }
      c.weights += double(w.in()) * w.out() / 3;
      c.prepared += double(rows) * w.in() / 3;
    }
    return c;
  }

 private:
  // Bytes a weight as the cost model counts them (int8 1, int4 18/32; the scales of int8 not).
  double wbytes() const {
    const char* type = format_type(slots_[0].format());
    return sim::weight_bytes_per_element(sim::parse_weight_type(type));
  }
  // A view of w's arrays copied to dst.
  static Weight copy(const Weight& w, std::byte* dst) {
    const kernels::WeightRef& r = w.ref();
    const int64_t out = w.out(), in = w.in();
    if (r.amx_tiles) {
      std::memcpy(dst, r.dense.data, size_t(out * in) * 2);
      return Weight::amx_tiles_view(reinterpret_cast<const bf16*>(dst), out, in);
    }
    switch (w.format()) {
      case WeightFormat::f32:
      case WeightFormat::bf16: {
        const bool f32 = w.format() == WeightFormat::f32;
        std::memcpy(dst, r.dense.data, size_t(out * in) * (f32 ? 4 : 2));
        return Weight::dense(Tensor::view(dst, {out, in}, f32 ? DType::f32 : DType::bf16));
      }
      case WeightFormat::q8: {
        std::memcpy(dst, r.q8.q, size_t(out * in));
        Tensor scale({out});
        std::memcpy(scale.f32(), r.q8.scale, size_t(out) * 4);
        return Weight::q8_view(reinterpret_cast<const int8_t*>(dst), std::move(scale), out, in);
      }
      case WeightFormat::q4: {
        const size_t qb = size_t(out * in / 2), sb = size_t(out * (in / 32)) * 2;
        std::memcpy(dst, r.q4.qs, qb);
        std::memcpy(dst + qb, r.q4.scale, sb);
        return Weight::q4_view(reinterpret_cast<const uint8_t*>(dst), reinterpret_cast<const uint16_t*>(dst + qb), out,
                               in);
      }
    }
    return {};
  }

  bool amx_ = false;
  std::vector<AlignedBuffer> storage_;
  std::vector<Weight> slots_;
};

// Whether calibrate measures the bf16 AMX tile kernel: the CPU has it, and the ring's shapes fit.
bool measure_amx(const Settings& s) {
  return kernels::amx_bf16_available() && kernels::amx_bf16_fits(s.dim / 2, s.dim) &&
         kernels::amx_bf16_fits(s.small_dim / 2, s.small_dim);
}

// The AMX tile kernel's row buckets: the GEMV table's, then the GEMM table's (the kernel has no
// GEMV: one table for every row count).
std::vector<int64_t> amx_buckets(const Settings& s) {
  std::vector<int64_t> buckets = s.gemv_rows;
  buckets.insert(buckets.end(), s.gemm_rows.begin(), s.gemm_rows.end());
  return buckets;
}

// The attention kernel at the shape of a 2 GB-class model (16 query heads, 4 KV heads, 128 wide):
// one decode query against `context` cached positions, or a whole causal prefill of `tokens`.
// With ring_bytes > 0, a decode call reads its K and V from the next of copies filling
// ring_bytes, cold, as a model's decode step finds each layer's cache (its other kernels, and the
// other layers, evicted it since the last step); without, the one cache, hot in the core's cache.
// head_dim: 128, or 32 for the per-position cost (a position's work beyond its FLOPs).
double time_attention(int64_t context, int64_t tokens, double target_s, size_t ring_bytes = 0, int head_dim = 128) {
  const kernels::AttentionShape shape{16, 4, head_dim};
  const int64_t q_elems = tokens * shape.heads * shape.head_dim, kv_elems = context * shape.kv_heads * shape.head_dim;
  const size_t copies = std::max<size_t>(1, ring_bytes / (size_t(kv_elems) * 2 * sizeof(float)));
  std::vector<float> q(static_cast<size_t>(q_elems)), out(q.size());
  std::vector<std::vector<float>> k(copies, std::vector<float>(static_cast<size_t>(kv_elems))), v(k);
  Rng rng(5);
  for (float& x : q) x = rng.normal();
  for (float& x : k[0]) x = rng.normal();
  for (float& x : v[0]) x = rng.normal();
  for (size_t i = 1; i < copies; ++i) k[i] = k[0], v[i] = v[0];
  const int64_t first = context - tokens;
  size_t next = 0;
  auto once = [&] {
    const size_t i = next++ % copies;
    kernels::attention_forward(q.data(), k[i].data(), v[i].data(), out.data(), tokens, first, shape);
  };
  once();
  return best_of_3(once, target_s);
}

// Seconds of one empty OpenMP parallel region on the device's threads: the fork/join an
// element-wise kernel pays past its threshold (its `#pragma omp parallel for ... if (...)`).
double time_team(double target_s) {
  auto once = [] {
#pragma omp parallel
    {
      asm volatile("" ::: "memory");  // an empty region, which the compiler must still open
    }
  };
  once();
  return best_of_3(once, target_s);
}

// SwiGLU over `bytes` / 12 elements (read g and u, write h: 12 bytes an element), the model of
// the element-wise kernels between the matmuls: seconds a call.
double time_elementwise(size_t bytes, double target_s) {
  const size_t n = bytes / 12;
  std::vector<float> g(n, 0.5f), u(n, 0.25f), h(n);
  auto once = [&] { kernels::swiglu_forward(g.data(), u.data(), h.data(), int64_t(n)); };
  once();
  return best_of_3(once, target_s);
}

// Seconds per input activation element that kernels::linear spends preparing activations for a
// `format` weight before the product, as the engine does it: bf16 converts rows of f32 to bf16
// for oneDNN (matmul.cpp's as_bf16, one thread), int8 and int4 quantize each row (quant.h); f32
// needs nothing. Measured on rows x in = 512 x 2048.
double time_activation_prep(WeightFormat format, double target_s) {
  if (format == WeightFormat::f32) return 0;
  const int64_t rows = 512, in = 2048;
  std::vector<float> x(size_t(rows * in));
  Rng rng(9);
  for (float& v : x) v = rng.normal();
  std::vector<bf16> b(x.size());
  kernels::detail::PreparedActs acts;
  const kernels::QuantKernel kernel = kernels::quant_kernel();
  auto once = [&] {
    if (format == WeightFormat::bf16)
      for (int64_t r = 0; r < rows; ++r) f32_to_bf16(x.data() + r * in, b.data() + r * in, size_t(in));
    else if (format == WeightFormat::q8) kernels::detail::prepare_q8(kernel, rows, x.data(), in, in, acts);
    else kernels::detail::prepare_q4(kernel, rows, x.data(), in, in, acts);
  };
  once();
  return best_of_3(once, target_s) / double(rows * in);
}

// The last-level cache's size (0 when the system does not say).
size_t last_level_cache_bytes() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? size_t(l3) : 0;
}

// The cache probe's buffer: a quarter of the last-level cache, at most 32 MiB (past the L2 of
// any core, well inside an L3 that other tenants share).
size_t cache_probe_bytes() {
  const size_t llc = last_level_cache_bytes();
  return std::clamp(llc / 4, size_t(1) << 20, size_t(32) << 20);
}

// Mean seconds of `calls` all-gathers (gather) or reduce-scatters of `total` floats over comm,
// after one warm-up call; every rank makes the same calls, so no rank waits for a stray one.
double time_collective(parallel::Comm& comm, bool gather, int64_t total, int calls) {
  const int p = comm.size();
  const int64_t each = std::max<int64_t>(1, total / p);
  std::vector<float> send(size_t(gather ? each : each * p), 1.0f), recv(size_t(gather ? each * p : each));
  auto once = [&] {
    if (gather) comm.all_gather(send.data(), each, recv.data());
    else comm.reduce_scatter_sum(send.data(), recv.data(), each);
  };
  once();
  comm.barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < calls; ++i) once();
  return seconds_since(t0) / calls;
}

// What the devices measured, averaged over them (all measure at once).
struct Measured {
  double bandwidth = 0;                // bytes/s, one device's share
  double cache_bandwidth = 0;          // the same on a buffer in the last-level cache
  std::vector<Cost> gemv[4], gemm[4];  // by format and bucket: one call at each of bucket_rows()
  std::vector<Cost> gemv_small[4], gemm_small[4];  // the same on small_dim-sized weights
  double prep[4] = {};                 // time_activation_prep by format
  double attn_decode = 0, attn_prefill = 0;  // decode: the cache cold (read from a ring of copies)
  double attn_decode_hot = 0;                 // the same call on one cache, hot
  double attn_decode_hot32 = 0;               // the same, hot, with heads of 32
  double elementwise = 0;        // SwiGLU over ring_bytes / 4 (time_elementwise)
  // An empty thread team (time_team): device 0's own, not averaged over the devices, and kept
  // apart from fields() (accumulate files written before it was measured stay readable).
  double team = 0;
  double coll_small = 0, coll_big = 0;  // seconds of a collective: 1 float a device, coll_big_floats in all
  int coll_devices = 0;
  // bf16 on AMX tiles (measure_amx; else empty), one Cost a bucket of gemv_rows then gemm_rows,
  // on the large and on the small weights. Kept apart from fields() like `team` (accumulate
  // files of runs without them stay readable): fields_amx().
  std::vector<Cost> amx, amx_small;
};

std::vector<double*> fields_amx(Measured& m) {
  std::vector<double*> v;
  for (auto* table : {&m.amx, &m.amx_small})
    for (Cost& c : *table) v.insert(v.end(), {&c.seconds, &c.flops, &c.bytes, &c.calls, &c.weights, &c.prepared});
  return v;
}

// Every number of m, in a fixed order, for an all-reduce over devices (and back).
std::vector<double*> fields(Measured& m) {
  std::vector<double*> v = {&m.bandwidth, &m.cache_bandwidth, &m.attn_decode, &m.attn_prefill, &m.elementwise, &m.coll_small, &m.coll_big};
  v.insert(v.end(), {&m.attn_decode_hot, &m.attn_decode_hot32});
  for (int f = 0; f < 4; ++f) {
    for (auto* table : {&m.gemv[f], &m.gemm[f], &m.gemv_small[f], &m.gemm_small[f]})
      for (Cost& c : *table) v.insert(v.end(), {&c.seconds, &c.flops, &c.bytes, &c.calls, &c.weights, &c.prepared});
    v.push_back(&m.prep[f]);
  }
  return v;
}

// Collectives over `comm` (latency: 1 float a device; bandwidth: coll_big_floats in all), the
// all-gather and reduce-scatter averaged: the cost model charges both the same.
void measure_collectives(parallel::Comm& comm, const Settings& s, Measured& m) {
  m.coll_small = (time_collective(comm, true, comm.size(), s.coll_small_calls) +
                  time_collective(comm, false, comm.size(), s.coll_small_calls)) / 2;
  m.coll_big = (time_collective(comm, true, s.coll_big_floats, s.coll_big_calls) +
                time_collective(comm, false, s.coll_big_floats, s.coll_big_calls)) / 2;
  m.coll_devices = comm.size();
}

// Every measurement on one device; comm (null for one device) lines the devices up before each.
Measured measure_device(parallel::Comm* comm, const Settings& s, Progress* progress, int step) {
  Measured m;
  auto sync = [&](const std::string& what) {
    if (comm) comm->barrier();
    if (progress) progress->update(step++, what);
  };
  sync("memory bandwidth");
  m.bandwidth = kernels::measure_read_bandwidth(s.ring_bytes, s.quick ? 2 : 5) * 1e9;
  m.cache_bandwidth = kernels::measure_read_bandwidth(cache_probe_bytes(), s.quick ? 2 : 20) * 1e9;
  for (int f = 0; f < 4; ++f) {
    const WeightFormat format = kFormats[f];
    const std::string type = format_type(format);
    sync(type + " activation preparation");
    m.prep[f] = time_activation_prep(format, s.target_s / 4);
    const WeightRing ring(format, s.dim, s.ring_bytes), small(format, s.small_dim, s.small_ring_bytes);
    for (auto [buckets, table, table_small, name] :
         {std::tuple{&s.gemv_rows, &m.gemv[f], &m.gemv_small[f], "GEMV"}, {&s.gemm_rows, &m.gemm[f], &m.gemm_small[f], "GEMM"}})
      for (size_t b = 0; b < buckets->size(); ++b) {
        const int64_t lo = b > 0 ? (*buckets)[b - 1] : buckets == &s.gemm_rows ? s.gemv_rows.back() : 0;
        sync(type + " " + name + " rows " + std::to_string(lo + 1) + ".." + std::to_string((*buckets)[b]));
        Cost sum, sum_small;
        for (int64_t rows : bucket_rows(lo, (*buckets)[b], format)) {
          // Every shape starts on every device at once: without it the devices drift apart over a
          // bucket, and the last one's best window is taken while the others wait in the next
          // barrier, alone on cores (and this VM's one AMX unit) that a deployment shares.
          if (comm) comm->barrier();
          sum += ring.time_linear(rows, s.target_s, 4);
          if (comm) comm->barrier();
          sum_small += small.time_linear(rows, s.target_s / 4, 4);  // microseconds a call: quick
        }
        table->push_back(sum);
        table_small->push_back(sum_small);
      }
  }
  if (measure_amx(s)) {
    // The bf16 GEMM on AMX tiles, at the same shapes, rows and method as the bf16 tables.
    const WeightRing ring(WeightFormat::bf16, s.dim, s.ring_bytes, true),
        small(WeightFormat::bf16, s.small_dim, s.small_ring_bytes, true);
    const std::vector<int64_t> buckets = amx_buckets(s);
    for (size_t b = 0; b < buckets.size(); ++b) {
      const int64_t lo = b > 0 ? buckets[b - 1] : 0;
      sync("bf16 AMX tiles rows " + std::to_string(lo + 1) + ".." + std::to_string(buckets[b]));
      Cost sum, sum_small;
      for (int64_t rows : bucket_rows(lo, buckets[b], WeightFormat::bf16)) {
        if (comm) comm->barrier();
        sum += ring.time_linear(rows, s.target_s, 4);
        if (comm) comm->barrier();
        sum_small += small.time_linear(rows, s.target_s / 4, 4);
      }
      m.amx.push_back(sum);
      m.amx_small.push_back(sum_small);
    }
  }
  sync("attention");
  auto together = [&] {
    if (comm) comm->barrier();
  };
  m.attn_decode = time_attention(s.attn_context, 1, s.target_s, s.ring_bytes);
  together();
  m.attn_decode_hot = time_attention(s.attn_context, 1, s.target_s);
  together();
  m.attn_decode_hot32 = time_attention(s.attn_context, 1, s.target_s, 0, 32);
  together();
  m.attn_prefill = time_attention(s.attn_prefill, s.attn_prefill, s.target_s);
  together();
  m.elementwise = time_elementwise(s.ring_bytes / 4, s.target_s);
  together();
  m.team = time_team(s.target_s / 4);
  if (comm) {
    sync("collectives");
    measure_collectives(*comm, s, m);
  }
  if (progress) progress->update(step, "done");
  return m;
}

// The median of each number over rounds (or runs) of measurements. Within a measurement the best
// of three windows a few hundred milliseconds long is kept (best_of_3: an interrupt or a
// neighbour's burst only slows a window down); across rounds minutes apart the machine itself
// changes (this VM's read bandwidth swings 12-31 GB/s with the other tenants), and the median
// says what a typical minute gives, as `bench/sim_validate.sh` takes the median of its rounds of
// `moge bench` (whose repetitions keep their best, the same within-a-minute rule). The best of
// many rounds described the machine's fastest minute, which no benchmark minute matched.
Measured median_of(std::vector<Measured> rounds) {
  Measured out = rounds.front();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  // Each of `into`'s numbers: the median of the same number in each of `from`.
  auto median_into = [&](const std::vector<double*>& into, const std::vector<std::vector<double*>>& from) {
    for (size_t i = 0; i < into.size(); ++i) {
      std::vector<double> v;
      for (const auto& r : from) v.push_back(*r[i]);
      *into[i] = median(v);
    }
  };
  std::vector<std::vector<double*>> f;
  for (Measured& r : rounds) f.push_back(fields(r));
  median_into(fields(out), f);
  std::vector<double> team;
  for (const Measured& r : rounds) team.push_back(r.team);
  out.team = median(team);
  // AMX: over the rounds that measured it (an accumulate file's older runs may not have).
  Measured* amx_from = nullptr;
  for (Measured& r : rounds)
    if (!r.amx.empty()) amx_from = &r;
  out.amx = amx_from ? amx_from->amx : std::vector<Cost>{};
  out.amx_small = amx_from ? amx_from->amx_small : std::vector<Cost>{};
  std::vector<std::vector<double*>> fa;
  for (Measured& r : rounds)
    if (r.amx.size() == out.amx.size() && !r.amx.empty()) fa.push_back(fields_amx(r));
  median_into(fields_amx(out), fa);
  return out;
}

int measurement_count(const Settings& s) {
  // bandwidth, 4 x (prep, buckets), the AMX buckets, attention
  return 2 + 4 * int(1 + s.gemv_rows.size() + s.gemm_rows.size()) + (measure_amx(s) ? int(amx_buckets(s).size()) : 0) +
         1;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown CPU";
}

// /proc/meminfo fields in bytes (MemTotal, MemAvailable).
double meminfo_bytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  double kb = 0;
  std::string unit;
  while (in >> name >> kb >> unit)
    if (name == key + ":") return kb * 1024;
  return 0;
}

double round_sig(double v, int digits = 4) {
  if (v == 0 || !std::isfinite(v)) return v;
  const double scale = std::pow(10.0, digits - 1 - int(std::floor(std::log10(std::abs(v)))));
  return std::round(v * scale) / scale;
}

// The profile from the averaged measurements. A kernel's efficiencies are its achieved FLOP/s
// over the peak and its achieved bytes/s over the bandwidth, both from its time less the fixed
// call cost, so the cost model's roofline, max(FLOPs / (peak·c), bytes / (bw·m)) + overhead,
// gives back the measured time at the measured shape (both terms equal it).
nlohmann::json build_profile(const Measured& m, const Settings& s, int devices, int threads_per_device,
                             const std::string& backend) {
  using nlohmann::json;
  const double act = 4;  // the engine's activations are f32
  // The fixed cost of an element-wise kernel that runs a thread team (the device's
  // kernel_overhead_us): an empty team's fork/join. (The intercept of two small SwiGLUs' times as
  // a line in their size, used before, came out anywhere from 0 to 5.7 us between calibrations
  // on this VM: two times a few microseconds apart, each with its own noise.)
  const double ew_bytes = double(s.ring_bytes / 4 / 12) * 12;
  const double overhead = m.team;
  // Each bucket's fixed cost a call: its time, less activation preparation, as a line in the
  // weight's size through the large and the small weights; the intercept (within [0, the small
  // weights' time]). The large weights' time less it is what the efficiencies describe.
  auto fixed = [&](const Cost& big, const Cost& small, int f) {
    const double rb = big.seconds - big.prepared * m.prep[f], rs = small.seconds - small.prepared * m.prep[f];
    const double a = (rs * big.weights - rb * small.weights) / (big.weights - small.weights);
    return std::clamp(a, 0.0, std::max(rs, 0.0)) / big.calls;
  };
  auto run_time = [&](const Cost& c, double fixed_per_call, int f) {  // the roofline's part
    return std::max(c.seconds - c.calls * fixed_per_call - c.prepared * m.prep[f], 0.5 * c.seconds);
  };
  // Bandwidth: the read probe's, or what a GEMV streamed if that was more (the probe is one
  // access pattern; a fraction clamped at 1 would make the roofline slower than the kernel).
  double bw = m.bandwidth;
  constexpr int kBf16 = 1;  // kFormats' index of bf16: the AMX tiles' type
  for (int f = 0; f < 4; ++f)
    for (auto [table, small] : {std::pair{&m.gemv[f], &m.gemv_small[f]}, {&m.gemm[f], &m.gemm_small[f]},
                                {f == kBf16 ? &m.amx : nullptr, &m.amx_small}})
      for (size_t i = 0; table && i < table->size(); ++i) {
        const Cost& c = (*table)[i];
        bw = std::max(bw, c.bytes / run_time(c, fixed(c, (*small)[i], f), f));
      }
  json peaks = json::object(), gemm = json::array(), gemv = json::array(), prep = json::object(),
       group = json::object(), amx_tiles = json::array();
  for (int f = 0; f < 4; ++f) {
    const char* type = format_type(kFormats[f]);
    prep[type] = round_sig(m.prep[f] * 1e9);
    // kernels::linear_group's grouped GEMVs (weight.cpp): quantized weights, and bf16 where our
    // GEMV runs; f32 never.
    if (kFormats[f] != WeightFormat::f32 && (kFormats[f] != WeightFormat::bf16 || kernels::gemv_bf16_supported()))
      group[type] = kernels::kGemvMaxRows;
    auto rates = [&](const Cost& c, double fixed_per_call) {  // {FLOP/s, bytes/s} of the roofline's part
      const double run = run_time(c, fixed_per_call, f);
      return std::pair{c.flops / run, c.bytes / run};
    };
    // Peak: the highest FLOP/s of any bucket (a large GEMM as a rule; moge's int8 kernels are
    // made for small row counts and may peak below the largest), so every fraction is <= 1.
    double peak = 0;
    for (auto [table, small] : {std::pair{&m.gemv[f], &m.gemv_small[f]}, {&m.gemm[f], &m.gemm_small[f]},
                                {f == kBf16 ? &m.amx : nullptr, &m.amx_small}})
      for (size_t i = 0; table && i < table->size(); ++i)
        peak = std::max(peak, rates((*table)[i], fixed((*table)[i], (*small)[i], f)).first);
    peaks[type] = round_sig(peak / 1e12);
    auto row = [&](const Cost& c, const Cost& small, int64_t max_rows, bool last) {
      const double a = fixed(c, small, f);
      const auto [flops, bytes] = rates(c, a);
      json r = {{"type", type},
                {"compute", round_sig(std::clamp(flops / peak, 1e-4, 1.0), 3)},
                {"memory", round_sig(std::clamp(bytes / bw, 1e-4, 1.0), 3)},
                {"overhead_us", round_sig(a * 1e6, 3)}};
      if (!last) r["max_rows"] = max_rows;
      return r;
    };
    for (size_t i = 0; i < s.gemv_rows.size(); ++i)
      gemv.push_back(row(m.gemv[f][i], m.gemv_small[f][i], s.gemv_rows[i], i + 1 == s.gemv_rows.size()));
    for (size_t i = 0; i < s.gemm_rows.size(); ++i)
      gemm.push_back(row(m.gemm[f][i], m.gemm_small[f][i], s.gemm_rows[i], i + 1 == s.gemm_rows.size()));
    if (f == kBf16 && !m.amx.empty()) {
      const std::vector<int64_t> buckets = amx_buckets(s);
      for (size_t i = 0; i < m.amx.size() && i < buckets.size(); ++i)
        amx_tiles.push_back(row(m.amx[i], m.amx_small[i], buckets[i], i + 1 == buckets.size()));
    }
  }
  const double peak_bf16 = peaks["bf16"].get<double>() * 1e12;
  // Attention as the cost model counts it (predict.cpp), the cache in f32 as the engine keeps it.
  const double H = 16, KV = 4, hd = 128, C = double(s.attn_context), L = double(s.attn_prefill);
  // Each row carries the thread team its call forks (attend_rows and attend_tiles always run one):
  // overhead_us, the empty region's time; the rest is the rate.
  auto attn_time = [&](double t) { return std::max(t - overhead, 0.5 * t); };
  auto attn_row = [&](double flops, double bytes, double t, bool decode) {
    json r = {{"type", "bf16"},
              {"compute", round_sig(std::clamp(flops / attn_time(t) / peak_bf16, 1e-4, 1.0), 3)},
              {"memory", round_sig(std::clamp(bytes / attn_time(t) / bw, 1e-4, 1.0), 3)},
              {"overhead_us", round_sig(overhead * 1e6, 3)}};
    if (decode) r["max_rows"] = 1;
    return r;
  };
  // Decode, as predict.cpp costs this engine's (serial_cost): the arithmetic at the rate of the
  // call with its cache hot, and the cache's first read (K and V once per KV head, the new token
  // written) at the rate the cold call took longer; the cost model adds the two.
  // The hot call's time, less its team, as a line in the head width through 32 and 128:
  // t = H · C · (a · hd + b). Its slope is the arithmetic (4 FLOPs an element: compute), its
  // intercept b the cost of a position beyond it (per_position_ns).
  const double hot128 = attn_time(m.attn_decode_hot), hot32 = attn_time(m.attn_decode_hot32);
  const double per_element = std::max((hot128 - hot32) / (96 * H * C), 0.1 * hot128 / (hd * H * C));
  const double per_position = std::max(hot128 / (H * C) - hd * per_element, 0.0);
  json decode = attn_row(4 * H * hd * C, 0, m.attn_decode_hot, true);
  decode["compute"] = round_sig(std::clamp(4 / per_element / peak_bf16, 1e-4, 1.0), 3);
  decode["per_position_ns"] = round_sig(per_position * 1e9, 3);
  const double cold_bytes = 2 * H * hd * act + C * 2 * KV * hd * 4 + 2 * KV * hd * act;
  const double cold_extra = m.attn_decode - m.attn_decode_hot;  // noise can make it <= 0: memory 1
  decode["memory"] = cold_extra > 0 ? round_sig(std::clamp(cold_bytes / cold_extra / bw, 1e-4, 1.0), 3) : 1.0;
  json attention = json::array(
      {decode, attn_row(4 * H * hd * L * (L + 1) / 2, L * 2 * H * hd * act + L * 2 * KV * hd * (act + 4), m.attn_prefill, false)});

  // Collectives: the local comm reads the peers' buffers directly (one synchronization a call),
  // so latency + (p-1)/p · S / bandwidth with one step. Under MPI at p = 2 a ring is one step too.
  // The default efficiency: compute as bf16 at the largest row count, memory as the element-wise
  // kernels stream (the cost model costs them with it, predict.cpp).
  json default_eff = {{"compute", gemm[2 * s.gemm_rows.size() - 1]["compute"]},
                      {"memory", round_sig(std::clamp(ew_bytes / std::max(m.elementwise - overhead, 0.5 * m.elementwise) / bw,
                                                      1e-4, 1.0), 3)}};
  json tier;
  {
    const int p = m.coll_devices;
    const double bytes = double(s.coll_big_floats) * 4;
    const double latency = m.coll_small;
    const double bandwidth = double(p - 1) / p * bytes / std::max(m.coll_big - latency, 1e-9);
    tier = {{"latency_us", round_sig(latency * 1e6)}, {"bandwidth_gb_s", round_sig(bandwidth / 1e9)},
            {"algorithm", "direct"}};
  }
  const double total = meminfo_bytes("MemTotal"), available = meminfo_bytes("MemAvailable");
  const double gib = 1024.0 * 1024.0 * 1024.0;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  const std::string cpu = cpu_model(), tpd = std::to_string(threads_per_device);
  const std::string full = std::to_string(s.dim), half = std::to_string(s.dim / 2);
  const std::string dims = full + "x" + full + ", " + half + "x" + full + " and " + full + "x" + half;
  json j = {
      {"name", "this CPU (" + cpu + "): " + std::to_string(devices) + " device(s) of " + tpd + " thread(s)"},
      {"devices_per_node", devices},
      {"nodes", 1},
      {"devices_per_card", 1},
      {"device",
       {{"peak_tflops", peaks},
        {"memory_bandwidth_gb_s", round_sig(bw / 1e9)},
        {"memory_capacity_gib", round_sig(total / devices / gib)},

        {"memory_reserved_gib", round_sig((total - available) / devices / gib)},
        {"activation_bytes", 4},
        {"kernel_overhead_us", round_sig(overhead * 1e6)},
        {"kernels_per_expert", 1},
        {"activation_prep_ns", prep},
        {"linear_group_max_rows", group}}},
      {"efficiency",
       {{"default", default_eff},
        {"gemv_max_rows", s.gemv_rows.back()},
        {"gemm", gemm},
        {"gemv", gemv},
        {"attention", attention}}},
      {"interconnect", {{"intra_node", tier}, {"inter_node", tier}}},
      {"sources",
       {"measured by moge sim calibrate" + std::string(s.quick ? " --quick" : "") + " on " + cpu + ", " + date + ", " +
        std::to_string(threads_per_device * devices) + " thread(s) in all, " + std::to_string(devices) +
        " device(s) of " + tpd +
        ", collectives through " + backend}},
      {"assumptions",
       {"peak_tflops: the highest FLOP/s measured per type (kernels::linear on " + dims + " weights, rows 1 to " +
            std::to_string(s.gemm_rows.back()) + "), not a datasheet figure; int4 is moge's Q4 (W4A8) kernel.",
        "Efficiencies: per row bucket, achieved FLOP/s over that peak and bytes/s over memory_bandwidth_gb_s, from "
        "the time less the bucket's overhead_us and the activation preparation a call, over one call at each of up "
        "to three row counts spread over the bucket (unaligned counts included: experts get any) on each of " + dims +
            " weights, cycled through " + std::to_string(s.ring_bytes >> 20) + " MiB of copies (so GEMVs read "
            "memory, not cache); bytes as the cost model counts them (int8 1 byte a weight, int4 18/32), "
            "activations f32.",
        "overhead_us of a gemm/gemv row: the intercept of the bucket's time (less activation preparation) as a line "
        "in the weight's size, through the weights above and the same calls on " + std::to_string(s.small_dim) +
            "-wide ones (cycled through " + std::to_string(s.small_ring_bytes >> 20) + " MiB): the fixed cost "
            "of a call (thread team, oneDNN's dispatch).",
        "activation_prep_ns: seconds per input activation element (x 1e9) of what kernels::linear does to the "
        "activations before the product, 512 x 2048 of them: bf16 converts them to bf16 a row at a time "
        "(matmul.cpp), int8/int4 quantize each row (quant.h); f32 nothing.",
        "linear_group_max_rows: kernels::kGemvMaxRows, the rows up to which kernels::linear_group runs a layer's "
        "expert GEMVs as one thread team (int8, int4, bf16 where the CPU has AVX-512 BF16; f32 never).",
        "kernel_overhead_us: the fixed cost of an element-wise kernel past its thread-team threshold: an empty "
        "OpenMP parallel region on the device's threads (its fork/join), device 0's. "
            "kernels_per_expert 1: the SwiGLU moge runs for each expert's rows (moe/mlp.cpp).",
        "cache_mib: the last-level cache (sysconf) / devices; cache_bandwidth_gb_s: kernels/membw's read probe "
        "on " + std::to_string(cache_probe_bytes() >> 20) + " MiB (in that cache), all devices at once, at least "
        "memory_bandwidth_gb_s.",
        "memory_bandwidth_gb_s: kernels/membw's read probe, all devices reading at once (one device's share), "
        "or the most bytes/s a measured kernel streamed when that is more.",
        "efficiency.default: compute as bf16 at the largest row count; memory from kernels::swiglu_forward over " +
            std::to_string(s.ring_bytes / 4 >> 20) + " MiB (the element-wise kernels' model).",
        "attention: kernels::attention_forward with 16 query and 4 KV heads of 128, f32 cache; compute as a "
        "fraction of the bf16 peak (the cost model costs attention as bf16); overhead_us the thread team each "
        "call forks. Decode at " + std::to_string(s.attn_context) + " cached positions: compute from the call "
        "with its cache hot (one cache) as a line in the head width (32 and 128): its slope the arithmetic "
        "(compute), its intercept a position's cost beyond it (per_position_ns); memory from how much longer the "
        "call took with its cache cold (a ring of copies over the GEMV ring's size), on the cache read once per KV "
        "head; the cost model adds the three (sim::serial_cost).",
        "memory_capacity_gib: MemTotal / devices; memory_reserved_gib: what was in use (MemTotal - MemAvailable) "
        "when calibrated.",
        "Collectives: mean of all_gather and reduce_scatter_sum; latency from 1 float a device, bandwidth from " +
            std::to_string(s.coll_big_floats * 4 >> 20) + " MB in all over " + std::to_string(m.coll_devices) +
            " devices; inter_node is a copy of intra_node (one machine)."}}};
  if (!amx_tiles.empty()) {
    j["efficiency"]["amx_tiles"] = amx_tiles;
    j["assumptions"].push_back(
        "efficiency.amx_tiles: bf16 weights packed into AMX tiles (kernels::amx_pack_weight), as expert-parallel "
        "devices hold their routed experts on this CPU, run by kernels::linear (amx_linear_bf16) at the same shapes, "
        "row counts and method as the bf16 rows (the GEMV buckets, then the GEMM ones: the kernel has no GEMV), "
        "FLOPs and bytes on the rows rounded up to 16 (sim::amx_tile_rows), the preparation on the real rows.");
  }
  if (last_level_cache_bytes() > 0) {  // else the profile has one memory level
    j["device"]["cache_mib"] = round_sig(double(last_level_cache_bytes()) / devices / (1 << 20));
    j["device"]["cache_bandwidth_gb_s"] = round_sig(std::max(m.cache_bandwidth, bw) / 1e9);
  }
  return j;
}

// --accumulate FILE: the median of this run and the runs before it that recorded themselves in
// FILE (median_of), and this run recorded there. Runs a few minutes apart then add up to a
// calibration of many rounds, each run short (on a shared machine, a run that pauses the others
// must not take long). FILE holds each run's raw numbers in fields()' order with the settings they
// were made with; a FILE from other settings or devices is an error.
void accumulate_median(Measured& m, const std::string& path) {
  const std::vector<double*> mine = fields(m);
  std::vector<Measured> runs;
  nlohmann::json j = {{"coll_devices", m.coll_devices}, {"team", nlohmann::json::array()},
                      {"fields", nlohmann::json::array()}};
  const std::vector<double*> mine_amx = fields_amx(m);
  if (std::filesystem::exists(path)) {
    j = nlohmann::json::parse(read_text_file(path));
    const bool ok = j.contains("fields") && j["fields"].is_array() && j.contains("team") && j["team"].is_array() &&
                    j.value("coll_devices", -1) == m.coll_devices;
    for (size_t r = 0; ok && r < j["fields"].size(); ++r) {
      const std::vector<double> before = j["fields"][r].get<std::vector<double>>();
      check(before.size() == mine.size(), path + ": measurements of other settings or devices (" +
                                              std::to_string(before.size()) + " numbers, " +
                                              std::to_string(mine.size()) + " expected)");
      Measured prev = m;
      const std::vector<double*> p = fields(prev);
      for (size_t i = 0; i < p.size(); ++i) *p[i] = before[i];
      prev.team = j["team"][r].get<double>();
      // "amx": each run's fields_amx(), [] where it did not measure them (or predates them).
      const std::vector<double> amx = j.contains("amx") && r < j["amx"].size()
                                          ? j["amx"][r].get<std::vector<double>>() : std::vector<double>{};
      if (amx.size() == mine_amx.size() && !amx.empty()) {
        const std::vector<double*> pa = fields_amx(prev);
        for (size_t i = 0; i < pa.size(); ++i) *pa[i] = amx[i];
      } else {
        prev.amx.clear(), prev.amx_small.clear();
      }
      runs.push_back(prev);
    }
    check(ok, path + ": measurements of other settings or devices (not a list of runs of " +
                  std::to_string(mine.size()) + " numbers over " + std::to_string(m.coll_devices) + " devices)");
  }
  std::vector<double> now;
  for (double* x : mine) now.push_back(*x);
  j["fields"].push_back(now);
  j["team"].push_back(m.team);
  if (!j.contains("amx")) j["amx"] = nlohmann::json::array();
  while (j["amx"].size() + 1 < j["fields"].size()) j["amx"].push_back(nlohmann::json::array());
  std::vector<double> now_amx;
  for (double* x : mine_amx) now_amx.push_back(*x);
  j["amx"].push_back(now_amx);
  j["runs"] = j["fields"].size();
  write_file_atomically(path, j.dump() + "\n");
  if (!runs.empty())
    std::fprintf(stderr, "calibrate: the median of this run and %zu before it (%s)\n", runs.size(), path.c_str());
  runs.push_back(m);
  m = median_of(std::move(runs));
}

struct CalibrateArgs {
  std::string output, devices, accumulate;
  int threads = 0, rounds = 1;
  bool quick = false;
};

void run_calibrate(const CalibrateArgs& a) {
  const Settings s = Settings::make(a.quick);
  const DevicesSpec spec = parse_devices(a.devices);
  const int threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  if (a.threads > 0) omp_set_num_threads(a.threads);
  std::string backend = spec.kind == DevicesSpec::Kind::mpi ? "MPI (MpiComm)" : "local devices (run_on_devices)";
  run_on(spec, threads, [&](parallel::Comm* comm, int device) {
    const bool main = device == 0;
    std::unique_ptr<Progress> progress;
    if (main) progress = std::make_unique<Progress>("calibrate", a.rounds * measurement_count(s), "measurements");
    const int count = measurement_count(s);
    std::vector<Measured> rounds;
    for (int r = 0; r < a.rounds; ++r) rounds.push_back(measure_device(comm, s, progress.get(), r * count));
    Measured m = median_of(std::move(rounds));
    const int devices = comm ? comm->size() : 1;
    if (comm) {
      std::vector<double*> f = fields(m);
      for (double* x : fields_amx(m)) f.push_back(x);
      std::vector<double> v;
      for (double* x : f) v.push_back(*x);
      comm->all_reduce_sum(v.data(), int64_t(v.size()));
      for (size_t i = 0; i < v.size(); ++i) *f[i] = v[i] / devices;
    } else {
      // One device has no peers: the intra-node tier is measured between two local devices
      // sharing the threads, so the profile still says what a collective costs here.
      if (progress) progress->update(a.rounds * measurement_count(s) - 1, "collectives (2 local devices)");
      Measured c;
      parallel::run_on_devices(2, [&](parallel::Comm& two, int d) {
        Measured mine;
        measure_collectives(two, s, mine);
        if (d == 0) c = mine;
      }, std::max(1, threads / 2));
      m.coll_small = c.coll_small, m.coll_big = c.coll_big, m.coll_devices = c.coll_devices;
      backend = "2 local devices (run_on_devices)";
    }
    if (!main) return;
    progress->finish();
    if (!a.accumulate.empty()) accumulate_median(m, a.accumulate);
    // Local devices share the threads; MPI ranks each run -t of their own.
    const int per_device = spec.kind == DevicesSpec::Kind::mpi ? threads : std::max(1, threads / devices);
    const nlohmann::json j = build_profile(m, s, devices, per_device, backend);
    const std::string text = j.dump(2) + "\n";
    const std::string name = a.output.empty() ? "calibrated profile" : a.output;
    sim::HardwareProfile::from_json_text(text, name);  // what we write must load
    if (a.output.empty()) {
      std::printf("%s", text.c_str());
    } else {
      write_file_atomically(a.output, text);
      std::fprintf(stderr, "calibrate: wrote %s\n", a.output.c_str());
    }
  });
}

}  // namespace

void add_sim_calibrate_command(CLI::App& sim) {
  auto a = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = sim.add_subcommand("calibrate", "measure this machine's CPU into a hardware profile (JSON)");
  cmd->add_option("-o,--output", a->output, "profile to write (default: print it)");
  cmd->add_option("-t,--threads", a->threads, "threads in all (default: all cores)");
  cmd->add_option("--rounds", a->rounds, "measure everything this many times in a row and keep the median of each (each measurement is "
                  "the best of its three short windows)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--accumulate", a->accumulate,
                  "record this run's raw measurements in FILE and write the profile from the median of every run "
                  "recorded there: short runs minutes apart add up to many rounds");
  cmd->add_flag("--quick", a->quick, "small, short measurements (seconds; for tests, not for predictions)");
  cmd->add_option("--devices", a->devices,
                  "devices the profile describes: D in-process devices sharing the threads, or 'mpi' (one a rank, "
                  "under mpirun)");
  cmd->callback([a] { run_calibrate(*a); });
}

}  // namespace moge::cli
