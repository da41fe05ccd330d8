#include "moge/train/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "moge/core/error.h"

namespace moge::train {

namespace {

// Fixed, independent of the thread count: this is what makes the sum deterministic.
constexpr int64_t kChunk = 8192;

void check_max_norm(double max_norm) {
  check(std::isfinite(max_norm) && max_norm > 0,
        "clip_grad_norm: max_norm must be finite and > 0, got " + std::to_string(max_norm));
}

struct Chunk {
  const float* data;
  int64_t n;
};

}  // namespace

double sum_of_squares(std::span<const std::span<const float>> grads) {
  std::vector<Chunk> chunks;
  for (std::span<const float> g : grads)
    for (size_t begin = 0; begin < g.size(); begin += kChunk)
      chunks.push_back({g.data() + begin, int64_t(std::min<size_t>(kChunk, g.size() - begin))});

  std::vector<double> partial(chunks.size());
  const int64_t count = int64_t(chunks.size());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < count; ++c) {
    // kLanes independent double sums (four AVX-512 registers: one chain of dependent adds would
    // wait on the add's latency; a scalar chain cost 2.7% of a training step), added up in lane
    // order at the end: a fixed order, not the thread count's.
    constexpr int kLanes = 32;
    const float* x = chunks[c].data;
    const int64_t n = chunks[c].n;
    double lane[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) lane[l] += double(x[i + l]) * double(x[i + l]);
    double s = 0;
    for (; i < n; ++i) s += double(x[i]) * double(x[i]);
    for (int l = 0; l < kLanes; ++l) s += lane[l];
    partial[c] = s;
  }
  double total = 0;
  for (double s : partial) total += s;  // in chunk order, whatever thread computed each
  return total;
}

double sum_of_squares(std::span<const std::span<float>> grads) {
  std::vector<std::span<const float>> view(grads.begin(), grads.end());
  return sum_of_squares(std::span<const std::span<const float>>(view));
}

double grad_norm(std::span<const std::span<const float>> grads) { return std::sqrt(sum_of_squares(grads)); }
double grad_norm(std::span<const std::span<float>> grads) { return std::sqrt(sum_of_squares(grads)); }

float clip_coefficient(double norm, double max_norm) {
  check_max_norm(max_norm);
  if (!std::isfinite(norm)) return 1.0f;
  const double coef = max_norm / (norm + 1e-6);  // torch's epsilon, so near-threshold steps agree
  return coef >= 1 ? 1.0f : float(coef);
}

void clip_to_norm(std::span<const std::span<float>> grads, double norm, double max_norm) {
  const float scale = clip_coefficient(norm, max_norm);
  if (scale == 1.0f) return;
  for (std::span<float> g : grads) {
    float* p = g.data();
    const int64_t n = int64_t(g.size());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= scale;
  }
}

double clip_grad_norm(std::span<const std::span<float>> grads, double max_norm) {
  check_max_norm(max_norm);  // before the work
  const double norm = grad_norm(grads);
  clip_to_norm(grads, norm, max_norm);
  return norm;
}

}  // namespace moge::train
