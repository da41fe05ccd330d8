// Training data: tokenizer training (moge/tokenizer/train.h) and token shards, the split and the
// batches (moge/train/data.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moge/core/error.h"
#include "moge/tokenizer/tokenizer.h"
#include "moge/tokenizer/train.h"
#include "moge/train/data.h"

namespace fs = std::filesystem;
using moge::Rng;
using moge::train::TokenShard;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("moge_train_data_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

// Pseudo-English from a small word list: paragraphs of sentences, a blank line between paragraphs,
// no space at the end of a line. Lowercase only: with 260 ids taken by special and byte pieces, a
// small alphabet leaves a small vocabulary room for merges.
std::string sample_text(int paragraphs, uint64_t seed) {
  static const char* words[] = {"the",   "union", "state", "of",     "congress", "people", "nation",  "law",
                                "peace", "war",   "trade", "public", "credit",   "and",    "a",       "to",
                                "we",    "shall", "our",   "great",  "year",     "in",     "country", "government"};
  Rng rng(seed);
  std::string text;
  for (int p = 0; p < paragraphs; ++p) {
    for (int s = 0; s < 6; ++s) {
      if (s > 0) text += ' ';
      const int n = 4 + int(rng.below(8));
      for (int w = 0; w < n; ++w) {
        text += words[rng.below(std::size(words))];
        text += w + 1 < n ? " " : ".";
      }
    }
    text += "\n\n";
  }
  return text;
}

// f() must throw moge::Error whose message names `file` and contains `what`.
void expect_error(const std::function<void()>& f, const std::string& file, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << file << " with '" << what << "'";
  } catch (const moge::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(file), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
  }
}

// 260 special and byte pieces, 23 characters, ~100 merges.
constexpr int kVocab = 384;

// One small BPE tokenizer for the tests below (training takes about a second).
class TrainDataTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(temp_dir("tokenizer"));
    write_bytes(*dir_ / "text.txt", sample_text(40, 7));
    moge::tokenizer::TrainOptions o;
    o.inputs = {(*dir_ / "text.txt").string()};
    o.out_dir = (*dir_ / "tok").string();
    o.vocab_size = kVocab;
    moge::tokenizer::train_tokenizer(o);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string tok_dir() { return (*dir_ / "tok").string(); }
  static fs::path* dir_;
};
fs::path* TrainDataTokenizer::dir_ = nullptr;

}  // namespace

TEST_F(TrainDataTokenizer, LoadsWithSpecialIdsAndRoundTrips) {
  const auto tok = moge::tokenizer::Tokenizer::load(tok_dir());
  EXPECT_EQ(tok.vocab_size(), kVocab);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_ids(), std::vector<int32_t>{2});
  EXPECT_EQ(tok.pad_id(), 3);
  EXPECT_EQ(tok.piece(4), "<0x00>");
  EXPECT_TRUE(tok.is_byte(259));
  // Text from training and text it never saw (accents, CJK, tabs, double spaces) both come back.
  for (const std::string text : {"The union and the people of our great nation.",
                                 "Héllo  wörld\tnaïve 東京 — 2024?"}) {
    const auto ids = tok.encode(text, true);
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(tok.decode(ids), text);
  }
  // It learned merges: a frequent word is one piece, and the text takes fewer tokens than a third
  // of its bytes.
  EXPECT_EQ(tok.encode("the", false).size(), 1u);
  const std::string text = sample_text(40, 7);
  EXPECT_LT(tok.encode(text, false).size(), text.size() / 3);
}

TEST_F(TrainDataTokenizer, TrainingIsDeterministicAndLongLinesCount) {
  // The same text as ONE line of ~30 KB: SentencePiece would skip such a line; train_tokenizer
  // cuts it, so the result must be a real tokenizer too, and twice the same bytes.
  // Paragraphs joined by one space: the same words as the paragraph-a-line text.
  const std::string paragraphs = sample_text(40, 7);
  std::string text;
  for (const auto doc : moge::train::split_documents(paragraphs)) text += std::string(doc) + " ";
  text.pop_back();
  const fs::path d = temp_dir("long_line");
  write_bytes(d / "one_line.txt", text);
  std::string models[2];
  for (int i = 0; i < 2; ++i) {
    moge::tokenizer::TrainOptions o;
    o.inputs = {(d / "one_line.txt").string()};
    o.out_dir = (d / ("tok" + std::to_string(i))).string();
    o.vocab_size = kVocab;
    const auto r = moge::tokenizer::train_tokenizer(o);
    EXPECT_GT(r.chunks, int64_t(text.size() / moge::tokenizer::kMaxChunkBytes));
    models[i] = read_bytes(fs::path(o.out_dir) / "tokenizer.model");
  }
  EXPECT_FALSE(models[0].empty());
  EXPECT_EQ(models[0], models[1]);
  EXPECT_EQ(models[0], read_bytes(fs::path(tok_dir()) / "tokenizer.model"))
      << "cutting lines at spaces should not change what is learned";
  fs::remove_all(d);
}

TEST(TrainDataTokenizerOptions, BadOptionsNameTheFlag) {
  const fs::path d = temp_dir("bad_options");
  write_bytes(d / "t.txt", sample_text(5, 1));
  moge::tokenizer::TrainOptions o;
  o.inputs = {(d / "t.txt").string()};
  o.out_dir = (d / "tok").string();
  o.vocab_size = 100;
  expect_error([&] { moge::tokenizer::train_tokenizer(o); }, "--vocab-size 100", "too small");
  o.vocab_size = 320;
  o.model_type = "wordpiece";
  expect_error([&] { moge::tokenizer::train_tokenizer(o); }, "--model-type wordpiece", "bpe or unigram");
  o.model_type = "bpe";
  o.inputs = {(d / "missing.txt").string()};
  expect_error([&] { moge::tokenizer::train_tokenizer(o); }, "missing.txt", "cannot read");
  fs::remove_all(d);
}

TEST(DataShard, WriteReadRoundTripWithHeaderBytes) {
  const fs::path d = temp_dir("shard");
  const std::vector<int32_t> tokens = {0, 1, 299, 258, 2, 65, 7};
  const std::string path = (d / "a.bin").string();
  moge::train::write_shard(path, tokens, 300);

  // The header, byte by byte as data.h documents it.
  const std::string b = read_bytes(path);
  ASSERT_EQ(b.size(), 32u + 2 * tokens.size());
  EXPECT_EQ(b.substr(0, 8), "MOGETOK1");
  const std::string expect_header("\x01\0\0\0" "\x02\0\0\0" "\x07\0\0\0\0\0\0\0" "\x2c\x01\0\0" "\0\0\0\0", 24);
  EXPECT_EQ(b.substr(8, 24), expect_header);
  for (size_t i = 0; i < tokens.size(); ++i)
    EXPECT_EQ(uint8_t(b[32 + 2 * i]) | uint8_t(b[33 + 2 * i]) << 8, tokens[i]) << i;

  TokenShard shard(path);
  EXPECT_EQ(shard.size(), int64_t(tokens.size()));
  EXPECT_EQ(shard.vocab_size(), 300);
  EXPECT_EQ(shard.width(), 2);
  std::vector<int32_t> back(tokens.size());
  shard.read(0, shard.size(), back.data());
  EXPECT_EQ(back, tokens);

  // A vocabulary beyond uint16 takes 4 bytes a token.
  const std::vector<int32_t> big = {70000, 0, 65536, 123};
  moge::train::write_shard((d / "b.bin").string(), big, 70001);
  EXPECT_EQ(fs::file_size(d / "b.bin"), 32u + 4 * big.size());
  TokenShard wide((d / "b.bin").string());
  EXPECT_EQ(wide.width(), 4);
  for (size_t i = 0; i < big.size(); ++i) EXPECT_EQ(wide[int64_t(i)], big[i]);

  // Empty shards are valid (a split may hold out nothing).
  moge::train::write_shard((d / "empty.bin").string(), {}, 300);
  EXPECT_EQ(TokenShard((d / "empty.bin").string()).size(), 0);
  expect_error([&] { moge::train::write_shard((d / "c.bin").string(), tokens, 299); }, "c.bin", "outside");
  fs::remove_all(d);
}

TEST(DataShard, CorruptFilesAreErrorsNamingTheFile) {
  const fs::path d = temp_dir("corrupt");
  const std::vector<int32_t> tokens(100, 5);
  const std::string good = (d / "good.bin").string();
  moge::train::write_shard(good, tokens, 300);
  const std::string bytes = read_bytes(good);
  auto variant = [&](const std::string& name, const std::string& content) {
    write_bytes(d / name, content);
    return (d / name).string();
  };
  const auto open = [](const std::string& p) { return [p] { TokenShard s(p); }; };

  std::string p = variant("truncated.bin", bytes.substr(0, bytes.size() - 1));
  expect_error(open(p), p, "truncated or corrupt");
  p = variant("longer.bin", bytes + "xx");
  expect_error(open(p), p, "truncated or corrupt");
  p = variant("header_only_part.bin", bytes.substr(0, 20));
  expect_error(open(p), p, "truncated");
  std::string bad = bytes;
  bad[7] = '2';
  p = variant("magic.bin", bad);
  expect_error(open(p), p, "magic");
  bad = bytes;
  bad[8] = 9;
  p = variant("version.bin", bad);
  expect_error(open(p), p, "version 9");
  bad = bytes;
  bad[12] = 3;
  p = variant("width.bin", bad);
  expect_error(open(p), p, "width 3");
  bad = bytes;
  bad[32 + 2 * 50] = char(0x2c), bad[33 + 2 * 50] = char(0x01);  // token 300 at index 50
  p = variant("token.bin", bad);
  expect_error(open(p), p, "token 300 at index 50");
  p = (d / "absent.bin").string();
  expect_error(open(p), p, "cannot open");
  fs::remove_all(d);
}

TEST(DataBatches, SampleBatchIsShiftedInRangeAndSeeded) {
  const fs::path d = temp_dir("sample");
  // Token i at position i, so a row tells where it started.
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[i] = i;
  moge::train::write_shard((d / "s.bin").string(), tokens, 1000);
  TokenShard shard((d / "s.bin").string());
  constexpr int B = 16, T = 32;
  std::vector<int32_t> in(B * T), tg(B * T), in2(B * T), tg2(B * T);
  Rng rng(42), rng2(42);
  std::set<int32_t> starts;
  for (int step = 0; step < 20; ++step) {
    moge::train::sample_batch(shard, B, T, rng, in.data(), tg.data());
    moge::train::sample_batch(shard, B, T, rng2, in2.data(), tg2.data());
    EXPECT_EQ(in, in2);
    EXPECT_EQ(tg, tg2);
    for (int b = 0; b < B; ++b) {
      const int32_t s = in[b * T];
      starts.insert(s);
      ASSERT_LE(s + T, 999);
      for (int t = 0; t < T; ++t) {
        ASSERT_EQ(in[b * T + t], s + t);
        ASSERT_EQ(tg[b * T + t], s + t + 1);
      }
    }
  }
  EXPECT_GT(starts.size(), 250u) << "windows should start all over the shard";
  // The last possible window (start 1000 - T - 1) is reachable with T = 998: start 0 or 1 only.
  std::set<int32_t> edge;
  for (int i = 0; i < 64; ++i) {
    int32_t x[998], y[998];
    moge::train::sample_batch(shard, 1, 998, rng, x, y);
    edge.insert(x[0]);
    EXPECT_EQ(y[997], x[0] + 998);
  }
  EXPECT_EQ(edge, (std::set<int32_t>{0, 1}));
  std::vector<int32_t> big(1000);
  expect_error([&] { moge::train::sample_batch(shard, 1, 1000, rng, big.data(), big.data()); }, "s.bin", "too few");
  fs::remove_all(d);
}

TEST(DataBatches, SequentialCoversTheShardInOrder) {
  const fs::path d = temp_dir("sequential");
  std::vector<int32_t> tokens(103);
  for (int i = 0; i < 103; ++i) tokens[i] = (i * 7) % 50;
  moge::train::write_shard((d / "v.bin").string(), tokens, 50);
  TokenShard shard((d / "v.bin").string());
  moge::train::SequentialBatches it(shard, 3, 10);
  EXPECT_EQ(it.windows(), 10);  // (103 - 1) / 10
  std::vector<int32_t> in(30), tg(30), all_in, all_tg;
  std::vector<int> rows;
  while (int n = it.next(in.data(), tg.data())) {
    rows.push_back(n);
    all_in.insert(all_in.end(), in.begin(), in.begin() + n * 10);
    all_tg.insert(all_tg.end(), tg.begin(), tg.begin() + n * 10);
  }
  EXPECT_EQ(rows, (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(all_in, std::vector<int32_t>(tokens.begin(), tokens.begin() + 100));
  EXPECT_EQ(all_tg, std::vector<int32_t>(tokens.begin() + 1, tokens.begin() + 101));
  it.reset();
  EXPECT_EQ(it.next(in.data(), tg.data()), 3);
  EXPECT_EQ(in[0], tokens[0]);
  fs::remove_all(d);
}

TEST(DataSplit, DocumentsAreRunsOfNonBlankLines) {
  const auto docs = moge::train::split_documents("\n\nfirst line\nsecond\n\n \t\n third \r\n\r\nlast");
  EXPECT_EQ(docs, (std::vector<std::string_view>{"first line\nsecond", " third ", "last"}));
  EXPECT_TRUE(moge::train::split_documents(" \n\n").empty());
}

TEST(DataSplit, TrainValIsDeterministicDisjointAndComplete) {
  const auto a = moge::train::split_train_val(233, 0.05, 1);
  const auto b = moge::train::split_train_val(233, 0.05, 1);
  const auto c = moge::train::split_train_val(233, 0.05, 2);
  EXPECT_EQ(a.val, b.val);
  EXPECT_EQ(a.train, b.train);
  EXPECT_NE(a.val, c.val);
  EXPECT_EQ(a.val.size(), 12u);  // round(233 * 0.05)
  std::vector<int64_t> all = a.train;
  all.insert(all.end(), a.val.begin(), a.val.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 233; ++i) ASSERT_EQ(all[i], i);  // disjoint and complete
  EXPECT_TRUE(std::is_sorted(a.val.begin(), a.val.end()));
  EXPECT_EQ(moge::train::split_train_val(10, 0.01, 1).val.size(), 1u);  // at least one
  EXPECT_EQ(moge::train::split_train_val(10, 0.99, 1).train.size(), 1u);  // at least one left to train
  EXPECT_TRUE(moge::train::split_train_val(1, 0, 1).val.empty());
  expect_error([] { moge::train::split_train_val(10, 1.0, 1); }, "--val-fraction", "[0, 1)");
  expect_error([] { moge::train::split_train_val(1, 0.1, 1); }, "1 document", "too few");
}

TEST_F(TrainDataTokenizer, DataPrepareWritesShardsOfWholeDocuments) {
  const fs::path d = temp_dir("prepare");
  const std::string text = sample_text(30, 3);
  write_bytes(d / "in.txt", text);
  moge::train::PrepareOptions o;
  o.tokenizer_dir = tok_dir();
  o.inputs = {(d / "in.txt").string()};
  o.out_dir = (d / "out").string();
  o.val_fraction = 0.1;
  o.seed = 5;
  const auto r = moge::train::prepare_dataset(o);
  EXPECT_EQ(r.train_documents, 27);
  EXPECT_EQ(r.val_documents, 3);

  const auto tok = moge::tokenizer::Tokenizer::load(tok_dir());
  const auto docs = moge::train::split_documents(text);
  const auto split = moge::train::split_train_val(30, 0.1, 5);
  auto check_shard = [&](const std::string& name, const std::vector<int64_t>& which, int64_t count) {
    TokenShard s((fs::path(o.out_dir) / name).string());
    EXPECT_EQ(s.size(), count);
    std::vector<int32_t> ids(size_t(s.size()));
    s.read(0, s.size(), ids.data());
    // <s> doc </s> for each document, in order.
    size_t pos = 0;
    for (int64_t i : which) {
      ASSERT_LT(pos, ids.size());
      EXPECT_EQ(ids[pos], 1);
      const auto end = std::find(ids.begin() + pos, ids.end(), 2);
      ASSERT_NE(end, ids.end());
      EXPECT_EQ(tok.decode(std::span(ids.data() + pos + 1, size_t(end - ids.begin()) - pos - 1)), docs[i]);
      pos = size_t(end - ids.begin()) + 1;
    }
    EXPECT_EQ(pos, ids.size());
  };
  check_shard("train.bin", split.train, r.train_tokens);
  check_shard("val.bin", split.val, r.val_tokens);

  const auto meta = nlohmann::json::parse(read_bytes(fs::path(o.out_dir) / "meta.json"));
  EXPECT_EQ(meta["vocab_size"], kVocab);
  EXPECT_EQ(meta["dtype"], "uint16");
  EXPECT_EQ(meta["train"]["tokens"], r.train_tokens);
  EXPECT_EQ(meta["val"]["document_indices"].get<std::vector<int64_t>>(), split.val);
  EXPECT_EQ(meta["sources"][0]["documents"], 30);
  fs::remove_all(d);
}
