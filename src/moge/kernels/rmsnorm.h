#pragma once
// RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. In place is allowed.
#include <cstdint>

namespace moge::kernels {

void rmsnorm_forward(const float* x, const float* weight, float* out, int64_t rows, int64_t cols, float eps);

}  // namespace moge::kernels
