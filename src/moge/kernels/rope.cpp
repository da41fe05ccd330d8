#include "moge/kernels/rope.h"

#include <cmath>
#include <vector>

namespace moge::kernels {
namespace {

// Rotates every head of every token by +angle (direction = 1) or −angle (direction = -1).
void rotate(float* x, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta, float direction) {
  const int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (tokens > 1)
  for (int64_t t = 0; t < tokens; ++t) {
    // Angles in double: positions reach 1e5 and theta 1.6e7, beyond f32's comfort.
    std::vector<float> cos_v(half), sin_v(half);
    const double pos = double(first_position + t);
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      cos_v[i] = float(std::cos(angle));
      sin_v[i] = direction * float(std::sin(angle));  // sin(−a) = −sin(a), exactly in f32
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace

void rope_apply(float* x, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta) {
  rotate(x, tokens, heads, head_dim, first_position, theta, 1.0f);
}

void rope_backward(float* dx, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta) {
  rotate(dx, tokens, heads, head_dim, first_position, theta, -1.0f);
}

}  // namespace moge::kernels
