#include "moge/model/linear.h"

#include "moge/kernels/matmul.h"

namespace moge::model {

void Linear::forward(const float* x, int64_t rows, float* y) const {
  const int64_t out = out_features(), in = in_features();
  const kernels::MatRef w = weight.dtype() == DType::f32 ? kernels::MatRef::f32(weight.f32(), in, true)
                                                         : kernels::MatRef::bf16(weight.bf16_data(), in, true);
  kernels::matmul(rows, out, in, kernels::MatRef::f32(x, in), w, y, out);
  if (bias.empty()) return;
  const float* b = bias.f32();
#pragma omp parallel for schedule(static) if (rows * out > 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) y[r * out + j] += b[j];
}

}  // namespace moge::model
