#pragma once
// Linear: y = x · Wᵀ (+ b), W stored [out, in] as in PyTorch. Master weight f32; an optional bf16
// copy runs the GEMM in bf16 (f32 accumulation).
#include <cstdint>

#include "moge/core/tensor.h"

namespace moge::model {

struct Linear {
  Tensor weight;  // [out, in] f32
  Tensor bias;    // [out] or empty
  Tensor compute; // bf16 copy of weight, or empty

  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
  void set_compute_dtype(DType dtype) { compute = dtype == DType::f32 ? Tensor() : weight.to(dtype); }
  // y[rows, out] = x[rows, in] · Wᵀ + b (overwrites y).
  void forward(const float* x, int64_t rows, float* y) const;
};

}  // namespace moge::model
