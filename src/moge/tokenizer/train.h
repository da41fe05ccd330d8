#pragma once
// Training a SentencePiece tokenizer (libsentencepiece's trainer) on plain-text files, with the
// settings of tests/data/tokenizer (the Llama ones): byte fallback, so any text encodes; identity
// normalization, so decode(encode(text)) == text and moge's decoder needs no denormalizer; a dummy
// prefix; extra whitespace kept; digits split. Fixed ids: <unk> 0, <s> 1, </s> 2, <pad> 3, then the
// 256 byte pieces <0x00>..<0xFF>, then the learned pieces.
//
// The trainer reads one "sentence" a line and silently skips lines longer than 4192 bytes, which
// would be every address of a corpus that keeps one address a line. train_tokenizer therefore feeds
// it the lines cut at spaces into chunks of at most kMaxChunkBytes: SentencePiece never puts a
// space inside a piece, so the cuts change no statistics.
//
// Messages name the options as `moge tokenizer train` spells them (--vocab-size, ...).
//
// Determinism: the same inputs, options and thread count give the same tokenizer.model byte for
// byte (the model records no file names: the text reaches the trainer through an iterator).
#include <cstdint>
#include <string>
#include <vector>

namespace moge::tokenizer {

struct TrainOptions {
  std::vector<std::string> inputs;  // UTF-8 text files
  std::string out_dir;              // gets tokenizer.model and tokenizer_config.json
  int vocab_size = 4096;            // all pieces, the 4 special and 256 byte pieces included
  std::string model_type = "bpe";   // "bpe" or "unigram"
  uint64_t seed = 0;                // sentence sampling when max_sentences caps the input
  int64_t max_sentences = 0;        // train on at most this many chunks (0: all)
  int threads = 1;                  // the unigram trainer's results may depend on the thread count
  bool progress = false;            // progress and a line per phase on stderr
  bool verbose = false;             // pass SentencePiece's own log through to stderr
};

struct TrainResult {
  int64_t chunks = 0;  // lines (cut to kMaxChunkBytes) given to the trainer
  int64_t bytes = 0;   // bytes of text in them
  double seconds = 0;
};

constexpr size_t kMaxChunkBytes = 2048;

// Trains and writes out_dir/tokenizer.model (and a tokenizer_config.json naming <s>, </s>, <unk>,
// <pad>, which Tokenizer::load reads). Throws moge::Error naming the file or option at fault.
TrainResult train_tokenizer(const TrainOptions& options);

}  // namespace moge::tokenizer
