#pragma once
// Tokenizer: a SentencePiece model (BPE or unigram) plus the special ids a Hugging Face checkpoint
// declares (MOGE.md §3), and StreamDecoder, which turns generated ids into text one id at a time.
//
// Special pieces in text. encode() first splits the text on the strings of the special pieces:
// every piece of type CONTROL (<s>, </s>, <pad>, ...) or USER_DEFINED ([unused9], [unused10], ...),
// plus the pieces of bos_id(), eos_ids() and pad_id() whatever their type; the longest match wins
// ([unused10] before [unused1]). Each such string becomes its single id; the text between is
// encoded by SentencePiece. Only a stretch of text that starts the whole input gets the model's
// dummy prefix "▁" (add_dummy_prefix); a stretch that follows a special piece does not, so
// "[unused9]系统：" encodes as [unused9] 系 统 ：, the same pieces SentencePiece itself gives a
// USER_DEFINED symbol inside text, and decode() gives the text back. (Hugging Face's "legacy"
// Llama tokenizer and llama.cpp put a "▁" after every special piece instead; for a model without
// add_dummy_prefix the two agree.) parse_special=false encodes the text as plain text.
//
// Decoding follows SentencePiece's DecodeIds (0.1.97; tests/tokenizer_test.cpp checks it on
// random id sequences): "▁" reads as a space, the first text piece loses its leading "▁" when the
// model adds a dummy prefix, CONTROL pieces are invisible (keep_control=true writes them out, so
// that decode(encode(prompt), true) == prompt), <unk> reads as " ⁇ ", and byte-fallback pieces
// <0xNN> are joined into UTF-8; a byte that cannot be part of a valid sequence reads as U+FFFD.
//
// Special ids, each read by load(dir) and checked against the vocabulary:
//   bos_id: generation_config.json "bos_token_id", else tokenizer_config.json "bos_token",
//           else the SentencePiece model's <s>; -1 when none.
//   eos_ids: the union of generation_config.json "eos_token_id" (an int or a list of ints) and
//           tokenizer_config.json "eos_token" (vLLM stops on both); when neither file names one,
//           the model's </s>. Empty when none.
//   pad_id: as bos_id, with "pad_token_id" / "pad_token" / <pad>; -1 when none.
// tokenizer_config.json's *_token values may be a string or an object with a "content" string
// (Hugging Face's AddedToken); JSON null means absent. Every failure throws moge::Error naming the
// file: a missing tokenizer.model, a file that is not a SentencePiece model, invalid JSON, a value
// of the wrong type, an id outside [0, vocab_size()), a token string that is no piece.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moge::tokenizer {

class Tokenizer {
 public:
  // Loads DIR/tokenizer.model and, when present, DIR/generation_config.json and
  // DIR/tokenizer_config.json.
  static Tokenizer load(const std::string& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text (UTF-8) to ids; add_bos puts bos_id() first (an Error when the tokenizer has none).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  // Ids to text, as described above. An id outside [0, vocab_size()) is an Error.
  std::string decode(std::span<const int32_t> ids, bool keep_control = false) const;

  int32_t vocab_size() const;
  // The piece of `id` as the model stores it ("▁the", "<0xF0>", "[unused9]").
  const std::string& piece(int32_t id) const;
  // The id of a piece, -1 when the vocabulary has no such piece.
  int32_t piece_to_id(std::string_view piece) const;

  int32_t bos_id() const;
  const std::vector<int32_t>& eos_ids() const;  // sorted, no duplicates
  int32_t pad_id() const;
  int32_t unk_id() const;  // -1 when none
  bool is_eos(int32_t id) const;
  // Whether `id` is one of the special pieces encode() matches in text.
  bool is_special(int32_t id) const;
  bool is_control(int32_t id) const;
  bool is_byte(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class StreamDecoder;
};

// Incremental detokenization for generation. push(id) returns the text that id completes: never
// part of a UTF-8 sequence (a multi-byte character spelled by byte-fallback pieces comes out whole
// with its last byte), so every chunk is valid UTF-8. finish() returns what is still held (bytes of
// an unfinished character, as U+FFFD each) and starts over. For any ids, the chunks of push() for
// each id followed by finish() concatenate to decode(ids, keep_control). The Tokenizer must
// outlive the decoder.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool keep_control = false);

  std::string push(int32_t id);
  std::string finish();
  // Drops held bytes and starts a new text (the next piece is the first again).
  void reset();

 private:
  std::string drain(bool final);

  const Tokenizer::Impl* tok_;
  bool keep_control_;
  std::string pending_;      // bytes of byte-fallback pieces not yet forming a whole character
  bool is_bos_ws_ = true;    // the next text piece may still lose its leading "▁"
  bool bos_ws_seen_ = false;
  bool emitted_ = false;     // any visible text produced yet
};

}  // namespace moge::tokenizer
