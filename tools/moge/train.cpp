// `moge train`: trains a MoGE (or top-k / group-limited MoE) model on token shards from
// `moge data`; checkpoints in the Hugging Face layout that `moge generate` loads.
#include <omp.h>

#include <cstdio>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/train/trainer.h"

namespace moge::cli {

void add_train_command(CLI::App& app) {
  struct Args {
    train::RunOptions run;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("train", "train a model (AdamW, warmup + cosine, checkpoints, resume)");
  cmd->add_option("--config", a->run.config_path, "run config: {\"model\": {HF config}, \"train\": {...}}")->required();
  cmd->add_option("--data", a->run.data_dir, "token shards from `moge data` (train.bin, val.bin, meta.json)")
      ->required();
  cmd->add_option("-o,--out", a->run.out_dir, "run directory (checkpoints, log.jsonl, plots)")->required();
  cmd->add_option("--tokenizer", a->run.tokenizer_dir, "tokenizer directory (default: the one in meta.json)");
  cmd->add_option("--init", a->run.init_from, "start from this checkpoint instead of a random init");
  cmd->add_flag("--resume", a->run.resume, "continue the run in --out from its latest checkpoint");
  cmd->add_option("--stop-after", a->run.stop_after, "stop after this step (with a checkpoint)");
  cmd->add_flag("-q,--quiet", a->run.quiet, "no progress bar");
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->callback([a] {
    if (a->threads > 0) omp_set_num_threads(a->threads);
    const train::RunResult r = train::run_training(a->run);
    std::printf("%s: %lld steps, loss %.4f, validation loss %.4f, %.0f tokens/s\n", a->run.out_dir.c_str(),
                static_cast<long long>(r.steps_done), r.last_loss, r.last_val_loss, r.tokens_per_second);
  });
}

}  // namespace moge::cli
