#include "moge/kernels/add.h"

namespace moge::kernels {

void add_into(float* dst, const float* src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace moge::kernels
