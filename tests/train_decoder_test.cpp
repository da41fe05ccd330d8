// The training decoder against tests/reference/pangu_train.py, an independent PyTorch float64
// autograd implementation: loss (cross-entropy + aux) and the gradient of every checkpoint
// tensor, untied and tied embeddings. Also: the training forward equals the inference Model on
// the same weights, and random init equals moge init's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "moge/core/error.h"
#include "moge/core/npy.h"
#include "moge/model/model.h"
#include "moge/model/random_init.h"
#include "moge/model/safetensors.h"
#include "moge/train/decoder.h"
#include "test_util.h"

namespace moge::train {
namespace {

namespace fs = std::filesystem;

struct ReferenceDir {
  std::string path = test::binary_path("reference/pangu_train." + std::to_string(getpid()));
  ReferenceDir() {
    std::string cmd = "/usr/bin/python3 " + test::source_path("tests/reference/pangu_train.py") + " --out " + path +
                      " > " + path + ".log 2>&1";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("reference script failed: " + cmd);
  }
  ~ReferenceDir() {
    fs::remove_all(path);
    fs::remove(path + ".log");
  }
};

const std::string& ref() {
  static const ReferenceDir dir;
  return dir.path;
}

void check_against_reference(const std::string& dir) {
  TrainableDecoder m = TrainableDecoder::load(dir + "/model");
  NpyArray inputs = read_npy(dir + "/inputs.npy"), targets = read_npy(dir + "/targets.npy");
  const int batch = int(inputs.shape[0]), seq = int(inputs.shape[1]);
  Tensor loss = read_npy_f32(dir + "/loss.npy");

  // Logits of the forward alone.
  m.evaluate(inputs.i32.data(), targets.i32.data(), batch, seq);
  Tensor logits = read_npy_f32(dir + "/logits.npy");
  EXPECT_LT(test::rel_error(m.last_logits().data(), logits.f32(), logits.numel()), 1e-5);

  m.zero_grad();
  LossParts got = m.forward_backward(inputs.i32.data(), targets.i32.data(), batch, seq);
  EXPECT_NEAR(got.ce, loss.f32()[0], 1e-5 * std::abs(loss.f32()[0]));
  EXPECT_NEAR(got.aux, loss.f32()[1], 1e-5 * std::abs(loss.f32()[1]) + 1e-9);
  EXPECT_EQ(got.targets, batch * seq - 1);

  model::SafetensorsFile grads(dir + "/grads.safetensors");
  double worst = 0;
  std::string worst_name;
  int checked = 0;
  for (const model::NamedTensor& g : m.checkpoint_gradients()) {
    Tensor want = model::Checkpoint(dir + "/grads.safetensors").load_f32(g.name, g.shape);
    double err = test::rel_error(static_cast<const float*>(g.data), want.f32(), want.numel());
    EXPECT_LT(err, 1e-4) << g.name;
    if (err > worst) worst = err, worst_name = g.name;
    ++checked;
  }
  EXPECT_EQ(checked, int(grads.tensors().size()));
  testing::Test::RecordProperty("worst_gradient_error", std::to_string(worst) + " (" + worst_name + ")");
}

TEST(TrainDecoder, LossAndEveryGradientMatchTheReference) { check_against_reference(ref()); }
TEST(TrainDecoder, TiedEmbeddingsMatchTheReference) { check_against_reference(ref() + "/tied"); }

// The gradient accumulates over micro-batches, and `scale` scales all of it (aux included).
TEST(TrainDecoder, ScaledMicroBatchesAccumulate) {
  TrainableDecoder m = TrainableDecoder::load(ref() + "/model");
  NpyArray inputs = read_npy(ref() + "/inputs.npy"), targets = read_npy(ref() + "/targets.npy");
  const int batch = int(inputs.shape[0]), seq = int(inputs.shape[1]);
  m.zero_grad();
  m.forward_backward(inputs.i32.data(), targets.i32.data(), batch, seq, 1.0f);
  std::vector<std::vector<float>> once;
  for (const auto& g : m.checkpoint_gradients())
    once.emplace_back(static_cast<const float*>(g.data), static_cast<const float*>(g.data) + shape_numel(g.shape));
  m.zero_grad();
  m.forward_backward(inputs.i32.data(), targets.i32.data(), batch, seq, 0.5f);
  m.forward_backward(inputs.i32.data(), targets.i32.data(), batch, seq, 0.5f);
  auto twice = m.checkpoint_gradients();
  for (size_t i = 0; i < twice.size(); ++i)
    EXPECT_LT(test::rel_error(static_cast<const float*>(twice[i].data), once[i].data(), int64_t(once[i].size())), 1e-6)
        << twice[i].name;
}

// The training forward and the inference Model agree on the same checkpoint.
TEST(TrainDecoder, ForwardEqualsTheInferenceModel) {
  TrainableDecoder m = TrainableDecoder::load(ref() + "/model");
  model::Model inference = model::Model::load(ref() + "/model");
  NpyArray inputs = read_npy(ref() + "/inputs.npy"), targets = read_npy(ref() + "/targets.npy");
  const int seq = int(inputs.shape[1]);
  m.evaluate(inputs.i32.data(), targets.i32.data(), 1, seq);
  model::KvCache cache(inference.config(), seq);
  std::vector<float> logits(size_t(seq) * inference.config().vocab_size);
  inference.forward(inputs.i32.data(), seq, cache, logits.data());
  EXPECT_LT(test::rel_error(m.last_logits().data(), logits.data(), int64_t(logits.size())), 1e-5);
}

// random() draws exactly what `moge init` (write_random_model) writes in f32.
TEST(TrainDecoder, RandomInitEqualsMogeInit) {
  model::ModelConfig cfg = TrainableDecoder::load(ref() + "/model").config();
  const std::string dir = ref() + "/init";
  model::write_random_model(cfg, "{}", dir, DType::f32, 7);
  TrainableDecoder m = TrainableDecoder::random(cfg, 7);
  model::Checkpoint ckpt(dir);
  for (const auto& t : m.checkpoint_tensors()) {
    Tensor want = ckpt.load_f32(t.name, t.shape);
    ASSERT_EQ(std::memcmp(t.data, want.raw(), want.bytes()), 0) << t.name;
  }
}

TEST(TrainDecoder, BadTokensAreErrors) {
  TrainableDecoder m = TrainableDecoder::load(ref() + "/model");
  std::vector<int32_t> in = {1, 2, 3}, bad_target = {1, 2, 100000}, bad_input = {1, -5, 3};
  EXPECT_THROW(m.forward_backward(in.data(), bad_target.data(), 1, 3), Error);
  EXPECT_THROW(m.forward_backward(bad_input.data(), in.data(), 1, 3), Error);
}

}  // namespace
}  // namespace moge::train
