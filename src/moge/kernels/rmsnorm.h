#pragma once
// RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. In place is allowed.
#include <cstdint>

namespace moge::kernels {

// Calls over more elements than this (rows · cols) run a thread team; smaller ones the calling
// thread alone (no fork/join). sim/predict.cpp costs the team by the same rule.
constexpr int64_t kRmsnormTeamAbove = 16384;

void rmsnorm_forward(const float* x, const float* weight, float* out, int64_t rows, int64_t cols, float eps);

// The gradients of rmsnorm_forward given dout = dL/dout [rows, cols]:
//   dx [rows, cols] is overwritten (dx may alias dout, not x);
//   dweight_accum [cols] is accumulated (+=), so several calls can sum into one gradient.
// Deterministic for any thread count: dweight is reduced over fixed row chunks in a fixed order.
void rmsnorm_backward(const float* x, const float* weight, const float* dout, float* dx, float* dweight_accum,
                      int64_t rows, int64_t cols, float eps);

}  // namespace moge::kernels
