#pragma once
// Row-wise softmax over [rows, cols] f32, forward and backward.
#include <cstdint>

namespace moge::kernels {

// Calls over more elements than this (rows · cols) run a thread team; smaller ones the calling
// thread alone (no fork/join). sim/predict.cpp costs the team by the same rule.
constexpr int64_t kSoftmaxTeamAbove = 4096;

// p[r, :] = softmax(x[r, :]). In place is allowed (p == x).
void softmax_forward(const float* x, float* p, int64_t rows, int64_t cols);

// dx[r, :] = p[r, :] * (dp[r, :] - <p[r, :], dp[r, :]>). In place is allowed (dx == dp).
void softmax_backward(const float* p, const float* dp, float* dx, int64_t rows, int64_t cols);

}  // namespace moge::kernels
