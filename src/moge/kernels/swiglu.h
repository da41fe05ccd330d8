#pragma once
// SwiGLU activation: h = silu(g) * u, with silu(g) = g * sigmoid(g). Elementwise over n values.
#include <cstdint>

namespace moge::kernels {

// Calls over more values than this run a thread team; smaller ones the calling thread alone (no
// fork/join). sim/predict.cpp costs the team by the same rule.
constexpr int64_t kSwigluTeamAbove = 16384;

void swiglu_forward(const float* g, const float* u, float* h, int64_t n);

// Given dh, writes dg = dh * u * silu'(g) and du = dh * silu(g).
// silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g))).
void swiglu_backward(const float* g, const float* u, const float* dh, float* dg, float* du, int64_t n);

}  // namespace moge::kernels
