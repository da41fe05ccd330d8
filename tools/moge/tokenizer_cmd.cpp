// `moge tokenizer train`: a SentencePiece tokenizer trained on text files (moge/tokenizer/train.h
// says which settings and why).
#include <cstdio>

#include "commands.h"
#include "moge/tokenizer/train.h"

namespace moge::cli {

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "tokenizer tools (train)");
  tok->require_subcommand(1);
  auto o = std::make_shared<tokenizer::TrainOptions>();
  CLI::App* cmd = tok->add_subcommand(
      "train", "train a SentencePiece tokenizer (byte fallback, identity normalization) on text files");
  cmd->add_option("-i,--input", o->inputs, "UTF-8 text file (repeat for more)")->required();
  cmd->add_option("--vocab-size", o->vocab_size, "pieces, the 4 special and 256 byte pieces included")
      ->capture_default_str();
  cmd->add_option("-o,--out,--output", o->out_dir, "output directory: tokenizer.model, tokenizer_config.json")
      ->required();
  cmd->add_option("--model-type", o->model_type, "bpe or unigram")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed for sampling --max-sentences chunks")->capture_default_str();
  cmd->add_option("--max-sentences", o->max_sentences, "train on at most this many chunks, sampled (0: all)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "trainer threads (unigram results depend on the count)")
      ->capture_default_str();
  cmd->add_flag("-v,--verbose", o->verbose, "show SentencePiece's own log");
  cmd->callback([o] {
    o->progress = true;
    const auto r = tokenizer::train_tokenizer(*o);
    std::printf("%s/tokenizer.model: %s, %d pieces, from %lld bytes (%lld chunks) in %.1f s\n", o->out_dir.c_str(),
                o->model_type.c_str(), o->vocab_size, (long long)r.bytes, (long long)r.chunks, r.seconds);
  });
}

}  // namespace moge::cli
