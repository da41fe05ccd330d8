// `moge data`: text files to train/val token shards (the format and the document split are in
// moge/train/data.h).
#include <omp.h>

#include <cstdio>

#include "commands.h"
#include "moge/train/data.h"

namespace moge::cli {

void add_data_command(CLI::App& app) {
  auto o = std::make_shared<train::PrepareOptions>();
  auto threads = std::make_shared<int>(0);
  CLI::App* cmd = app.add_subcommand("data", "tokenize text files into train.bin, val.bin and meta.json");
  cmd->add_option("--tokenizer", o->tokenizer_dir, "directory with tokenizer.model (e.g. from moge tokenizer train)")
      ->required();
  cmd->add_option("-i,--input", o->inputs, "UTF-8 text file (repeat for more); blank lines separate documents")
      ->required();
  cmd->add_option("-o,--out,--output", o->out_dir, "output directory")->required();
  cmd->add_option("--val-fraction", o->val_fraction, "share of documents held out for validation")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the train/validation split")->capture_default_str();
  cmd->add_option("-t,--threads", *threads, "encoding threads (default: all cores)");
  cmd->callback([o, threads] {
    if (*threads > 0) omp_set_num_threads(*threads);
    o->progress = true;
    const auto r = train::prepare_dataset(*o);
    std::printf("%s: train %lld documents, %lld tokens; val %lld documents, %lld tokens; vocab %d (%s); from %lld bytes\n",
                o->out_dir.c_str(), (long long)r.train_documents, (long long)r.train_tokens,
                (long long)r.val_documents, (long long)r.val_tokens, r.vocab_size,
                train::shard_width(r.vocab_size) == 2 ? "uint16" : "uint32", (long long)r.bytes);
  });
}

}  // namespace moge::cli
