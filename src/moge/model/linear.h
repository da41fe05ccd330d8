#pragma once
// Linear: y = x · Wᵀ (+ b), W [out, in] as in PyTorch, f32, bf16, int8 or int4 (kernels::Weight),
// possibly a view of a memory-mapped checkpoint. Bias f32.
#include <cstdint>

#include "moge/core/tensor.h"
#include "moge/kernels/weight.h"

namespace moge::model {

// The bias add of calls over more elements than this (rows · out) runs a thread team; smaller
// ones the calling thread alone. sim/predict.cpp costs the team by the same rule.
constexpr int64_t kBiasTeamAbove = 65536;

struct Linear {
  kernels::Weight weight;  // [out, in]
  Tensor bias;             // [out] f32, or empty

  int64_t out_features() const { return weight.out(); }
  int64_t in_features() const { return weight.in(); }
  // y[rows, out] = x[rows, in] · Wᵀ + b (overwrites y).
  void forward(const float* x, int64_t rows, float* y) const;
};

}  // namespace moge::model
