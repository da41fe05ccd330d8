#include "moge/moe/mlp.h"

#include "moge/kernels/swiglu.h"

namespace moge::moe {

using kernels::MatRef;
using kernels::matmul;

namespace {
MatRef transposed(MatRef m) {
  m.trans = true;
  return m;
}
}  // namespace

void mlp_forward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act, float* y) {
  if (rows == 0) return;
  matmul(rows, ff, d, MatRef::f32(x, d), transposed(w.gate), act.g, ff);
  matmul(rows, ff, d, MatRef::f32(x, d), transposed(w.up), act.u, ff);
  kernels::swiglu_forward(act.g, act.u, act.h, rows * ff);
  matmul(rows, d, ff, MatRef::f32(act.h, ff), transposed(w.down), y, d);
}

void mlp_backward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act,
                  const float* dy, float* dx, float* d_gate, float* d_up, float* d_down) {
  if (rows == 0) return;
  // d down += dyᵀ h;  d h = dy · down  (stored in act.h after its last use)
  matmul(d, ff, rows, MatRef::f32(dy, d, true), MatRef::f32(act.h, ff), d_down, ff, true);
  float* dh = act.h;
  matmul(rows, ff, d, MatRef::f32(dy, d), w.down, dh, ff);
  kernels::swiglu_backward(act.g, act.u, dh, act.g, act.u, rows * ff);
  const float* dg = act.g;
  const float* du = act.u;
  matmul(ff, d, rows, MatRef::f32(dg, ff, true), MatRef::f32(x, d), d_gate, d, true);
  matmul(ff, d, rows, MatRef::f32(du, ff, true), MatRef::f32(x, d), d_up, d, true);
  matmul(rows, d, ff, MatRef::f32(dg, ff), w.gate, dx, d);
  matmul(rows, d, ff, MatRef::f32(du, ff), w.up, dx, d, true);
}

}  // namespace moge::moe
