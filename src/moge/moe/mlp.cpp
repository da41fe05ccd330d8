#include "moge/moe/mlp.h"

#include <vector>

#include "moge/core/error.h"
#include "moge/kernels/swiglu.h"

namespace moge::moe {

using kernels::MatRef;
using kernels::matmul;

namespace {
const MatRef& dense(const kernels::WeightRef& w) {
  // The message is built only on failure: this runs for every expert of every backward.
  if ((w.format != kernels::WeightFormat::f32 && w.format != kernels::WeightFormat::bf16) || w.amx_tiles)
    throw Error("backward needs f32 or bf16 weights stored [out, in]");
  return w.dense;
}
}  // namespace

void mlp_forward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act, float* y) {
  if (rows == 0) return;
  kernels::linear(rows, x, w.gate, act.g);
  kernels::linear(rows, x, w.up, act.u);
  kernels::swiglu_forward(act.g, act.u, act.h, rows * ff);
  kernels::linear(rows, act.h, w.down, y);
}

void mlp_forward_group(const MlpJob* jobs, size_t count) {
  thread_local std::vector<kernels::LinearTask> tasks;
  tasks.clear();
  for (size_t i = 0; i < count; ++i) {
    const MlpJob& j = jobs[i];
    tasks.push_back({&j.w->gate, j.rows, j.x, j.act.g});
    tasks.push_back({&j.w->up, j.rows, j.x, j.act.u});
  }
  kernels::linear_group(tasks.data(), tasks.size());
  for (size_t i = 0; i < count; ++i) kernels::swiglu_forward(jobs[i].act.g, jobs[i].act.u, jobs[i].act.h, jobs[i].rows * jobs[i].ff);
  tasks.clear();
  for (size_t i = 0; i < count; ++i) tasks.push_back({&jobs[i].w->down, jobs[i].rows, jobs[i].act.h, jobs[i].y});
  kernels::linear_group(tasks.data(), tasks.size());
}

void mlp_backward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act,
                  const float* dy, float* dx, float* d_gate, float* d_up, float* d_down) {
  if (rows == 0) return;
  // d down += dyᵀ h;  d h = dy · down  (stored in act.h after its last use)
  matmul(d, ff, rows, MatRef::f32(dy, d, true), MatRef::f32(act.h, ff), d_down, ff, true);
  float* dh = act.h;
  matmul(rows, ff, d, MatRef::f32(dy, d), dense(w.down), dh, ff);
  kernels::swiglu_backward(act.g, act.u, dh, act.g, act.u, rows * ff);
  const float* dg = act.g;
  const float* du = act.u;
  matmul(ff, d, rows, MatRef::f32(dg, ff, true), MatRef::f32(x, d), d_gate, d, true);
  matmul(ff, d, rows, MatRef::f32(du, ff, true), MatRef::f32(x, d), d_up, d, true);
  matmul(rows, d, ff, MatRef::f32(dg, ff), dense(w.gate), dx, d);
  matmul(rows, d, ff, MatRef::f32(du, ff), dense(w.up), dx, d, true);
}

}  // namespace moge::moe
