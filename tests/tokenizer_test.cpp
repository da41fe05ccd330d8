// moge::tokenizer: SentencePiece wrapper, special pieces in text, streaming detokenization, special
// ids from the Hugging Face config files, and the Pangu chat prompt.
//
// References that do not come from the code under test:
//   * tests/data/tokenizer/spm_bpe_reference.py, a plain-Python BPE encoder (its own protobuf
//     reader and merge loop), run with /usr/bin/python3, for encode();
//   * the SentencePiece library's own DecodeIds, for decode() on random id sequences;
//   * hand-checked pieces: UTF-8 bytes of emoji, the vocabulary order fixed by the training
//     command in tests/data/tokenizer/README.md (<unk> <s> </s> <pad> [unused9] [unused10] ...).
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "moge/core/error.h"
#include "moge/tokenizer/chat_template.h"
#include "moge/tokenizer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moge::tokenizer::ChatOptions;
using moge::tokenizer::Message;
using moge::tokenizer::pangu_chat_prompt;
using moge::tokenizer::StreamDecoder;
using moge::tokenizer::Tokenizer;

namespace {

const std::string kDir = moge::test::source_path("tests/data/tokenizer");
const std::string kUnigramDir = moge::test::source_path("tests/data/tokenizer/unigram");

// Ids fixed by the training command (README.md): meta pieces, then the user-defined symbols.
constexpr int32_t kUnk = 0, kBos = 1, kEos = 2, kPad = 3, kUnused9 = 4, kUnused10 = 5, kUnused16 = 6;

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(kDir);
  return t;
}

std::vector<std::string> pieces(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(t.piece(id));
  return out;
}

// Strict UTF-8 check written from RFC 3629's code point ranges (decode, then check the value).
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    int n;
    uint32_t cp;
    if (c < 0x80) { n = 1; cp = c; }
    else if ((c >> 5) == 0x6) { n = 2; cp = c & 0x1F; }
    else if ((c >> 4) == 0xE) { n = 3; cp = c & 0x0F; }
    else if ((c >> 3) == 0x1E) { n = 4; cp = c & 0x07; }
    else return false;
    if (i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      const unsigned char d = s[i + k];
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// The byte-fallback piece of byte b, "<0xNN>".
std::string byte_piece(int b) {
  char name[8];
  std::snprintf(name, sizeof name, "<0x%02X>", b);
  return name;
}

// A fresh directory under the build tree for one test, holding a copy of `model_dir`'s model and
// the given JSON files (name -> text).
std::string make_dir(const std::string& name, const std::vector<std::pair<std::string, std::string>>& files,
                     bool with_model = true) {
  const fs::path dir = moge::test::binary_path("tokenizer_test/" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (with_model) fs::copy_file(fs::path(kDir) / "tokenizer.model", dir / "tokenizer.model");
  for (const auto& [file, text] : files) std::ofstream(dir / file, std::ios::binary) << text;
  return dir.string();
}

// Expects fn() to throw moge::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const moge::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
    return;
  }
  ADD_FAILURE() << "no moge::Error thrown";
}

const std::string kAscii = "This License applies to any program or other work; copyright 2007, 12345 times!";
const std::string kChinese = "[unused9]系统：你是一个乐于助人的助手。[unused10][unused9]用户：今天天气怎么样？[unused10]";
const std::string kEmoji = "ok 😀👍🏽 done";
// Characters the model never saw: byte fallback for all of them.
const std::string kRare = "龘 é ß\tτ\n";

}  // namespace

TEST(Tokenizer, LoadsModelAndSpecialIds) {
  const Tokenizer& t = tok();
  EXPECT_EQ(t.vocab_size(), 800);
  EXPECT_EQ(t.bos_id(), kBos);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{kEos, kUnused10}));  // generation_config.json's list
  EXPECT_EQ(t.pad_id(), kPad);
  EXPECT_EQ(t.unk_id(), kUnk);
  EXPECT_TRUE(t.is_eos(kUnused10));
  EXPECT_FALSE(t.is_eos(kUnused9));
  EXPECT_EQ(t.piece(kUnused9), "[unused9]");
  EXPECT_EQ(t.piece_to_id("[unused16]"), kUnused16);
  EXPECT_EQ(t.piece_to_id("no such piece"), -1);
  EXPECT_TRUE(t.is_special(kUnused9));
  EXPECT_TRUE(t.is_special(kBos));
  EXPECT_FALSE(t.is_special(t.piece_to_id("▁the")));
  EXPECT_TRUE(t.is_byte(t.piece_to_id("<0xF0>")));
  EXPECT_THROW(t.piece(800), moge::Error);
}

TEST(Tokenizer, RoundTripAscii) {
  const Tokenizer& t = tok();
  for (const std::string& s : {kAscii, std::string(" two  spaces, lead and trail  "), std::string("")}) {
    EXPECT_EQ(t.decode(t.encode(s, false)), s);
    EXPECT_EQ(t.decode(t.encode(s, true)), s);  // <s> is invisible
  }
  EXPECT_LT(t.encode(kAscii, false).size(), kAscii.size() / 2);  // BPE merged something
}

TEST(Tokenizer, RoundTripChinese) {
  const Tokenizer& t = tok();
  const std::string s = "你好，请介绍一下你自己。系统：用户：助手：";
  const auto ids = t.encode(s, false);
  for (int32_t id : ids) EXPECT_FALSE(t.is_byte(id)) << "every character here is in the vocabulary";
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_EQ(t.decode(t.encode(kChinese, true)), kChinese);
}

TEST(Tokenizer, RoundTripEmojiAndRareCharactersByByteFallback) {
  const Tokenizer& t = tok();
  for (const std::string& s : {kEmoji, kRare, kRare + kEmoji + kChinese}) EXPECT_EQ(t.decode(t.encode(s, false)), s);
  // 😀 is U+1F600 = F0 9F 98 80; the text starts the input, so a dummy prefix "▁" comes first.
  EXPECT_EQ(pieces(t, t.encode("😀", false)), (std::vector<std::string>{"▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}));
  EXPECT_EQ(pieces(t, t.encode("\n", false)), (std::vector<std::string>{"▁", "<0x0A>"}));
}

TEST(Tokenizer, HandCheckedPieces) {
  const Tokenizer& t = tok();
  EXPECT_EQ(pieces(t, t.encode("the", false)), (std::vector<std::string>{"▁the"}));
  EXPECT_EQ(pieces(t, t.encode("the", true)), (std::vector<std::string>{"<s>", "▁the"}));
  // After a special piece no dummy prefix: 系 统 ： each a piece of their own (no merges in this model).
  EXPECT_EQ(pieces(t, t.encode("[unused9]系统：", false)), (std::vector<std::string>{"[unused9]", "系", "统", "："}));
  // A space after a special piece is the text's own: "▁" starts the next piece.
  EXPECT_EQ(pieces(t, t.encode("[unused9] the", false)), (std::vector<std::string>{"[unused9]", "▁the"}));
  EXPECT_EQ(t.decode(t.encode("[unused9] the", false)), "[unused9] the");
}

TEST(Tokenizer, SpecialPiecesInText) {
  const Tokenizer& t = tok();
  EXPECT_EQ(t.encode("[unused9]", false), (std::vector<int32_t>{kUnused9}));
  EXPECT_EQ(t.encode("<s></s><pad>", false), (std::vector<int32_t>{kBos, kEos, kPad}));
  const auto ids = t.encode("a[unused10]b[unused16]", false);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[1], kUnused10);
  EXPECT_EQ(ids[3], kUnused16);
  EXPECT_EQ(t.piece(ids[0]), "▁a");
  EXPECT_EQ(t.piece(ids[2]), "b");
  // Near misses stay text.
  for (const std::string s : {"[unused1]", "[unused9", "unused9]", "[UNUSED9]", "<s"}) {
    const auto v = t.encode(s, false);
    EXPECT_GT(v.size(), 1u) << s;
    for (int32_t id : v) EXPECT_FALSE(t.is_special(id)) << s;
    EXPECT_EQ(t.decode(v), s);
  }
  // parse_special = false: control strings are text (user-defined pieces SentencePiece matches itself).
  const auto plain = t.encode("<s>", false, false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kBos), 0);
  EXPECT_EQ(t.decode(plain), "<s>");
}

TEST(Tokenizer, MatchesIndependentPythonEncoder) {
  const Tokenizer& t = tok();
  const std::vector<std::string> texts = {
      kAscii, kChinese, kEmoji, kRare, "", " ", "  leading", "trailing  ", "a  b   c",
      "The GNU General Public License is a free, copyleft license for software and other kinds of works.",
      "[unused9]", "x[unused9]y", "[unused9][unused10]", "<s>[unused9]系统：hello world[unused10]",
      "[unused1] [unused9 ] [unused10]0", "digits 0123456789 and 3.14159", "中文和英文混合的句子 hello 世界 12345",
      pangu_chat_prompt({{"system", "你是一个翻译助手。"}, {"user", "请把这句话翻译成英文：我喜欢学习新的知识。"}}),
      "tab\there, newline\nthere", "</s>", "<pad><unk>"};
  const std::string dir = make_dir("python_reference", {});
  const std::string in = dir + "/texts.json", out = dir + "/ids.json";
  std::ofstream(in) << nlohmann::json(texts).dump();
  const std::string cmd = "/usr/bin/python3 " + moge::test::source_path("tests/data/tokenizer/spm_bpe_reference.py") +
                          " " + kDir + "/tokenizer.model " + in + " " + out + " > " + dir + "/log.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "failed: " << cmd;
  const auto expected = nlohmann::json::parse(std::ifstream(out)).get<std::vector<std::vector<int32_t>>>();
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(t.encode(texts[i], false), expected[i]) << "text: " << texts[i];
}

TEST(Tokenizer, ChatPromptEncodesToSpecialIds) {
  const Tokenizer& t = tok();
  const std::string prompt = pangu_chat_prompt({{"system", "你是一个乐于助人的助手。"}, {"user", "今天天气怎么样？"}});
  const auto ids = t.encode(prompt, false);  // the prompt spells <s> itself
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids[0], kBos);
  EXPECT_EQ(ids[1], kUnused9);
  EXPECT_EQ(t.piece(ids[2]), "系");  // no "▁" after a special piece
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused9), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused10), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kBos), 1);
  const std::vector<int32_t> tail(ids.end() - 4, ids.end());
  EXPECT_EQ(pieces(t, tail), (std::vector<std::string>{"[unused9]", "助", "手", "："}));
  EXPECT_EQ(t.decode(ids, /*keep_control=*/true), prompt);
  EXPECT_EQ(t.decode(ids), prompt.substr(3));  // without the invisible <s>
}

TEST(ChatTemplate, Renders) {
  EXPECT_EQ(pangu_chat_prompt({{"system", "S"}, {"user", "U"}}),
            "<s>[unused9]系统：S[unused10][unused9]用户：U[unused10][unused9]助手：");
  EXPECT_EQ(pangu_chat_prompt({{"user", "U"}}), "<s>[unused9]用户：U[unused10][unused9]助手：");
  ChatOptions empty_system;
  empty_system.empty_system_block = true;
  EXPECT_EQ(pangu_chat_prompt({{"user", "U"}}, empty_system),
            "<s>[unused9]系统：[unused10][unused9]用户：U[unused10][unused9]助手：");
  EXPECT_EQ(pangu_chat_prompt({{"system", "S"}, {"user", "U"}}, empty_system),
            "<s>[unused9]系统：S[unused10][unused9]用户：U[unused10][unused9]助手：");
  EXPECT_EQ(pangu_chat_prompt({{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}}),
            "<s>[unused9]系统：S[unused10][unused9]用户：U1[unused10][unused9]助手：A1[unused10]"
            "[unused9]用户：U2[unused10][unused9]助手：");
  ChatOptions no_generation;
  no_generation.add_generation_prompt = false;
  EXPECT_EQ(pangu_chat_prompt({{"user", "U"}, {"assistant", "A"}}, no_generation),
            "<s>[unused9]用户：U[unused10][unused9]助手：A[unused10]");
  // Full-width colon U+FF1A, not ':'.
  EXPECT_NE(pangu_chat_prompt({{"user", "U"}}).find("\xEF\xBC\x9A"), std::string::npos);
  expect_error([] { pangu_chat_prompt({{"user", "U"}, {"tool", "T"}}); }, {"chat message 1", "tool"});
}

TEST(StreamDecoder, ChunksAreWholeCharactersAndConcatenateToDecode) {
  const Tokenizer& t = tok();
  for (const std::string& text : {kChinese, kEmoji, kRare, kAscii, std::string("😀😀😀"), pangu_chat_prompt({{"user", "龘😀é"}})}) {
    const auto ids = t.encode(text, true);
    StreamDecoder d(t);
    std::string all;
    for (int32_t id : ids) {
      const std::string chunk = d.push(id);
      EXPECT_TRUE(valid_utf8(chunk)) << "partial UTF-8 after id " << id << " in: " << text;
      all += chunk;
    }
    all += d.finish();
    EXPECT_EQ(all, t.decode(ids)) << text;
  }
  // The emoji's four byte pieces: nothing until the last, then the whole character.
  const auto ids = t.encode("😀", false);
  ASSERT_EQ(ids.size(), 5u);
  StreamDecoder d(t);
  EXPECT_EQ(d.push(ids[0]), "");  // the dummy prefix, stripped at the start
  EXPECT_EQ(d.push(ids[1]), "");
  EXPECT_EQ(d.push(ids[2]), "");
  EXPECT_EQ(d.push(ids[3]), "");
  EXPECT_EQ(d.push(ids[4]), "😀");
  // An unfinished character at the end comes out as U+FFFD per byte, as SentencePiece decodes it.
  StreamDecoder e(t);
  EXPECT_EQ(e.push(ids[1]), "");
  EXPECT_EQ(e.push(ids[2]), "");
  EXPECT_EQ(e.finish(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// decode() and StreamDecoder against SentencePiece's DecodeIds on random id sequences: any piece,
// runs of byte pieces that spell valid characters, and runs of random (often invalid) bytes.
void check_decode_against_sentencepiece(const std::string& dir) {
  const Tokenizer t = Tokenizer::load(dir);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(dir + "/tokenizer.model").ok());
  ASSERT_EQ(sp.GetPieceSize(), t.vocab_size());
  std::mt19937 rng(1234);
  auto byte_id = [&](int b) { return t.piece_to_id(byte_piece(b)); };
  const std::vector<uint32_t> code_points = {0x41, 0xE9, 0x3B1, 0x4E2D, 0x9F98, 0xFF1A, 0x1F600, 0x1F44D, 0x10FFFF, 0xFFFD};
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<int> ids;
    const int n = 1 + rng() % 12;
    for (int k = 0; k < n; ++k) {
      const int kind = rng() % 4;
      if (kind == 0) {
        ids.push_back(rng() % t.vocab_size());
      } else if (kind == 1) {
        ids.push_back(byte_id(rng() % 256));
      } else if (kind == 2) {  // a whole character as byte pieces
        const uint32_t cp = code_points[rng() % code_points.size()];
        std::string u;
        if (cp < 0x80) u = char(cp);
        else if (cp < 0x800) u = {char(0xC0 | cp >> 6), char(0x80 | (cp & 0x3F))};
        else if (cp < 0x10000) u = {char(0xE0 | cp >> 12), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
        else u = {char(0xF0 | cp >> 18), char(0x80 | ((cp >> 12) & 0x3F)), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
        for (unsigned char c : u) ids.push_back(byte_id(c));
      } else {  // a special or a piece with a leading "▁"
        const int32_t choices[] = {t.bos_id(), t.eos_ids()[0], t.unk_id(), t.piece_to_id("▁"), t.piece_to_id("▁the"),
                                   t.piece_to_id("[unused9]")};
        const int32_t id = choices[rng() % 6];
        if (id >= 0) ids.push_back(id);
      }
    }
    const std::vector<int32_t> ids32(ids.begin(), ids.end());
    const std::string expected = sp.DecodeIds(ids);
    ASSERT_EQ(t.decode(ids32), expected) << "trial " << trial;
    StreamDecoder d(t);
    std::string streamed;
    for (int32_t id : ids32) {
      const std::string chunk = d.push(id);
      ASSERT_TRUE(valid_utf8(chunk)) << "trial " << trial;
      streamed += chunk;
    }
    streamed += d.finish();
    ASSERT_EQ(streamed, expected) << "trial " << trial;
    ++checked;
  }
  EXPECT_EQ(checked, 3000);
}

// Byte runs at the edges of UTF-8: overlong forms, surrogates, values above U+10FFFF, stray
// continuation bytes, truncated characters; alone, between text pieces, and back to back.
TEST(StreamDecoder, MalformedByteRunsMatchSentencePiece) {
  const Tokenizer& t = tok();
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(kDir + "/tokenizer.model").ok());
  const std::vector<std::vector<int>> runs = {
      {0xE0, 0x80, 0x80}, {0xE0, 0x9F, 0xBF}, {0xE0, 0xA0, 0x80}, {0xED, 0xA0, 0x80}, {0xED, 0x9F, 0xBF},
      {0xF0, 0x80, 0x80, 0x80}, {0xF0, 0x8F, 0xBF, 0xBF}, {0xF0, 0x90, 0x80, 0x80}, {0xF4, 0x8F, 0xBF, 0xBF},
      {0xF4, 0x90, 0x80, 0x80}, {0xF5, 0x80, 0x80, 0x80}, {0xC0, 0x80}, {0xC1, 0xBF}, {0xC2, 0x80}, {0x80},
      {0xBF, 0x41}, {0xFF}, {0xFE, 0x41}, {0xE4, 0xB8}, {0xE4, 0xB8, 0x41}, {0xF0, 0x9F, 0x98}, {0xE4}, {0x00}};
  const int32_t the = t.piece_to_id("▁the");
  for (size_t a = 0; a < runs.size(); ++a) {
    for (size_t b = 0; b < runs.size(); b += 5) {
      for (int around = 0; around < 2; ++around) {
        std::vector<int> ids;
        if (around) ids.push_back(the);
        for (int byte : runs[a]) ids.push_back(t.piece_to_id(byte_piece(byte)));
        for (int byte : runs[b]) ids.push_back(t.piece_to_id(byte_piece(byte)));
        if (around) ids.push_back(the);
        const std::vector<int32_t> ids32(ids.begin(), ids.end());
        EXPECT_EQ(t.decode(ids32), sp.DecodeIds(ids)) << "runs " << a << ", " << b;
        StreamDecoder d(t);
        std::string streamed;
        for (int32_t id : ids32) {
          const std::string chunk = d.push(id);
          EXPECT_TRUE(valid_utf8(chunk)) << "runs " << a << ", " << b;
          streamed += chunk;
        }
        EXPECT_EQ(streamed + d.finish(), sp.DecodeIds(ids)) << "runs " << a << ", " << b;
      }
    }
  }
}

TEST(StreamDecoder, DecodeMatchesSentencePieceOnRandomIds) { check_decode_against_sentencepiece(kDir); }

// The unigram model keeps SentencePiece's default remove_extra_whitespaces = true: another
// leading-space rule for decode().
TEST(StreamDecoder, DecodeMatchesSentencePieceOnRandomIdsUnigram) { check_decode_against_sentencepiece(kUnigramDir); }

TEST(Tokenizer, UnigramModel) {
  const Tokenizer t = Tokenizer::load(kUnigramDir);
  EXPECT_EQ(t.vocab_size(), 800);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{2}));  // no config files: the model's </s>
  EXPECT_EQ(t.pad_id(), -1);
  for (const std::string& s : {kAscii, std::string("你好，请介绍一下你自己。"), kEmoji, kChinese})
    EXPECT_EQ(t.decode(t.encode(s, true)), s);
  // Longest match: "<think></think>" is one piece, not <think> followed by the text "</think>".
  const int32_t think = t.piece_to_id("<think>"), think_pair = t.piece_to_id("<think></think>");
  ASSERT_GE(think, 0);
  ASSERT_GE(think_pair, 0);
  EXPECT_EQ(t.encode("<think></think>", false), (std::vector<int32_t>{think_pair}));
  EXPECT_EQ(t.encode("<think><think></think>", false), (std::vector<int32_t>{think, think_pair}));
  const auto ids = t.encode("<think>x</think>", false);
  EXPECT_EQ(ids.front(), think);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), think_pair), 0);
  EXPECT_EQ(t.decode(ids), "<think>x</think>");
}

TEST(TokenizerConfig, GenerationConfigIntForm) {
  const std::string dir = make_dir("gen_int", {{"generation_config.json",
                                                R"({"bos_token_id": 1, "eos_token_id": 5, "pad_token_id": 0})"}});
  const Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{5}));
  EXPECT_TRUE(t.is_eos(5));
  EXPECT_FALSE(t.is_eos(2));  // the model's </s> is not added when a file names the eos
  EXPECT_EQ(t.pad_id(), 0);
}

TEST(TokenizerConfig, GenerationConfigListForm) {
  const std::string dir = make_dir("gen_list", {{"generation_config.json",
                                                 R"({"bos_token_id": 4, "eos_token_id": [6, 2, 6], "pad_token_id": null})"}});
  const Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.bos_id(), 4);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{2, 6}));
  EXPECT_EQ(t.pad_id(), kPad);  // null: the model's <pad>
  // A bos that is a user-defined piece: encode(add_bos) puts it first.
  EXPECT_EQ(t.encode("the", true), (std::vector<int32_t>{4, t.piece_to_id("▁the")}));
}

TEST(TokenizerConfig, TokenizerConfigStringAndContentForms) {
  const std::string dir = make_dir(
      "tok_config", {{"tokenizer_config.json",
                      R"({"bos_token": {"content": "<s>", "lstrip": false, "special": true},
                          "eos_token": {"__type": "AddedToken", "content": "[unused10]"},
                          "pad_token": "<unk>", "unk_token": "<unk>", "add_bos_token": true})"}});
  const Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.bos_id(), kBos);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{kUnused10}));
  EXPECT_EQ(t.pad_id(), kUnk);
}

TEST(TokenizerConfig, PrecedenceAndUnion) {
  // generation_config.json wins for bos and pad; eos is the union of both files.
  const std::string dir =
      make_dir("both", {{"generation_config.json", R"({"bos_token_id": 6, "eos_token_id": 2, "pad_token_id": 7})"},
                        {"tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "[unused10]", "pad_token": null})"}});
  const Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.bos_id(), 6);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{kEos, kUnused10}));
  EXPECT_EQ(t.pad_id(), 7);
}

TEST(TokenizerConfig, FallsBackToTheModel) {
  const Tokenizer t = Tokenizer::load(make_dir("model_only", {}));
  EXPECT_EQ(t.bos_id(), kBos);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{kEos}));
  EXPECT_EQ(t.pad_id(), kPad);
}

TEST(TokenizerConfig, Errors) {
  const std::string gen = "generation_config.json", tc = "tokenizer_config.json";
  expect_error([] { Tokenizer::load(moge::test::binary_path("tokenizer_test/does_not_exist")); }, {"tokenizer.model", "not found"});
  const std::string no_model = make_dir("no_model", {{gen, "{}"}}, false);
  expect_error([&] { Tokenizer::load(no_model); }, {no_model + "/tokenizer.model", "not found"});

  const std::string garbage = make_dir("garbage", {}, false);
  std::ofstream(garbage + "/tokenizer.model") << "this is not a SentencePiece model";
  expect_error([&] { Tokenizer::load(garbage); }, {garbage + "/tokenizer.model", "not a valid SentencePiece model"});
  const std::string truncated = make_dir("truncated", {}, false);
  {
    std::ifstream in(kDir + "/tokenizer.model", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated + "/tokenizer.model", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  expect_error([&] { Tokenizer::load(truncated); }, {truncated + "/tokenizer.model", "not a valid SentencePiece model"});

  const std::string bad_gen = make_dir("bad_gen_json", {{gen, R"({"eos_token_id": [2, )"}});
  expect_error([&] { Tokenizer::load(bad_gen); }, {bad_gen + "/" + gen, "invalid JSON"});
  const std::string bad_tc = make_dir("bad_tc_json", {{tc, "{'bos_token': '<s>'}"}});
  expect_error([&] { Tokenizer::load(bad_tc); }, {bad_tc + "/" + tc, "invalid JSON"});

  const std::string eos_range = make_dir("eos_range", {{gen, R"({"eos_token_id": 800})"}});
  expect_error([&] { Tokenizer::load(eos_range); }, {eos_range + "/" + gen, "eos_token_id 800", "outside the vocabulary"});
  const std::string eos_list_range = make_dir("eos_list_range", {{gen, R"({"eos_token_id": [2, 153375]})"}});
  expect_error([&] { Tokenizer::load(eos_list_range); }, {gen, "eos_token_id[1] 153375"});
  const std::string bos_negative = make_dir("bos_negative", {{gen, R"({"bos_token_id": -1})"}});
  expect_error([&] { Tokenizer::load(bos_negative); }, {gen, "bos_token_id -1"});
  const std::string pad_type = make_dir("pad_type", {{gen, R"({"pad_token_id": "0"})"}});
  expect_error([&] { Tokenizer::load(pad_type); }, {gen, "pad_token_id must be an integer"});
  const std::string not_object = make_dir("not_object", {{gen, "[1, 2]"}});
  expect_error([&] { Tokenizer::load(not_object); }, {gen, "not a JSON object"});

  const std::string unknown_piece = make_dir("unknown_piece", {{tc, R"({"eos_token": "<|endoftext|>"})"}});
  expect_error([&] { Tokenizer::load(unknown_piece); }, {unknown_piece + "/" + tc, "eos_token", "<|endoftext|>"});
  const std::string no_content = make_dir("no_content", {{tc, R"({"bos_token": {"special": true}})"}});
  expect_error([&] { Tokenizer::load(no_content); }, {tc, "bos_token", "content"});
  const std::string token_type = make_dir("token_type", {{tc, R"({"pad_token": 3})"}});
  expect_error([&] { Tokenizer::load(token_type); }, {tc, "pad_token"});

  expect_error([] { tok().decode(std::vector<int32_t>{1, 800}); }, {"token id 800", "tokenizer.model"});
  expect_error([] { tok().decode(std::vector<int32_t>{-1}); }, {"token id -1"});
}
