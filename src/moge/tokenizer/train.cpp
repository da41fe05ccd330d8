#include "moge/tokenizer/train.h"

#include <sentencepiece_trainer.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "moge/core/clock.h"
#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/progress.h"
#include "moge/tokenizer/tokenizer.h"

namespace moge::tokenizer {

namespace {

namespace fs = std::filesystem;

// The lines of the input files, each cut at spaces into chunks of at most kMaxChunkBytes (see
// train.h); empty lines are skipped. The trainer pulls every chunk before it starts training.
class ChunkIterator : public sentencepiece::SentenceIterator {
 public:
  // on_done runs once, when the last chunk has been read (the trainer then starts its work).
  ChunkIterator(const std::vector<std::string>& files, Progress* progress, std::function<void()> on_done)
      : files_(files), progress_(progress), on_done_(std::move(on_done)) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

  int64_t chunks = 0, bytes = 0;

 private:
  void advance() {
    if (done_) return;
    for (;;) {
      while (pos_ >= line_.size()) {
        if (!next_line()) {
          done_ = true;
          if (on_done_) on_done_();
          return;
        }
      }
      cut();
      if (!value_.empty()) {
        ++chunks;
        bytes += int64_t(value_.size());
        return;
      }
    }
  }

  // The next chunk of line_ from pos_: up to the last space that keeps it within the limit (the
  // space itself is dropped: the dummy prefix stands for it), else at a UTF-8 character boundary.
  void cut() {
    size_t end = line_.size();
    if (end - pos_ > kMaxChunkBytes) {
      end = pos_ + kMaxChunkBytes;
      const size_t space = line_.rfind(' ', end);
      if (space != std::string::npos && space > pos_) {
        value_.assign(line_, pos_, space - pos_);
        pos_ = space + 1;
        return;
      }
      while (end > pos_ + 1 && (uint8_t(line_[end]) & 0xC0) == 0x80) --end;
    }
    value_.assign(line_, pos_, end - pos_);
    pos_ = end;
  }

  bool next_line() {
    for (;;) {
      if (in_.is_open() && std::getline(in_, line_)) {
        read_ += int64_t(line_.size()) + 1;
        if (progress_) progress_->update(read_);
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        pos_ = 0;
        return true;
      }
      if (next_file_ == files_.size()) return false;
      in_.close();
      in_.clear();
      in_.open(files_[next_file_], std::ios::binary);
      check(in_.is_open(), files_[next_file_] + ": cannot open");
      ++next_file_;
    }
  }

  const std::vector<std::string>& files_;
  Progress* progress_;
  std::function<void()> on_done_;
  std::ifstream in_;
  size_t next_file_ = 0;
  std::string line_, value_;
  size_t pos_ = 0;
  int64_t read_ = 0;
  bool done_ = false;
};

// The trainer's flags. A map, not an argument string: the string form logs its whole command line
// on stderr before it reads --minloglevel.
std::unordered_map<std::string, std::string> trainer_args(const TrainOptions& o) {
  // train.h documents these choices; they follow tests/data/tokenizer (README.md there).
  return {{"model_type", o.model_type},
          {"vocab_size", std::to_string(o.vocab_size)},
          {"unk_id", "0"},
          {"bos_id", "1"},
          {"eos_id", "2"},
          {"pad_id", "3"},
          {"byte_fallback", "true"},
          {"character_coverage", "0.9995"},
          {"split_digits", "true"},
          {"normalization_rule_name", "identity"},
          {"add_dummy_prefix", "true"},
          {"remove_extra_whitespaces", "false"},
          {"max_sentence_length", std::to_string(kMaxChunkBytes + 1)},
          {"input_sentence_size", std::to_string(o.max_sentences)},
          {"shuffle_input_sentence", "true"},
          {"num_threads", std::to_string(o.threads)},
          {"minloglevel", o.verbose ? "0" : "2"}};
}

}  // namespace

TrainResult train_tokenizer(const TrainOptions& o) {
  check(!o.inputs.empty(), "tokenizer training: no input files");
  check(!o.out_dir.empty(), "tokenizer training: no output directory");
  check(o.model_type == "bpe" || o.model_type == "unigram",
        "--model-type " + o.model_type + ": expected bpe or unigram");
  // 4 special pieces and 256 byte pieces come first; the trainer needs room for the characters.
  check(o.vocab_size > 260 + 16, "--vocab-size " + std::to_string(o.vocab_size) +
                                     ": too small, 260 ids go to <unk> <s> </s> <pad> and the 256 bytes");
  check(o.threads >= 1, "--threads " + std::to_string(o.threads) + ": must be at least 1");
  check(o.max_sentences >= 0, "--max-sentences " + std::to_string(o.max_sentences) + ": must not be negative");
  int64_t total = 0;
  for (const auto& f : o.inputs) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    check(!ec && fs::is_regular_file(f), f + ": cannot read (" + (ec ? ec.message() : "not a file") + ")");
    total += int64_t(size);
  }

  // The trainer's only randomness is the sampling of max_sentences chunks. UINT_MAX is reserved
  // by SentencePiece (it means "seed from std::random_device").
  unsigned seed = unsigned(o.seed ^ (o.seed >> 32));
  if (seed == ~0u) seed = 0;
  sentencepiece::SetRandomGeneratorSeed(seed);

  std::unique_ptr<Progress> progress;
  if (o.progress) progress = std::make_unique<Progress>("tokenizer: reading", total, "bytes");
  const auto start = std::chrono::steady_clock::now();
  ChunkIterator chunks(o.inputs, progress.get(), [&] {
    if (!progress) return;
    progress->finish();
    std::fprintf(stderr, "tokenizer: training %s, %d pieces...\n", o.model_type.c_str(), o.vocab_size);
  });
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(trainer_args(o), &chunks, &model);
  if (!status.ok()) {
    check(chunks.chunks > 0, o.inputs.front() + ": no text to train on");
    std::string why = status.ToString();
    // SentencePiece's check failures read "Internal: file(line) [condition] message": keep the message.
    if (const size_t at = why.find("] "); at != std::string::npos) why.erase(0, at + 2);
    if (why.find("required_chars") != std::string::npos)
      throw Error("--vocab-size " + std::to_string(o.vocab_size) + ": too small for the characters of " +
                  o.inputs.front() + " plus 260 special and byte pieces (SentencePiece: " + why + ")");
    throw Error("tokenizer training failed: " + why);
  }

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  check(!ec, o.out_dir + ": cannot create directory (" + ec.message() + ")");
  write_file_atomically((fs::path(o.out_dir) / "tokenizer.model").string(), model);
  // Hugging Face's form; Tokenizer::load reads the *_token strings.
  const nlohmann::json config = {{"tokenizer_class", "LlamaTokenizer"}, {"unk_token", "<unk>"},
                                 {"bos_token", "<s>"},  {"eos_token", "</s>"},
                                 {"pad_token", "<pad>"}, {"add_bos_token", true},
                                 {"add_eos_token", false}};
  write_file_atomically((fs::path(o.out_dir) / "tokenizer_config.json").string(), config.dump(2) + "\n");

  // What we wrote must load with the ids train.h promises.
  const Tokenizer tok = Tokenizer::load(o.out_dir);
  check(tok.unk_id() == 0 && tok.bos_id() == 1 && tok.eos_ids() == std::vector<int32_t>{2} && tok.pad_id() == 3,
        o.out_dir + "/tokenizer.model: unexpected special ids after training");

  TrainResult r;
  r.chunks = chunks.chunks;
  r.bytes = chunks.bytes;
  r.seconds = seconds_since(start);
  return r;
}

}  // namespace moge::tokenizer
