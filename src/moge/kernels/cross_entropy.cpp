#include "moge/kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "moge/kernels/vmath.h"

namespace moge::kernels {
namespace {

// One row: its loss, and its gradient into d (null for none; d may be x).
// Stable: exponents are taken of x − max ≤ 0; their sum is kept in double (over a vocabulary of
// 1e5 f32 addition would lose ~1e-3 relative).
double row_loss(const float* x, int32_t target, int64_t vocab, float* d, float scale) {
  const float mx = vmath::max(x, vocab);
  const float target_logit = x[target];  // read before d (possibly x itself) is written
  const double sum = vmath::exp_affine(x, 1.0f, -mx, d, vocab);
  if (d) {
    const float factor = float(double(scale) / sum);
    for (int64_t c = 0; c < vocab; ++c) d[c] *= factor;
    d[target] -= scale;
  }
  // −log p_target = log Σ exp(x − mx) + mx − x_target
  return std::log(sum) + double(mx) - double(target_logit);
}

}  // namespace

float cross_entropy_forward_backward(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                     float* dlogits, float scale) {
  // Per-row losses, summed in row order afterwards: an OpenMP reduction would add them in an
  // order that depends on the thread count.
  std::vector<double> loss(size_t(rows), 0.0);
#pragma omp parallel for schedule(static) if (rows * vocab > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    float* d = dlogits ? dlogits + r * vocab : nullptr;
    if (targets[r] == kIgnoreTarget) {
      if (d) std::fill(d, d + vocab, 0.0f);
      continue;
    }
    loss[size_t(r)] = row_loss(logits + r * vocab, targets[r], vocab, d, scale);
  }
  double total = 0;
  for (double l : loss) total += l;
  return float(total);
}

}  // namespace moge::kernels
