#include "moge/kernels/weight.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "moge/core/error.h"
#include "moge/kernels/amx_bf16.h"
#include "moge/kernels/gemv_bf16.h"

namespace moge::kernels {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::q8: return "int8";
    case WeightFormat::q4: return "int4";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32") return WeightFormat::f32;
  if (name == "bf16") return WeightFormat::bf16;
  if (name == "int8") return WeightFormat::q8;
  if (name == "int4") return WeightFormat::q4;
  throw Error("weight type '" + name + "' is not one of f32, bf16, int8, int4");
}

WeightFormat format_for_width(WeightFormat format, int64_t in) {
  return format == WeightFormat::q4 && in % 32 != 0 ? WeightFormat::q8 : format;
}

namespace {

// Tasks linear_group splits over one team: GEMVs, whose time is their weight bytes. Beyond a few
// rows the quantized kernels are compute-bound (time ∝ bytes × rows: a byte split would leave
// the thread holding a 512-row shared expert far behind) and run one linear() each.
bool grouped(const WeightRef& w, int64_t rows) {
  return rows <= kGemvMaxRows && (w.format == WeightFormat::q8 || w.format == WeightFormat::q4 ||
                                      (w.format == WeightFormat::bf16 && !w.amx_tiles && gemv_bf16_supported()));
}

int64_t row_bytes(const WeightRef& w) {  // of one output row, all arrays
  switch (w.format) {
    case WeightFormat::q8: return w.in + 4;
    case WeightFormat::q4: return w.in / 2 + w.in / 16;
    default: return w.in * 2;
  }
}

// One task's activations, prepared for its format.
struct Acts {
  const float* x;
  int64_t rows, in;
  WeightFormat format;
  detail::PreparedActs q;  // q8, q4
  std::vector<bf16> b;     // bf16
};

struct Job {
  const LinearTask* task;
  size_t acts;    // index into the prepared activations
  int64_t begin;  // byte offset of the task's first row in the concatenation of all jobs
};

// Output rows are handed out in tiles of 16 (no two threads write one 64-byte line of y).
constexpr int64_t kTile = 16;

// The first row of `job` at or after byte offset `at`, rounded to a tile: the same offset gives
// the same row from both threads that share it, so the ranges tile every matrix exactly.
int64_t row_at(const Job& job, int64_t at) {
  const int64_t rb = row_bytes(*job.task->w), out = job.task->w->out;
  const int64_t tiles = (at - job.begin + kTile * rb / 2) / (kTile * rb);
  return std::clamp(tiles * kTile, int64_t(0), out);
}

thread_local std::vector<Acts> t_acts;  // reused across calls: no allocation at decode
thread_local std::vector<Job> t_jobs;

void run_range(const Job& j, const Acts& a, int64_t o0, int64_t o1, QuantKernel kernel) {
  const WeightRef& w = *j.task->w;
  switch (w.format) {
    case WeightFormat::q8: return detail::q8_range_fn(kernel)(a.q.acts, w.q8, o0, o1, j.task->y, w.out);
    case WeightFormat::q4: return detail::q4_range_fn(kernel)(a.q.acts, w.q4, o0, o1, j.task->y, w.out);
    default:
      return gemv_bf16(j.task->rows, a.b.data(), w.in, static_cast<const bf16*>(w.dense.data), w.dense.ld, w.in, o0,
                       o1, j.task->y, w.out);
  }
}

}  // namespace

void linear_group(const LinearTask* tasks, size_t count) {
  const QuantKernel kernel = quant_kernel();
  std::vector<Job>& jobs = t_jobs;  // the master thread's, shared with the team below
  std::vector<Acts>& acts = t_acts;
  jobs.clear();
  size_t n_acts = 0;
  int64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const LinearTask& t = tasks[i];
    const WeightRef& w = *t.w;
    if (t.rows == 0 || !grouped(w, t.rows)) continue;
    check(w.format != WeightFormat::q8 || w.in <= 131072, "linear: int8 weight wider than 131072");
    size_t a = 0;  // activations already prepared for an earlier task, or new ones
    while (a < n_acts && !(acts[a].x == t.x && acts[a].rows == t.rows && acts[a].in == w.in &&
                           acts[a].format == w.format))
      ++a;
    if (a == n_acts) {
      if (n_acts == acts.size()) acts.emplace_back();
      Acts& p = acts[n_acts++];
      p.x = t.x, p.rows = t.rows, p.in = w.in, p.format = w.format;
      if (w.format == WeightFormat::q8) detail::prepare_q8(kernel, t.rows, t.x, w.in, w.in, p.q);
      else if (w.format == WeightFormat::q4) detail::prepare_q4(kernel, t.rows, t.x, w.in, w.in, p.q);
      else {
        p.b.resize(size_t(t.rows * w.in));
        for (int64_t k = 0; k < t.rows * w.in; ++k) p.b[k] = f32_to_bf16(t.x[k]);
      }
    }
    jobs.push_back({&t, a, total});
    total += w.out * row_bytes(w);
  }
  const bool parallel = total >= (64 << 10) && omp_get_max_threads() > 1 && !omp_in_parallel();
#pragma omp parallel if (parallel)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
    for (const Job& j : jobs) {
      const int64_t end = j.begin + j.task->w->out * row_bytes(*j.task->w);
      if (end <= lo || j.begin >= hi) continue;
      const int64_t o0 = row_at(j, lo), o1 = row_at(j, hi);
      if (o0 < o1) run_range(j, acts[j.acts], o0, o1, kernel);
    }
  }
  for (size_t i = 0; i < count; ++i)
    if (tasks[i].rows > 0 && !grouped(*tasks[i].w, tasks[i].rows))
      linear(tasks[i].rows, tasks[i].x, *tasks[i].w, tasks[i].y);
}

void linear(int64_t rows, const float* x, const WeightRef& w, float* y) {
  if (w.amx_tiles) return amx_linear_bf16(rows, x, w.out, w.in, static_cast<const bf16*>(w.dense.data), y);
  if (grouped(w, rows)) {
    const LinearTask task{&w, rows, x, y};
    return linear_group(&task, 1);
  }
  switch (w.format) {
    case WeightFormat::q8: return gemm_q8(rows, x, w.in, w.q8, y, w.out);
    case WeightFormat::q4: return gemm_q4(rows, x, w.in, w.q4, y, w.out);
    default: {
      MatRef b = w.dense;
      b.trans = true;
      // bf16 weights are served ones: padded rows make an expert's time near linear in its tokens
      // (matmul.h), which expert-parallel balance needs, and spare oneDNN's slow row blockings.
      // f32 weights are training's masters, whose row counts change every step: buckets, so as not
      // to create primitives all through a run.
      const Rows split = w.format == WeightFormat::bf16 ? Rows::padded : Rows::bucketed;
      matmul(rows, w.out, w.in, MatRef::f32(x, w.in), b, y, w.out, false, split);
    }
  }
}

Weight Weight::dense(Tensor t) {
  check(t.rank() == 2, "a weight matrix must be 2-D, got " + shape_str(t.shape()));
  Weight w;
  w.dense_ = std::move(t);
  const bool f32 = w.dense_.dtype() == DType::f32;
  w.ref_.format = f32 ? WeightFormat::f32 : WeightFormat::bf16;
  w.ref_.out = w.dense_.dim(0);
  w.ref_.in = w.dense_.dim(1);
  w.ref_.dense = f32 ? MatRef::f32(w.dense_.f32(), w.ref_.in) : MatRef::bf16(w.dense_.bf16_data(), w.ref_.in);
  return w;
}

Weight Weight::amx_tiles_view(const bf16* tiles, int64_t out, int64_t in) {
  check(amx_bf16_available() && amx_bf16_fits(out, in), "AMX tiles: no AMX-BF16 here, or a weight [" +
                                                            std::to_string(out) + ", " + std::to_string(in) +
                                                            "] whose sides are not multiples of 32");
  Weight w;
  w.ref_.format = WeightFormat::bf16;
  w.ref_.dense = MatRef::bf16(tiles, in);
  w.ref_.amx_tiles = true;
  w.ref_.out = out;
  w.ref_.in = in;
  return w;
}

Weight Weight::quantized(Q8Weight q) {
  Weight w;
  w.q8_ = std::move(q);
  w.ref_ = {WeightFormat::q8, {}, w.q8_.ref(), {}, w.q8_.out, w.q8_.in};
  return w;
}

Weight Weight::quantized(Q4Weight q) {
  Weight w;
  w.q4_ = std::move(q);
  w.ref_ = {WeightFormat::q4, {}, {}, w.q4_.ref(), w.q4_.out, w.q4_.in};
  return w;
}

Weight Weight::q8_view(const int8_t* q, Tensor scale, int64_t out, int64_t in) {
  check(scale.numel() == out && scale.dtype() == DType::f32,
        "int8 weight [" + std::to_string(out) + ", " + std::to_string(in) + "]: weight_scale must hold " +
            std::to_string(out) + " f32 values, has shape " + shape_str(scale.shape()));
  Weight w;
  w.dense_ = std::move(scale);
  w.row_sum_.resize(out);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    int32_t s = 0;
    for (int64_t k = 0; k < in; ++k) s += q[o * in + k];
    w.row_sum_[o] = s;
  }
  w.ref_ = {WeightFormat::q8, {}, {q, w.dense_.f32(), w.row_sum_.data(), out, in}, {}, out, in};
  return w;
}

Weight Weight::q4_view(const uint8_t* qs, const uint16_t* scale, int64_t out, int64_t in) {
  check(in % 32 == 0, "int4 weight [" + std::to_string(out) + ", " + std::to_string(in) +
                          "]: columns must be a multiple of 32");
  Weight w;
  if (reinterpret_cast<uintptr_t>(scale) % alignof(uint16_t) != 0) {  // a file may place them anywhere
    w.q4_scale_copy_.resize(size_t(out * (in / 32)));
    std::memcpy(w.q4_scale_copy_.data(), scale, w.q4_scale_copy_.size() * sizeof(uint16_t));
    scale = w.q4_scale_copy_.data();
  }
  w.ref_ = {WeightFormat::q4, {}, {}, {qs, scale, out, in}, out, in};
  return w;
}

Weight Weight::from_f32(const Tensor& t, WeightFormat format) {
  const int64_t out = t.dim(0), in = t.dim(1);
  switch (format_for_width(format, in)) {
    case WeightFormat::f32: return dense(t.to(DType::f32));
    case WeightFormat::bf16: return dense(t.to(DType::bf16));
    case WeightFormat::q8: return quantized(quantize_q8(t.f32(), out, in));
    case WeightFormat::q4: return quantized(quantize_q4(t.f32(), out, in));
  }
  return {};
}

size_t Weight::bytes() const {
  switch (ref_.format) {
    case WeightFormat::f32: return size_t(ref_.out * ref_.in) * 4;
    case WeightFormat::bf16: return size_t(ref_.out * ref_.in) * 2;
    case WeightFormat::q8: return size_t(ref_.out * ref_.in) + size_t(ref_.out) * 4;
    case WeightFormat::q4: return size_t(ref_.out * ref_.in) / 2 + size_t(ref_.out * ref_.in / 32) * 2;
  }
  return 0;
}

}  // namespace moge::kernels
