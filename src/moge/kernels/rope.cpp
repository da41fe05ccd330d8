#include "moge/kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace moge::kernels {
namespace {

// cos and sin of every (position, frequency) a call has needed so far, for one (head_dim, theta).
// Computing them costs more than the rotation itself (a pow, a cos and a sin per value, and training
// calls rope 4 times per layer per sequence). The values are those the direct formula gives, so
// cached and uncached results are the same bits.
struct Table {
  int half = 0;
  int64_t positions = 0;
  std::vector<float> cos, sin;  // [positions, half]

  const float* cos_row(int64_t pos) const { return cos.data() + pos * half; }
  const float* sin_row(int64_t pos) const { return sin.data() + pos * half; }
};

// A table that covers positions 0 .. end-1: `old` extended, so positions only ever grow.
std::shared_ptr<const Table> extended(const Table* old, int head_dim, double theta, int64_t end) {
  auto t = std::make_shared<Table>();
  t->half = head_dim / 2;
  // Doubling keeps token-by-token decoding from rebuilding the table at every position.
  const int64_t have = old ? old->positions : 0;
  t->positions = std::max(end, 2 * have);
  t->cos.resize(size_t(t->positions * t->half));
  t->sin.resize(t->cos.size());
  if (old) {
    std::copy(old->cos.begin(), old->cos.end(), t->cos.begin());
    std::copy(old->sin.begin(), old->sin.end(), t->sin.begin());
  }
  std::vector<double> inv_freq(size_t(t->half));
  for (int i = 0; i < t->half; ++i) inv_freq[size_t(i)] = std::pow(theta, -2.0 * i / head_dim);
  for (int64_t p = have; p < t->positions; ++p) {
    // Angles in double: positions reach 1e5 and theta 1.6e7, beyond f32's comfort.
    const double pos = double(p);
    for (int i = 0; i < t->half; ++i) {
      const double angle = pos * inv_freq[size_t(i)];
      t->cos[size_t(p * t->half + i)] = float(std::cos(angle));
      t->sin[size_t(p * t->half + i)] = float(std::sin(angle));
    }
  }
  return t;
}

// The table for (head_dim, theta) covering positions below `end`. Callers keep their shared_ptr for
// the call, so a table replaced by a longer one meanwhile stays valid for them.
std::shared_ptr<const Table> table_for(int head_dim, double theta, int64_t end) {
  static std::mutex mutex;
  static std::map<std::pair<int, double>, std::shared_ptr<const Table>> tables;
  std::lock_guard lock(mutex);
  std::shared_ptr<const Table>& t = tables[{head_dim, theta}];
  if (!t || t->positions < end) t = extended(t.get(), head_dim, theta, end);
  return t;
}

// Rotates every head of every token by +angle (direction = 1) or −angle (direction = -1).
void rotate(float* x, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta, float direction) {
  if (tokens <= 0) return;
  const int half = head_dim / 2;
  const std::shared_ptr<const Table> table = table_for(head_dim, theta, first_position + tokens);
#pragma omp parallel for schedule(static) if (tokens > 1)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* cos_v = table->cos_row(first_position + t);
    const float* sin_row = table->sin_row(first_position + t);
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        const float sin_v = direction * sin_row[i];  // sin(−a) = −sin(a), exactly in f32
        v[i] = a * cos_v[i] - b * sin_v;
        v[i + half] = b * cos_v[i] + a * sin_v;
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
