#pragma once
// The training loop behind `moge train`: micro-batches from token shards, AdamW with warmup +
// cosine, gradient clipping, periodic validation, checkpoints in the Hugging Face layout with the
// optimizer state for an exact resume, a JSONL log and SVG plots (loss curves, expert load).
//
// Run directory OUT:
//   OUT/checkpoint-STEP/   config.json, model.safetensors (F32, HF names), tokenizer files,
//                          optimizer.safetensors (AdamW moments), trainer_state.json
//   OUT/latest             symlink to the newest complete checkpoint (moge generate -m OUT/latest)
//   OUT/log.jsonl          one line a step ({"step", "loss", "ce", "aux", "lr", ...}) and one per
//                          validation ({"step", "val_loss"})
//   OUT/loss.svg, OUT/expert_load.svg
// A checkpoint is written into a temporary directory and renamed into place: a run killed at any
// moment leaves the previous checkpoint intact.
//
// Determinism: micro-batch m of step s is drawn with its own generator seeded from (seed, s, m),
// so a resumed run draws what the uninterrupted run drew, and data-parallel ranks (each taking its
// share of the micro-batches) draw what one process would.
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "moge/model/config.h"
#include "moge/train/collectives.h"

namespace moge::train {

struct TrainConfig {
  int micro_batch = 8;      // sequences per micro-batch (run together: one aux loss)
  int seq_len = 128;
  int grad_accum = 1;       // micro-batches per step (over all data-parallel ranks)
  int64_t steps = 1000;
  double lr = 3e-3, min_lr = 3e-4;
  int64_t warmup = 50;
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, grad_clip = 1.0;
  int64_t eval_every = 100;  // 0: only at the end
  int eval_batches = 16;     // micro-batches of validation data
  int64_t save_every = 0;    // 0: only at the end
  int keep_checkpoints = 2;
  uint64_t seed = 1;
  int devices = 8;           // for the imbalance metrics: experts placed contiguously on D devices

  // The "train" object of a run config; unknown keys and bad values are errors naming the field.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct RunOptions {
  std::string config_path;     // {"model": {HF config}, "train": {TrainConfig}}
  std::string data_dir;        // train.bin, val.bin, meta.json (moge data)
  std::string out_dir;
  std::string tokenizer_dir;   // default: meta.json's "tokenizer"
  std::string init_from;       // a checkpoint directory to start from (default: random init)
  bool resume = false;         // continue OUT/latest
  int64_t stop_after = -1;     // stop (with a checkpoint) after this step, as if killed there
  bool quiet = false;          // no progress bar
  // Several processes or in-process devices (null: one). Data parallel: train.grad_accum (a
  // multiple of the ranks) is split among them and the gradients are summed. With
  // expert_parallel, each rank also computes and updates only its own routed experts
  // (moe::Placement over the ranks; train/expert_parallel.h): their gradients need no sum, their
  // optimizer state is sharded, and the checkpoint gathers them.
  Collectives* comm = nullptr;
  bool expert_parallel = false;
};

struct RunResult {
  int64_t steps_done = 0;
  double last_loss = 0, last_val_loss = 0;
  double tokens_per_second = 0;
};

RunResult run_training(const RunOptions& options);

}  // namespace moge::train
