#pragma once
// Linear: y = x · Wᵀ (+ b), W stored [out, in] as in PyTorch, f32 or bf16 (the GEMM runs in W's
// dtype with f32 accumulation); W may be a view of a memory-mapped checkpoint. Bias f32.
#include <cstdint>

#include "moge/core/tensor.h"

namespace moge::model {

struct Linear {
  Tensor weight;  // [out, in], f32 or bf16
  Tensor bias;    // [out] f32, or empty

  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
  // y[rows, out] = x[rows, in] · Wᵀ + b (overwrites y).
  void forward(const float* x, int64_t rows, float* y) const;
};

}  // namespace moge::model
