// The backward kernels of the decoder (rmsnorm, rope, attention, cross-entropy, embedding), three
// ways each:
//   - against central finite differences of their own f32 forwards (the loss summed in double);
//   - against tests/reference/decoder_kernels.py, an independent PyTorch float64 autograd
//     implementation, within 1e-5 relative to the reference's largest entry;
//   - for bitwise determinism on 1, 2 and 3 OpenMP threads, on shapes past the kernels'
//     parallel thresholds.
//
// Finite differences: L = Σ out · g for a fixed random g (for cross-entropy, L = scale · loss).
// Inputs are perturbed in f32 by eps = 1e-2 and the step actually applied is used. The f32
// forward's rounding (~1e-7 relative over tens of terms) gives noise ≈ 1e-6 / (2 eps) ≈ 5e-5 and
// the truncation is ≈ eps² / 6 · L''' ≈ 2e-5 at these unit-scale inputs; the tolerance per
// element, |fd − analytic| ≤ 1e-3 · max|analytic| + 1e-4, sits above both, while a wrong term in
// a gradient is typically O(max|analytic|). The worst errors are recorded as test properties
// (see them with --gtest_output=xml).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>
#include <nlohmann/json.hpp>

#include "moge/core/npy.h"
#include "moge/core/rng.h"
#include "moge/kernels/attention.h"
#include "moge/kernels/cross_entropy.h"
#include "moge/kernels/embedding.h"
#include "moge/kernels/rmsnorm.h"
#include "moge/kernels/rope.h"
#include "test_util.h"

namespace moge::kernels {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<float>;

constexpr double kFdEps = 1e-2, kFdRtol = 1e-3, kFdAtol = 1e-4;
constexpr double kReferenceTol = 1e-5;

// Outputs a kernel overwrites start as NaN: an element it forgets to write shows.
const float kPoison = std::numeric_limits<float>::quiet_NaN();
Vec poisoned(size_t n) { return Vec(n, kPoison); }

Vec normal(int64_t n, Rng& rng, float std = 1.0f) {
  Vec v(static_cast<size_t>(n));
  for (float& x : v) x = std * rng.normal();
  return v;
}

double weighted_sum(const Vec& out, const Vec& g) {
  double sum = 0;
  for (size_t i = 0; i < out.size(); ++i) sum += double(out[i]) * g[i];
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Finite differences

// Central differences of loss() over every element of `param` (perturbed in place), checked
// against `analytic`. Records "worst |fd − analytic| / max |analytic|" under `name`.
void check_fd(const std::string& name, Vec& param, const Vec& analytic, const std::function<double()>& loss) {
  ASSERT_EQ(param.size(), analytic.size()) << name;
  double max_analytic = 0, worst = 0;
  for (float a : analytic) max_analytic = std::max(max_analytic, std::abs(double(a)));
  // A gradient of zeros would pass against a flat loss: demand one worth comparing.
  EXPECT_GT(max_analytic, 1e-2) << name;
  for (size_t i = 0; i < param.size(); ++i) {
    const float saved = param[i];
    const float plus = saved + float(kFdEps), minus = saved - float(kFdEps);
    param[i] = plus;
    const double l_plus = loss();
    param[i] = minus;
    const double l_minus = loss();
    param[i] = saved;
    const double fd = (l_plus - l_minus) / (double(plus) - double(minus));
    const double error = std::abs(fd - analytic[i]);
    worst = std::max(worst, error);
    EXPECT_LE(error, kFdRtol * max_analytic + kFdAtol) << name << "[" << i << "]: fd " << fd << ", analytic "
                                                      << analytic[i];
  }
  std::ostringstream text;
  text << worst << " / " << max_analytic;
  testing::Test::RecordProperty("fd." + name, text.str());
}

// ---------------------------------------------------------------------------------------------
// The PyTorch reference: generated once per process into a directory of its own (ctest runs
// test processes in parallel).

struct ReferenceDir {
  std::string path = test::binary_path("reference/decoder_kernels." + std::to_string(getpid()));
  ~ReferenceDir() { fs::remove_all(path); }
};

const std::string& reference_dir() {
  static const ReferenceDir holder;
  static const std::string dir = [] {
    const std::string& out = holder.path;
    const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/reference/decoder_kernels.py") +
                            " --out " + out + " > " + out + ".log 2>&1";
    fs::create_directories(out);
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("reference script failed: " + cmd);
    return out;
  }();
  return dir;
}

// One kernel's reference files.
struct Reference {
  std::string dir;
  nlohmann::json config;

  explicit Reference(const std::string& kernel) : dir(reference_dir() + "/" + kernel) {
    std::ifstream in(dir + "/config.json");
    config = nlohmann::json::parse(in);
  }
  Vec f32(const std::string& name) const {
    NpyArray a = read_npy(dir + "/" + name + ".npy");
    EXPECT_FALSE(a.f32.empty()) << name;
    return a.f32;
  }
  std::vector<int32_t> i32(const std::string& name) const { return read_npy(dir + "/" + name + ".npy").i32; }
};

// rel_error (max |a − b| / max |b|) of a kernel's result against the reference's, recorded.
void expect_matches(const std::string& name, const Vec& actual, const Vec& expected) {
  ASSERT_EQ(actual.size(), expected.size()) << name;
  // rel_error's max() would pass over a NaN: check for one first.
  for (size_t i = 0; i < actual.size(); ++i) ASSERT_TRUE(std::isfinite(actual[i])) << name << "[" << i << "]";
  const double error = test::rel_error(actual.data(), expected.data(), int64_t(expected.size()));
  std::ostringstream text;
  text << error;
  testing::Test::RecordProperty("torch." + name, text.str());
  EXPECT_LT(error, kReferenceTol) << name;
}

// ---------------------------------------------------------------------------------------------
// Determinism: a computation run on 1, 2 and 3 threads must give the same bits.

struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

// `run` computes into the vectors it returns; every thread count must reproduce the first's bits.
void expect_deterministic(const std::function<std::vector<Vec>()>& run) {
  std::vector<Vec> first;
  for (int threads : {1, 2, 3}) {
    ThreadCount guard(threads);
    std::vector<Vec> result = run();
    if (first.empty()) {
      first = result;
      continue;
    }
    ASSERT_EQ(result.size(), first.size());
    for (size_t r = 0; r < result.size(); ++r)
      EXPECT_EQ(std::memcmp(result[r].data(), first[r].data(), result[r].size() * sizeof(float)), 0)
          << "result " << r << " differs on " << threads << " threads";
  }
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

constexpr float kRmsEps = 1e-5f;

struct RmsGrads {
  Vec dx, dweight;
};

RmsGrads rms_backward(const Vec& x, const Vec& w, const Vec& dout, int64_t rows, int64_t cols) {
  RmsGrads g{poisoned(x.size()), Vec(size_t(cols), 0.0f)};
  rmsnorm_backward(x.data(), w.data(), dout.data(), g.dx.data(), g.dweight.data(), rows, cols, kRmsEps);
  return g;
}

TEST(RmsNormBackward, MatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 8;
  Rng rng(11);
  Vec x = normal(rows * cols, rng), g = normal(rows * cols, rng), w(static_cast<size_t>(cols));
  for (float& v : w) v = rng.uniform(0.5f, 1.5f);
  RmsGrads grads = rms_backward(x, w, g, rows, cols);
  auto loss = [&] {
    Vec out(x.size());
    rmsnorm_forward(x.data(), w.data(), out.data(), rows, cols, kRmsEps);
    return weighted_sum(out, g);
  };
  check_fd("rmsnorm.dx", x, grads.dx, loss);
  check_fd("rmsnorm.dweight", w, grads.dweight, loss);
}

TEST(RmsNormBackward, MatchesPyTorch) {
  Reference ref("rmsnorm");
  const int64_t rows = ref.config["rows"], cols = ref.config["cols"];
  const float eps = ref.config["eps"];
  const Vec x = ref.f32("x"), w = ref.f32("weight"), dout = ref.f32("dout");
  Vec out = poisoned(x.size()), dx = poisoned(x.size());
  Vec dweight = ref.f32("dweight_init");  // backward accumulates into it
  rmsnorm_forward(x.data(), w.data(), out.data(), rows, cols, eps);
  rmsnorm_backward(x.data(), w.data(), dout.data(), dx.data(), dweight.data(), rows, cols, eps);
  expect_matches("rmsnorm.out", out, ref.f32("out"));
  expect_matches("rmsnorm.dx", dx, ref.f32("dx"));
  expect_matches("rmsnorm.dweight", dweight, ref.f32("dweight"));
}

TEST(RmsNormBackward, InPlaceEqualsOutOfPlace) {
  const int64_t rows = 5, cols = 16;
  Rng rng(12);
  const Vec x = normal(rows * cols, rng), w = normal(cols, rng), dout = normal(rows * cols, rng);
  RmsGrads separate = rms_backward(x, w, dout, rows, cols);
  Vec inplace = dout, dweight(size_t(cols), 0.0f);
  rmsnorm_backward(x.data(), w.data(), inplace.data(), inplace.data(), dweight.data(), rows, cols, kRmsEps);
  EXPECT_EQ(inplace, separate.dx);
  EXPECT_EQ(dweight, separate.dweight);
}

TEST(RmsNormBackward, DeterministicAcrossThreadCounts) {
  const int64_t rows = 301, cols = 96;  // past the parallel threshold, many row chunks
  Rng rng(13);
  const Vec x = normal(rows * cols, rng), w = normal(cols, rng), dout = normal(rows * cols, rng);
  expect_deterministic([&] {
    RmsGrads g = rms_backward(x, w, dout, rows, cols);
    return std::vector<Vec>{g.dx, g.dweight};
  });
}

// ---------------------------------------------------------------------------------------------
// rope

TEST(RopeBackward, MatchesFiniteDifferences) {
  const int64_t tokens = 3;
  const int heads = 2, hd = 8;
  const int64_t first = 7;
  const double theta = 1e4;
  Rng rng(21);
  Vec x = normal(tokens * heads * hd, rng), g = normal(x.size(), rng);
  Vec dx = g;
  rope_backward(dx.data(), tokens, heads, hd, first, theta);
  check_fd("rope.dx", x, dx, [&] {
    Vec out = x;
    rope_apply(out.data(), tokens, heads, hd, first, theta);
    return weighted_sum(out, g);
  });
}

TEST(RopeBackward, MatchesPyTorch) {
  Reference ref("rope");
  const int64_t tokens = ref.config["tokens"], first = ref.config["first_position"];
  const int heads = ref.config["heads"], hd = ref.config["head_dim"];
  const double theta = ref.config["theta"];
  Vec out = ref.f32("x"), dx = ref.f32("dout");
  rope_apply(out.data(), tokens, heads, hd, first, theta);
  rope_backward(dx.data(), tokens, heads, hd, first, theta);
  expect_matches("rope.out", out, ref.f32("out"));
  expect_matches("rope.dx", dx, ref.f32("dx"));
}

// ---------------------------------------------------------------------------------------------
// attention

struct AttentionInputs {
  AttentionShape shape;
  int64_t tokens;
  Vec q, k, v;

  AttentionInputs(AttentionShape s, int64_t t, Rng& rng)
      : shape(s), tokens(t), q(normal(t * s.heads * s.head_dim, rng)), k(normal(t * s.kv_heads * s.head_dim, rng)),
        v(normal(t * s.kv_heads * s.head_dim, rng)) {}

  int64_t q_size() const { return tokens * shape.heads * shape.head_dim; }
};

struct AttentionResult {
  Vec out, lse, dq, dk, dv;
};

AttentionResult attention_train(const AttentionInputs& in, const Vec& dout) {
  AttentionResult r{poisoned(size_t(in.q_size())), poisoned(size_t(in.tokens * in.shape.heads)),
                    poisoned(in.q.size()), poisoned(in.k.size()), poisoned(in.v.size())};
  attention_forward_train(in.q.data(), in.k.data(), in.v.data(), r.out.data(), r.lse.data(), in.tokens, in.shape);
  attention_backward(in.q.data(), in.k.data(), in.v.data(), r.out.data(), r.lse.data(), dout.data(), r.dq.data(),
                     r.dk.data(), r.dv.data(), in.tokens, in.shape);
  return r;
}

TEST(AttentionBackward, TrainForwardEqualsInferenceForward) {
  Rng rng(31);
  const AttentionInputs in({4, 2, 8}, 9, rng);
  Vec out_infer(size_t(in.q_size())), out_train(out_infer.size()), lse(size_t(in.tokens * in.shape.heads));
  attention_forward(in.q.data(), in.k.data(), in.v.data(), out_infer.data(), in.tokens, 0, in.shape);
  attention_forward_train(in.q.data(), in.k.data(), in.v.data(), out_train.data(), lse.data(), in.tokens, in.shape);
  EXPECT_EQ(out_train, out_infer);
  // lse against its definition, in double: log Σ_{j ≤ t} exp(q_t · k_j / sqrt(hd)).
  const int H = in.shape.heads, hd = in.shape.head_dim, group = H / in.shape.kv_heads;
  for (int64_t t = 0; t < in.tokens; ++t)
    for (int h = 0; h < H; ++h) {
      double sum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double s = 0;
        for (int i = 0; i < hd; ++i)
          s += double(in.q[(t * H + h) * hd + i]) * in.k[(j * in.shape.kv_heads + h / group) * hd + i];
        sum += std::exp(s / std::sqrt(double(hd)));
      }
      EXPECT_NEAR(lse[t * H + h], std::log(sum), 1e-5 * std::max(1.0, std::abs(std::log(sum)))) << t << "," << h;
    }
}

TEST(AttentionBackward, MatchesFiniteDifferences) {
  Rng rng(32);
  AttentionInputs in({4, 2, 8}, 5, rng);
  const Vec g = normal(in.q_size(), rng);
  const AttentionResult r = attention_train(in, g);
  auto loss = [&] {
    Vec out(size_t(in.q_size())), lse(size_t(in.tokens * in.shape.heads));
    attention_forward_train(in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data(), in.tokens, in.shape);
    return weighted_sum(out, g);
  };
  check_fd("attention.dq", in.q, r.dq, loss);
  check_fd("attention.dk", in.k, r.dk, loss);
  check_fd("attention.dv", in.v, r.dv, loss);
}

TEST(AttentionBackward, MatchesPyTorch) {
  Reference ref("attention");
  Rng unused(0);
  const AttentionShape shape{ref.config["heads"].get<int>(), ref.config["kv_heads"].get<int>(),
                             ref.config["head_dim"].get<int>()};
  AttentionInputs in(shape, ref.config["tokens"].get<int64_t>(), unused);
  in.q = ref.f32("q");
  in.k = ref.f32("k");
  in.v = ref.f32("v");
  const AttentionResult r = attention_train(in, ref.f32("dout"));
  expect_matches("attention.out", r.out, ref.f32("out"));
  expect_matches("attention.lse", r.lse, ref.f32("lse"));
  expect_matches("attention.dq", r.dq, ref.f32("dq"));
  expect_matches("attention.dk", r.dk, ref.f32("dk"));
  expect_matches("attention.dv", r.dv, ref.f32("dv"));
}

TEST(AttentionBackward, DeterministicAcrossThreadCounts) {
  Rng rng(33);
  const AttentionInputs in({4, 2, 16}, 64, rng);
  const Vec dout = normal(in.q_size(), rng);
  expect_deterministic([&] {
    AttentionResult r = attention_train(in, dout);
    return std::vector<Vec>{r.out, r.lse, r.dq, r.dk, r.dv};
  });
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

// Random logits (std 2: peaked rows and flat ones) and targets, row `ignored` marked kIgnoreTarget.
struct CrossEntropyInputs {
  int64_t rows, vocab;
  Vec logits;
  std::vector<int32_t> targets;

  CrossEntropyInputs(int64_t r, int64_t v, int64_t ignored, Rng& rng)
      : rows(r), vocab(v), logits(normal(r * v, rng, 2.0f)), targets(size_t(r)) {
    for (int32_t& t : targets) t = int32_t(rng.below(uint64_t(v)));
    targets[size_t(ignored)] = kIgnoreTarget;
  }
};

TEST(CrossEntropy, MatchesFiniteDifferences) {
  Rng rng(41);
  CrossEntropyInputs in(4, 9, 2, rng);
  const float scale = 1.0f / 3.0f;  // three counted rows
  Vec dlogits = poisoned(in.logits.size());
  cross_entropy_forward_backward(in.logits.data(), in.targets.data(), in.rows, in.vocab, dlogits.data(), scale);
  check_fd("cross_entropy.dlogits", in.logits, dlogits, [&] {
    return double(scale) *
           cross_entropy_forward_backward(in.logits.data(), in.targets.data(), in.rows, in.vocab, nullptr, scale);
  });
  // The ignored row: no gradient at all (FD agrees only to its tolerance).
  for (int64_t c = 0; c < in.vocab; ++c) EXPECT_EQ(dlogits[size_t(2 * in.vocab + c)], 0.0f) << c;
}

TEST(CrossEntropy, MatchesPyTorch) {
  Reference ref("cross_entropy");
  const int64_t rows = ref.config["rows"], vocab = ref.config["vocab"];
  const float scale = ref.config["scale"];
  const Vec logits = ref.f32("logits");
  const std::vector<int32_t> targets = ref.i32("targets");
  ASSERT_EQ(int64_t(targets.size()), rows);
  ASSERT_NE(std::find(targets.begin(), targets.end(), kIgnoreTarget), targets.end());
  Vec dlogits = poisoned(logits.size());
  const float loss = cross_entropy_forward_backward(logits.data(), targets.data(), rows, vocab, dlogits.data(), scale);
  expect_matches("cross_entropy.loss", {loss}, ref.f32("loss"));
  expect_matches("cross_entropy.dlogits", dlogits, ref.f32("dlogits"));
}

TEST(CrossEntropy, InPlaceAndLossOnlyAgreeWithSeparateBuffers) {
  Rng rng(42);
  const CrossEntropyInputs in(6, 33, 4, rng);
  Vec dlogits(in.logits.size()), inplace = in.logits;
  const float loss =
      cross_entropy_forward_backward(in.logits.data(), in.targets.data(), in.rows, in.vocab, dlogits.data(), 0.25f);
  EXPECT_EQ(cross_entropy_forward_backward(inplace.data(), in.targets.data(), in.rows, in.vocab, inplace.data(), 0.25f),
            loss);
  EXPECT_EQ(inplace, dlogits);
  EXPECT_EQ(cross_entropy_forward_backward(in.logits.data(), in.targets.data(), in.rows, in.vocab, nullptr, 0.25f),
            loss);
}

TEST(CrossEntropy, StableForLargeLogits) {
  // Softmax is shift-invariant: logits near 1e4 (exp overflows f32 past 88) must give the loss
  // and gradient of the same logits near 0.
  Rng rng(43);
  const CrossEntropyInputs in(3, 20, 0, rng);
  Vec shifted = in.logits;
  for (float& v : shifted) v += 1.0e4f;
  // The shift rounds the logits to multiples of 2^-10: compare with the rounded logits unshifted.
  Vec rounded = shifted;
  for (float& v : rounded) v -= 1.0e4f;
  Vec d_shifted(in.logits.size()), d_rounded(in.logits.size());
  const float l_shifted =
      cross_entropy_forward_backward(shifted.data(), in.targets.data(), in.rows, in.vocab, d_shifted.data(), 1.0f);
  const float l_rounded =
      cross_entropy_forward_backward(rounded.data(), in.targets.data(), in.rows, in.vocab, d_rounded.data(), 1.0f);
  ASSERT_TRUE(std::isfinite(l_shifted));
  EXPECT_NEAR(l_shifted, l_rounded, 1e-5 * std::abs(l_rounded));
  EXPECT_LT(test::rel_error(d_shifted.data(), d_rounded.data(), int64_t(d_rounded.size())), 1e-5);
}

TEST(CrossEntropy, DeterministicAcrossThreadCounts) {
  Rng rng(44);
  const CrossEntropyInputs in(97, 300, 50, rng);  // past the parallel threshold
  expect_deterministic([&] {
    Vec dlogits(in.logits.size());
    const float loss =
        cross_entropy_forward_backward(in.logits.data(), in.targets.data(), in.rows, in.vocab, dlogits.data(), 0.01f);
    return std::vector<Vec>{{loss}, dlogits};
  });
}

// ---------------------------------------------------------------------------------------------
// embedding

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t vocab = 5, d = 4;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 3, 1};  // repeats; token 2 and 4 unused
  const int64_t n = int64_t(tokens.size());
  Rng rng(51);
  Vec table = normal(vocab * d, rng), g = normal(n * d, rng), dtable(table.size(), 0.0f);
  embedding_backward(tokens.data(), n, g.data(), d, dtable.data());
  check_fd("embedding.dtable", table, dtable, [&] {
    Vec out(size_t(n * d));
    embedding_forward(table.data(), tokens.data(), n, d, out.data());
    return weighted_sum(out, g);
  });
}

TEST(Embedding, MatchesPyTorch) {
  Reference ref("embedding");
  const int64_t n = ref.config["n"], d = ref.config["d"];
  const Vec table = ref.f32("table"), dx = ref.f32("dx");
  const std::vector<int32_t> tokens = ref.i32("tokens");
  ASSERT_EQ(int64_t(tokens.size()), n);
  Vec out = poisoned(size_t(n * d)), dtable = ref.f32("dtable_init");  // backward accumulates into it
  embedding_forward(table.data(), tokens.data(), n, d, out.data());
  embedding_backward(tokens.data(), n, dx.data(), d, dtable.data());
  expect_matches("embedding.out", out, ref.f32("out"));
  expect_matches("embedding.dtable", dtable, ref.f32("dtable"));
}

TEST(Embedding, BackwardDeterministicAcrossThreadCounts) {
  const int64_t vocab = 7, n = 300, d = 320;  // past the parallel threshold; every token repeats
  Rng rng(52);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = int32_t(rng.below(vocab));
  const Vec dx = normal(n * d, rng, 1.0f);
  expect_deterministic([&] {
    Vec dtable(size_t(vocab * d), 0.5f);
    embedding_backward(tokens.data(), n, dx.data(), d, dtable.data());
    return std::vector<Vec>{dtable};
  });
}

}  // namespace
}  // namespace moge::kernels
