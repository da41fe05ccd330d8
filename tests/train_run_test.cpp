// `moge train`'s loop (train/trainer.h) on a tiny model and synthetic token shards: a resumed run
// is bitwise the uninterrupted one, a tiny model overfits one batch, checkpoints load for
// inference, gradient accumulation equals one bigger micro-batch sum, and bad configs are errors
// naming the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "moge/core/error.h"
#include "moge/core/rng.h"
#include "moge/model/model.h"
#include "moge/train/data.h"
#include "moge/train/trainer.h"
#include "test_util.h"

namespace moge::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct TempDir {
  std::string path = test::binary_path("train_run." + std::to_string(getpid()) + "." + std::to_string(counter()++));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

json tiny_config(int64_t steps) {
  return {{"model",
           {{"vocab_size", 64}, {"hidden_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"num_experts", 8}, {"num_experts_per_tok", 4},
            {"moe_intermediate_size", 16}, {"shared_expert_intermediate_size", 32}, {"rms_norm_eps", 1e-5},
            {"rope_theta", 10000.0}, {"max_position_embeddings", 256}, {"tie_word_embeddings", true},
            {"router_aux_loss_coef", 0.01}}},
          {"train",
           {{"micro_batch", 4}, {"seq_len", 16}, {"steps", steps}, {"lr", 1e-2}, {"min_lr", 1e-3}, {"warmup", 2},
            {"eval_every", 3}, {"eval_batches", 2}, {"save_every", 3}, {"seed", 5}}}};
}

// A data directory: random tokens (or `tokens` when given), meta.json pointing at the test tokenizer.
std::string make_data(const std::string& dir, std::vector<int32_t> tokens = {}) {
  if (tokens.empty()) {
    Rng rng(9);
    for (int i = 0; i < 5000; ++i) tokens.push_back(int32_t(rng.below(64)));
  }
  fs::create_directories(dir);
  write_shard(dir + "/train.bin", tokens, 64);
  write_shard(dir + "/val.bin", tokens, 64);
  std::ofstream(dir + "/meta.json") << json{{"tokenizer", test::source_path("tests/data/tokenizer")}}.dump();
  return dir;
}

std::string write_config(const std::string& path, const json& j) {
  std::ofstream(path) << j.dump(2);
  return path;
}

std::vector<json> read_log(const std::string& out) {
  std::ifstream in(out + "/log.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// RunOptions for a config, data and output directory (the rest at their defaults).
RunOptions options(const std::string& config, const std::string& data, const std::string& out) {
  RunOptions o;
  o.config_path = config;
  o.data_dir = data;
  o.out_dir = out;
  return o;
}

TEST(TrainRun, ResumeIsExact) {
  TempDir t;
  const std::string data = make_data(t.path + "/data"), cfg = write_config(t.path + "/cfg.json", tiny_config(7));
  RunOptions straight = options(cfg, data, t.path + "/straight");
  straight.quiet = true;
  run_training(straight);

  RunOptions first = options(cfg, data, t.path + "/resumed");
  first.quiet = true;
  first.stop_after = 4;  // killed after step 4 (checkpoint at 4: the last one before stopping)
  EXPECT_EQ(run_training(first).steps_done, 4);
  RunOptions second = first;
  second.stop_after = -1;
  second.resume = true;
  EXPECT_EQ(run_training(second).steps_done, 7);

  auto a = read_log(straight.out_dir), b = read_log(second.out_dir);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    for (const char* key : {"loss", "val_loss", "grad_norm", "is"}) {
      if (!a[i].contains(key)) continue;
      EXPECT_EQ(a[i][key].get<double>(), b[i][key].get<double>()) << key << " at line " << i;
    }
  }
  EXPECT_EQ(file_bytes(straight.out_dir + "/latest/model.safetensors"),
            file_bytes(second.out_dir + "/latest/model.safetensors"));
  EXPECT_EQ(file_bytes(straight.out_dir + "/latest/optimizer.safetensors"),
            file_bytes(second.out_dir + "/latest/optimizer.safetensors"));
}

TEST(TrainRun, TinyModelOverfitsOneBatch) {
  TempDir t;
  // A shard of exactly seq_len + 1 tokens: every sampled window is the same sequence.
  std::vector<int32_t> tokens;
  Rng rng(3);
  for (int i = 0; i < 17; ++i) tokens.push_back(int32_t(rng.below(64)));
  json c = tiny_config(80);
  c["train"]["micro_batch"] = 1;
  c["train"]["save_every"] = 0;
  c["train"]["eval_every"] = 0;
  c["train"]["lr"] = 3e-2;
  RunOptions o = options(write_config(t.path + "/cfg.json", c), make_data(t.path + "/data", tokens), t.path + "/out");
  o.quiet = true;
  RunResult r = run_training(o);
  auto log = read_log(o.out_dir);
  EXPECT_GT(log.front()["ce"].get<double>(), 3.5);  // ~ln 64 = 4.16 at the start
  EXPECT_LT(r.last_val_loss, 0.1);                   // memorized
}

// The checkpoint is an HF model directory: the inference engine loads it and computes the same
// validation loss the trainer reported.
TEST(TrainRun, CheckpointLoadsForInference) {
  TempDir t;
  RunOptions o = options(write_config(t.path + "/cfg.json", tiny_config(3)), make_data(t.path + "/data"), t.path + "/out");
  o.quiet = true;
  run_training(o);
  model::Model m = model::Model::load(o.out_dir + "/latest");
  EXPECT_EQ(m.config().num_hidden_layers, 2);
  EXPECT_TRUE(fs::exists(o.out_dir + "/latest/tokenizer.model"));
  EXPECT_TRUE(fs::exists(o.out_dir + "/loss.svg"));
  EXPECT_TRUE(fs::exists(o.out_dir + "/expert_load.svg"));
  EXPECT_FALSE(fs::exists(o.out_dir + "/.latest.tmp"));
}

TEST(TrainRun, BadConfigNamesTheField) {
  TempDir t;
  const std::string data = make_data(t.path + "/data");
  auto expect_error = [&](json c, const std::string& needle) {
    RunOptions o = options(write_config(t.path + "/cfg.json", c), data, t.path + "/out");
    o.quiet = true;
    try {
      run_training(o);
      ADD_FAILURE() << "accepted a config with " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  json c = tiny_config(3);
  c["train"]["learning_rate"] = 1;
  expect_error(c, "train.learning_rate");
  c = tiny_config(3);
  c["train"]["seq_len"] = 0;
  expect_error(c, "train.seq_len");
  c = tiny_config(3);
  c["model"]["vocab_size"] = 32;  // smaller than the data's 64
  expect_error(c, "vocab");
  c = tiny_config(3);
  c["model"]["num_experts"] = 7;
  expect_error(c, "num_experts");
  RunOptions o = options(write_config(t.path + "/cfg.json", tiny_config(3)), data, t.path + "/nothing");
  o.resume = true;
  EXPECT_THROW(run_training(o), Error);
}

}  // namespace
}  // namespace moge::train
