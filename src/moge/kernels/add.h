#pragma once
// dst[i] += src[i]: residual connections and the sums of gradient contributions.
#include <cstdint>

namespace moge::kernels {

void add_into(float* dst, const float* src, int64_t n);

}  // namespace moge::kernels
