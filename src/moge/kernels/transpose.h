#pragma once
// Out-of-place transposes of f32 matrices, in tiles so that both sides are read and written a
// cache line at a time (a plain double loop walks one side with a stride that is a multiple of
// 4 KiB for power-of-two widths, which keeps every access in one L1 set).
#include <cstdint>

namespace moge::kernels {

// out[j · ldo + i] = in[i · ldi + j] (+= when accumulate), for i < rows, j < cols. Each element is
// one load and one store (or add): the same bits as the plain loop. Runs on the calling thread.
void transpose(const float* in, int64_t rows, int64_t cols, int64_t ldi, float* out, int64_t ldo,
               bool accumulate = false);

}  // namespace moge::kernels
