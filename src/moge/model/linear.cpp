#include "moge/model/linear.h"


namespace moge::model {

void Linear::forward(const float* x, int64_t rows, float* y) const {
  const int64_t out = out_features();
  kernels::linear(rows, x, weight.ref(), y);
  if (bias.empty()) return;
  const float* b = bias.f32();
#pragma omp parallel for schedule(static) if (rows * out > kBiasTeamAbove)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) y[r * out + j] += b[j];
}

}  // namespace moge::model
