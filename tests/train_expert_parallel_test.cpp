// Expert-parallel training (train/expert_parallel.h) against the decoder run in one process: D
// devices, each with one micro-batch and only its own experts, must give every micro-batch's
// loss and every parameter's gradient (the replicated ones summed over the devices, the experts'
// from their owner) that one process gets accumulating the D micro-batches. The one-process
// path is checked against PyTorch in train_decoder_test.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "moge/core/rng.h"
#include "moge/model/config.h"
#include "moge/moe/placement.h"
#include "moge/parallel/local_comm.h"
#include "moge/train/expert_parallel.h"
#include "test_util.h"

namespace moge::train {
namespace {

model::ModelConfig tiny_config(const std::string& routing_keys) {
  return model::ModelConfig::from_json_text(
      R"({"vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 4, )" +
          routing_keys + R"( "moe_intermediate_size": 16, "shared_expert_intermediate_size": 32,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
          "tie_word_embeddings": false, "router_aux_loss_coef": 0.01, "torch_dtype": "float32"})",
      "tiny");
}

struct Result {
  std::vector<LossParts> losses;              // per micro-batch
  std::vector<std::vector<float>> gradients;  // per checkpoint tensor
};

std::vector<float> copy_of(const model::NamedTensor& t) {
  const float* p = static_cast<const float*>(t.data);
  return {p, p + shape_numel(t.shape)};
}

void expect_same_training(const model::ModelConfig& cfg, int devices) {
  constexpr int kBatch = 2, kSeq = 12;
  constexpr uint64_t kSeed = 7;
  const int64_t rows = kBatch * kSeq;
  std::vector<std::vector<int32_t>> inputs(static_cast<size_t>(devices)), targets(static_cast<size_t>(devices));
  Rng rng(11);
  for (int m = 0; m < devices; ++m)
    for (int64_t i = 0; i < rows; ++i) {
      inputs[size_t(m)].push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
      targets[size_t(m)].push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
    }
  const float scale = 1.0f / float(devices);

  Result one;
  TrainableDecoder reference = TrainableDecoder::random(cfg, kSeed);
  reference.zero_grad();
  for (int m = 0; m < devices; ++m)
    one.losses.push_back(
        reference.forward_backward(inputs[size_t(m)].data(), targets[size_t(m)].data(), kBatch, kSeq, scale));
  for (const auto& t : reference.checkpoint_gradients()) one.gradients.push_back(copy_of(t));

  // Per device: its micro-batch's loss; its gradients, the replicated ones summed over devices.
  const moe::Placement placement(cfg.moe_config().router, devices);
  std::vector<Result> per_device(static_cast<size_t>(devices));
  std::vector<std::string> names;
  parallel::run_on_devices(devices, [&](parallel::Comm& comm, int device) {
    CollectivesOver<parallel::Comm> collectives(comm);
    TrainableDecoder m = TrainableDecoder::random(cfg, kSeed);
    ExpertParallelTraining ep(collectives, placement, cfg.num_hidden_layers);
    m.set_moe_runner(&ep);
    m.zero_grad();
    Result& r = per_device[size_t(device)];
    r.losses.push_back(
        m.forward_backward(inputs[size_t(device)].data(), targets[size_t(device)].data(), kBatch, kSeq, scale));
    for (const auto& t : m.checkpoint_gradients()) {
      std::vector<float> g = copy_of(t);
      if (t.name.find(".mlp.experts.") == std::string::npos) comm.all_reduce_sum(g.data(), int64_t(g.size()));
      r.gradients.push_back(std::move(g));
      if (device == 0) names.push_back(t.name);
    }
  }, 1);

  for (int m = 0; m < devices; ++m) {
    const LossParts& want = one.losses[size_t(m)];
    const LossParts& got = per_device[size_t(m)].losses[0];
    EXPECT_NEAR(got.ce, want.ce, 1e-6 * want.ce) << "device " << m;
    EXPECT_NEAR(got.aux, want.aux, 1e-6 * want.aux) << "device " << m;
  }
  double worst = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    // An expert's gradient from the device that holds it: "model.layers.L.mlp.experts.E.*".
    int owner = 0;
    const size_t at = names[i].find(".mlp.experts.");
    if (at != std::string::npos) owner = placement.owner(std::stoi(names[i].substr(at + 13)));
    const std::vector<float>& got = per_device[size_t(owner)].gradients[i];
    const double err = test::rel_error(got.data(), one.gradients[i].data(), int64_t(got.size()));
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-5) << names[i] << " (device " << owner << ")";
  }
  std::printf("D=%d: largest relative gradient error %.2e over %zu tensors\n", devices, worst, names.size());
}

TEST(ExpertParallelTraining, MoGEOnTwoFourAndEightDevicesEqualsOneProcess) {
  const model::ModelConfig cfg = tiny_config(R"("num_expert_groups": 4,)");
  for (int devices : {2, 4, 8}) expect_same_training(cfg, devices);
}

TEST(ExpertParallelTraining, TopKOnFourDevicesEqualsOneProcess) {
  expect_same_training(tiny_config(R"("num_expert_groups": 1, "routing_mode": "topk",)"), 4);
}

}  // namespace
}  // namespace moge::train
