#include "moge/train/data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/progress.h"
#include "moge/tokenizer/tokenizer.h"

namespace moge::train {

// The file format is little-endian and the reader uses the mapped bytes as they are.
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

namespace {

namespace fs = std::filesystem;

std::string errno_text() { return std::strerror(errno); }

template <class T>
void put(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}

template <class T>
T get(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path + ": read failed");
  return ss.str();
}

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

int shard_width(int32_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

void write_shard(const std::string& path, std::span<const int32_t> tokens, int32_t vocab_size) {
  check(vocab_size > 0, path + ": vocab size " + std::to_string(vocab_size) + " must be positive");
  const int width = shard_width(vocab_size);
  std::string header;
  header.append(kShardMagic, 8);
  put<uint32_t>(header, kShardVersion);
  put<uint32_t>(header, uint32_t(width));
  put<uint64_t>(header, uint64_t(tokens.size()));
  put<uint32_t>(header, uint32_t(vocab_size));
  put<uint32_t>(header, 0);

  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary);
  check(bool(out), path + ": cannot open for writing");
  out.write(header.data(), std::streamsize(header.size()));
  // Narrow in blocks so a large shard needs no second full copy in memory.
  std::vector<char> block;
  constexpr size_t kBlock = 1 << 16;
  for (size_t i = 0; i < tokens.size(); i += kBlock) {
    const size_t n = std::min(kBlock, tokens.size() - i);
    block.resize(n * width);
    for (size_t j = 0; j < n; ++j) {
      const int32_t t = tokens[i + j];
      if (t < 0 || t >= vocab_size)  // the message built only on failure: a per-token loop
        throw Error(path + ": token " + std::to_string(t) + " at index " + std::to_string(i + j) + " is outside [0, " +
                    std::to_string(vocab_size) + ")");
      if (width == 2) {
        const uint16_t v = uint16_t(t);
        std::memcpy(&block[j * 2], &v, 2);
      } else {
        std::memcpy(&block[j * 4], &t, 4);
      }
    }
    out.write(block.data(), std::streamsize(block.size()));
  }
  out.close();
  check(bool(out), path + ": write failed");
  check(std::rename(tmp.c_str(), path.c_str()) == 0, path + ": cannot rename " + tmp + " (" + errno_text() + ")");
}

// ---- TokenShard

TokenShard::TokenShard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, path + ": cannot open (" + errno_text() + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(path + ": cannot stat (" + errno_text() + ")");
  }
  const int64_t bytes = st.st_size;
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error(path + ": truncated: " + std::to_string(bytes) + " bytes, less than the " +
                std::to_string(kShardHeaderBytes) + "-byte header of a token shard");
  }
  void* m = ::mmap(nullptr, size_t(bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  check(m != MAP_FAILED, path + ": mmap failed (" + errno_text() + ")");
  map_ = m;
  map_bytes_ = size_t(bytes);
  try {
    const auto* h = static_cast<const unsigned char*>(m);
    check(std::memcmp(h, kShardMagic, 8) == 0, path + ": not a token shard (the magic is not MOGETOK1)");
    const auto version = get<uint32_t>(h + 8);
    check(version == kShardVersion, path + ": token shard version " + std::to_string(version) +
                                        ", this moge reads version " + std::to_string(kShardVersion));
    const auto width = get<uint32_t>(h + 12);
    check(width == 2 || width == 4, path + ": token width " + std::to_string(width) + " is not 2 or 4");
    const auto count = get<uint64_t>(h + 16);
    const auto vocab = get<uint32_t>(h + 24);
    check(vocab > 0 && vocab <= (width == 2 ? 65536u : uint32_t(INT32_MAX)),
          path + ": vocab size " + std::to_string(vocab) + " does not fit the token width");
    const uint64_t payload = uint64_t(bytes - kShardHeaderBytes);
    check(count <= payload / width && count * width == payload,
          path + ": size is " + std::to_string(bytes) + " bytes, but the header says " + std::to_string(count) +
              " tokens of " + std::to_string(width) + " bytes follow its " + std::to_string(kShardHeaderBytes) +
              " (truncated or corrupt)");
    tokens_ = h + kShardHeaderBytes;
    count_ = int64_t(count);
    vocab_size_ = int32_t(vocab);
    width_ = int(width);
    // One pass over the tokens (milliseconds for millions) turns a corrupt payload into an error
    // here instead of an out-of-range embedding row during training.
    for (int64_t i = 0; i < count_; ++i) {
      const int32_t t = (*this)[i];
      if (t < 0 || t >= vocab_size_)  // the message built only on failure
        throw Error(path + ": token " + std::to_string(t) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(vocab_size_) + ")");
    }
  } catch (...) {
    unmap();
    throw;
  }
}

TokenShard::TokenShard(TokenShard&& o) noexcept { *this = std::move(o); }

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    tokens_ = std::exchange(o.tokens_, nullptr);
    count_ = std::exchange(o.count_, 0);
    vocab_size_ = o.vocab_size_;
    width_ = o.width_;
  }
  return *this;
}

TokenShard::~TokenShard() { unmap(); }

void TokenShard::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
}

void TokenShard::read(int64_t start, int64_t n, int32_t* out) const {
  if (width_ == 2) {
    const auto* p = static_cast<const uint16_t*>(tokens_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = int32_t(p[i]);
  } else {
    std::memcpy(out, static_cast<const uint32_t*>(tokens_) + start, size_t(n) * 4);
  }
}

// ---- Batches

void sample_batch(const TokenShard& shard, int batch, int seq_len, Rng& rng, int32_t* inputs, int32_t* targets) {
  check(batch > 0 && seq_len > 0, "batch and sequence length must be positive");
  check(shard.size() > seq_len, shard.path() + ": " + std::to_string(shard.size()) +
                                    " tokens, too few for one window of " + std::to_string(seq_len) + " + 1");
  const uint64_t starts = uint64_t(shard.size() - seq_len);  // s in [0, size - seq_len - 1]
  for (int b = 0; b < batch; ++b) {
    const int64_t s = int64_t(rng.below(starts));
    shard.read(s, seq_len, inputs + int64_t(b) * seq_len);
    shard.read(s + 1, seq_len, targets + int64_t(b) * seq_len);
  }
}

SequentialBatches::SequentialBatches(const TokenShard& shard, int batch, int seq_len)
    : shard_(shard), batch_(batch), seq_len_(seq_len) {
  check(batch > 0 && seq_len > 0, "batch and sequence length must be positive");
  windows_ = shard.size() > 0 ? (shard.size() - 1) / seq_len : 0;
}

int SequentialBatches::next(int32_t* inputs, int32_t* targets) {
  int rows = 0;
  for (; rows < batch_ && next_window_ < windows_; ++rows, ++next_window_) {
    const int64_t s = next_window_ * seq_len_;
    shard_.read(s, seq_len_, inputs + int64_t(rows) * seq_len_);
    shard_.read(s + 1, seq_len_, targets + int64_t(rows) * seq_len_);
  }
  return rows;
}

// ---- Documents and the split

std::vector<std::string_view> split_documents(std::string_view text) {
  std::vector<std::string_view> docs;
  size_t start = std::string_view::npos, end = 0;  // the current document: [start, end)
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (blank(line)) {
      if (start != std::string_view::npos) docs.push_back(text.substr(start, end - start));
      start = std::string_view::npos;
    } else {
      if (start == std::string_view::npos) start = pos;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      end = pos + line.size();
    }
    pos = nl + 1;
  }
  if (start != std::string_view::npos) docs.push_back(text.substr(start, end - start));
  return docs;
}

DocumentSplit split_train_val(int64_t n, double val_fraction, uint64_t seed) {
  std::ostringstream v;
  v << val_fraction;
  check(val_fraction >= 0 && val_fraction < 1, "--val-fraction " + v.str() + ": must be in [0, 1)");
  DocumentSplit split;
  int64_t n_val = 0;
  if (val_fraction > 0) {
    check(n >= 2, std::to_string(n) + " document(s): too few to hold out validation documents "
                                      "(separate documents with a blank line, or use --val-fraction 0)");
    n_val = std::clamp<int64_t>(std::llround(double(n) * val_fraction), 1, n - 1);
  }
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  Rng rng(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[int64_t(rng.below(uint64_t(i) + 1))]);
  split.val.assign(order.begin(), order.begin() + n_val);
  split.train.assign(order.begin() + n_val, order.end());
  std::sort(split.val.begin(), split.val.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

// ---- moge data

PrepareResult prepare_dataset(const PrepareOptions& o) {
  check(!o.inputs.empty(), "no input files");
  const auto tok = tokenizer::Tokenizer::load(o.tokenizer_dir);
  check(!tok.eos_ids().empty(), o.tokenizer_dir + ": the tokenizer has no eos token to end documents with");
  const int32_t eos = tok.eos_ids().front();
  const int32_t bos = tok.bos_id();

  // Every input's text stays loaded while the documents (views into it) are encoded.
  std::vector<std::string> texts;
  std::vector<std::string_view> docs;
  nlohmann::json sources = nlohmann::json::array();
  PrepareResult r;
  for (const auto& path : o.inputs) {
    texts.push_back(read_text(path));
    const auto d = split_documents(texts.back());
    docs.insert(docs.end(), d.begin(), d.end());
    sources.push_back({{"path", path}, {"bytes", texts.back().size()}, {"documents", d.size()}});
    r.bytes += int64_t(texts.back().size());
  }
  const DocumentSplit split = split_train_val(int64_t(docs.size()), o.val_fraction, o.seed);

  // Documents are independent, so they are encoded in parallel; the text is plain (a "</s>"
  // written in it is text, not the control token).
  std::vector<std::vector<int32_t>> encoded(docs.size());
  Progress progress("data: encoding", r.bytes, "bytes");
  std::atomic<int64_t> done{0};
  std::string failure;  // an exception must not leave the parallel region
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < int64_t(docs.size()); ++i) {
    auto& ids = encoded[i];
    if (bos >= 0) ids.push_back(bos);
    try {
      const auto text = tok.encode(docs[i], false, /*parse_special=*/false);
      ids.insert(ids.end(), text.begin(), text.end());
    } catch (const std::exception& e) {
#pragma omp critical(data_failure)
      if (failure.empty()) failure = e.what();
    }
    ids.push_back(eos);
    done += int64_t(docs[i].size());
    if (o.progress && i % 8 == 0) {
#pragma omp critical(data_progress)
      progress.update(done.load());
    }
  }
  check(failure.empty(), failure);
  if (o.progress) progress.finish();

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  check(!ec, o.out_dir + ": cannot create directory (" + ec.message() + ")");
  auto write = [&](const std::vector<int64_t>& which, const char* name) {
    std::vector<int32_t> tokens;
    for (int64_t i : which) tokens.insert(tokens.end(), encoded[i].begin(), encoded[i].end());
    write_shard((fs::path(o.out_dir) / name).string(), tokens, tok.vocab_size());
    return int64_t(tokens.size());
  };
  r.train_tokens = write(split.train, "train.bin");
  r.val_tokens = write(split.val, "val.bin");
  r.train_documents = int64_t(split.train.size());
  r.val_documents = int64_t(split.val.size());
  r.vocab_size = tok.vocab_size();

  const nlohmann::json meta = {
      {"format", "MOGETOK1"},
      {"version", kShardVersion},
      {"dtype", shard_width(r.vocab_size) == 2 ? "uint16" : "uint32"},
      {"tokenizer", o.tokenizer_dir},
      {"vocab_size", r.vocab_size},
      {"bos_id", bos},
      {"eos_id", eos},
      {"documents_are", "runs of non-blank lines; each written as <s> text </s> (no <s> when the tokenizer has none)"},
      {"val_fraction", o.val_fraction},
      {"seed", o.seed},
      {"train", {{"file", "train.bin"}, {"documents", r.train_documents}, {"tokens", r.train_tokens}}},
      {"val",
       {{"file", "val.bin"}, {"documents", r.val_documents}, {"tokens", r.val_tokens}, {"document_indices", split.val}}},
      {"sources", sources}};
  write_file_atomically((fs::path(o.out_dir) / "meta.json").string(), meta.dump(2) + "\n");
  return r;
}

}  // namespace moge::train
