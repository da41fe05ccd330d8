#pragma once
// The SwiGLU MLP that every routed expert and the shared expert are:
//   y = down(silu(gate(x)) * up(x)),  gate/up: [ff, d], down: [d, ff] (PyTorch [out, in]).
// Weights come as WeightRefs so f32, bf16 and quantized weights share one code path (backward:
// f32/bf16 only); activations and gradients are f32.
#include <cstddef>
#include <cstdint>

#include "moge/kernels/weight.h"

namespace moge::moe {

struct MlpWeights {
  kernels::WeightRef gate, up, down;  // gate/up [ff, d], down [d, ff]
};

struct MlpActivations {  // [rows, ff] each, written by forward, read by backward
  float* g;
  float* u;
  float* h;
};

// y[rows, d] = mlp(x[rows, d]) (overwrites y).
void mlp_forward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act, float* y);

// Several MLPs at once, each with mlp_forward's result: the gate and up projections of all in
// one kernels::linear_group, then all the down projections in another. At decode (the experts a
// token chose plus the shared expert) that is 2 fork/joins a layer instead of 3 an MLP, and the
// threads share the rows of all the matrices evenly.
struct MlpJob {
  const MlpWeights* w;
  int64_t rows;
  int ff;
  const float* x;  // [rows, d]
  MlpActivations act;
  float* y;  // [rows, d]
};
void mlp_forward_group(const MlpJob* jobs, size_t count);

// Accumulates the f32 weight gradients d_gate, d_up [ff, d] and d_down [d, ff]; overwrites
// dx [rows, d]. Clobbers act.g and act.u (they become d g and d u).
void mlp_backward(int64_t rows, int d, int ff, const float* x, const MlpWeights& w, MlpActivations act,
                  const float* dy, float* dx, float* d_gate, float* d_up, float* d_down);

}  // namespace moge::moe
