#pragma once
// Training data: text cut into documents, tokenized, split into train and validation at document
// granularity, and stored as token shards that training reads by mmap.
//
// Shard file (.bin), all integers little-endian:
//   offset  size       field
//   0       8          magic "MOGETOK1"
//   8       4          version, 1
//   12      4          token width in bytes: 2 (uint16, when vocab_size <= 65536) or 4 (uint32)
//   16      8          token count N
//   24      4          vocab_size V: every token is in [0, V)
//   28      4          reserved, 0
//   32      N × width  the tokens
// A shard is one stream of documents, each written as <s> (when the tokenizer has one, since
// `moge generate` starts prompts with it) then its text's tokens then </s>: so an EOS token stands
// between any two documents, and the model learns to start after <s> and to stop.
//
// Documents: a document is a run of non-blank lines; one or more blank lines (empty or spaces
// only) separate documents. scripts/fetch-corpus writes each State of the Union address as one
// line with a blank line after it, so there a document is one address. Whole documents go to
// train or to validation, so no address is half in each.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moge/core/rng.h"

namespace moge::train {

constexpr char kShardMagic[9] = "MOGETOK1";
constexpr uint32_t kShardVersion = 1;
constexpr int64_t kShardHeaderBytes = 32;

// 2 when every id of the vocabulary fits in uint16, else 4.
int shard_width(int32_t vocab_size);

// Writes tokens (each in [0, vocab_size)) as a shard, through path + ".tmp" and a rename.
// Throws moge::Error naming the file.
void write_shard(const std::string& path, std::span<const int32_t> tokens, int32_t vocab_size);

// A shard mapped read-only. Opening checks the magic, version, width, that the file size is
// exactly header + count × width, and every token against vocab_size: a truncated or corrupt file
// is one moge::Error naming the file.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  int64_t size() const { return count_; }  // tokens
  int32_t vocab_size() const { return vocab_size_; }
  int width() const { return width_; }
  const std::string& path() const { return path_; }

  int32_t operator[](int64_t i) const {
    return width_ == 2 ? int32_t(static_cast<const uint16_t*>(tokens_)[i])
                       : int32_t(static_cast<const uint32_t*>(tokens_)[i]);
  }
  // Tokens [start, start + n) as int32 (the caller keeps the range inside the shard).
  void read(int64_t start, int64_t n, int32_t* out) const;

 private:
  void unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* tokens_ = nullptr;
  int64_t count_ = 0;
  int32_t vocab_size_ = 0;
  int width_ = 2;
};

// batch rows of seq_len tokens from windows starting at uniform random positions: row b of inputs
// is shard[s_b .. s_b + seq_len), row b of targets is shard[s_b + 1 .. s_b + seq_len]. The same
// rng state gives the same batch. Throws moge::Error (naming the file) when the shard has fewer
// than seq_len + 1 tokens.
void sample_batch(const TokenShard& shard, int batch, int seq_len, Rng& rng, int32_t* inputs, int32_t* targets);

// The shard in order, for validation: window k has inputs shard[k·seq_len .. (k+1)·seq_len) and
// targets one further, for k < (size - 1) / seq_len; the last (size - 1) mod seq_len targets, fewer
// than one window, are not visited.
class SequentialBatches {
 public:
  SequentialBatches(const TokenShard& shard, int batch, int seq_len);
  int64_t windows() const { return windows_; }
  // Fills up to batch rows with the next windows; returns how many (0 when all were given).
  int next(int32_t* inputs, int32_t* targets);
  void reset() { next_window_ = 0; }

 private:
  const TokenShard& shard_;
  int batch_, seq_len_;
  int64_t windows_, next_window_ = 0;
};

// Documents of a text as described above (each keeps its inner newlines, not the blank lines).
std::vector<std::string_view> split_documents(std::string_view text);

// Which of n documents go to validation: round(n × val_fraction) of them, at least 1 when
// val_fraction > 0 and at most n - 1, chosen by a Fisher-Yates shuffle with Rng(seed). Both lists
// are ascending, disjoint and together 0..n-1. Throws moge::Error when val_fraction is outside
// [0, 1) or there are fewer than 2 documents to split.
struct DocumentSplit {
  std::vector<int64_t> train, val;
};
DocumentSplit split_train_val(int64_t n, double val_fraction, uint64_t seed);

// `moge data`: tokenizes the inputs with the tokenizer in tokenizer_dir and writes out_dir/train.bin,
// out_dir/val.bin and out_dir/meta.json (counts, ids, sources, which documents are held out).
struct PrepareOptions {
  std::string tokenizer_dir;
  std::vector<std::string> inputs;
  std::string out_dir;
  double val_fraction = 0.05;
  uint64_t seed = 1;
  bool progress = false;  // a progress bar on stderr while encoding
};
struct PrepareResult {
  int64_t train_documents = 0, val_documents = 0, train_tokens = 0, val_tokens = 0, bytes = 0;
  int32_t vocab_size = 0;
};
PrepareResult prepare_dataset(const PrepareOptions& options);

}  // namespace moge::train
