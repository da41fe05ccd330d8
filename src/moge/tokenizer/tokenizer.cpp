#include "moge/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "moge/core/error.h"

namespace moge::tokenizer {

namespace {

using nlohmann::json;

const std::string kSpaceSymbol = "\xE2\x96\x81";     // U+2581, SentencePiece's space
const std::string kReplacement = "\xEF\xBF\xBD";     // U+FFFD

// ModelProto.SentencePiece.Type (sentencepiece_model.proto).
enum class PieceType : uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

// ---- A minimal protobuf reader: the installed SentencePiece exposes ModelProto only as bytes
// (serialized_model_proto()), and we need the piece types and two normalizer flags from it, and a
// copy of it without the dummy prefix.

struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;       // wire 0 (and the raw bits of wire 1 / 5)
  std::string_view bytes;    // wire 2
  std::string_view raw;      // the whole field, tag included
};

bool read_varint(std::string_view s, size_t& pos, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= s.size()) return false;
    const uint8_t b = uint8_t(s[pos++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Calls f(field) for each field of a message; false when the bytes are not a well-formed message.
template <class F>
bool for_each_field(std::string_view msg, F&& f) {
  size_t pos = 0;
  while (pos < msg.size()) {
    const size_t start = pos;
    uint64_t tag;
    if (!read_varint(msg, pos, tag)) return false;
    Field field;
    field.number = uint32_t(tag >> 3);
    field.wire = uint32_t(tag & 7);
    switch (field.wire) {
      case 0:
        if (!read_varint(msg, pos, field.varint)) return false;
        break;
      case 1:
      case 5: {
        const size_t n = field.wire == 1 ? 8 : 4;
        if (msg.size() - pos < n) return false;
        for (size_t i = 0; i < n; ++i) field.varint |= uint64_t(uint8_t(msg[pos + i])) << (8 * i);
        pos += n;
        break;
      }
      case 2: {
        uint64_t len;
        if (!read_varint(msg, pos, len) || len > msg.size() - pos) return false;
        field.bytes = msg.substr(pos, len);
        pos += len;
        break;
      }
      default:
        return false;  // groups are not used by sentencepiece_model.proto
    }
    field.raw = msg.substr(start, pos - start);
    f(field);
  }
  return true;
}

void append_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}

// ModelProto field numbers.
constexpr uint32_t kPieces = 1, kNormalizerSpec = 3, kSelfTestData = 4, kDenormalizerSpec = 5;
// NormalizerSpec field numbers.
constexpr uint32_t kPrecompiledCharsmap = 2, kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4;

// The model with add_dummy_prefix = false (and without self-test samples, which were made with the
// prefix): for text that follows a special piece.
std::string without_dummy_prefix(std::string_view model) {
  const std::string no_prefix = {char((kAddDummyPrefix << 3) | 0), char(0)};
  std::string out;
  bool had_spec = false;
  for_each_field(model, [&](const Field& f) {
    if (f.number == kSelfTestData) return;
    if (f.number == kNormalizerSpec && f.wire == 2) {
      had_spec = true;
      append_varint(out, (kNormalizerSpec << 3) | 2);
      append_varint(out, f.bytes.size() + no_prefix.size());
      out += f.bytes;
      out += no_prefix;  // a later scalar field wins
      return;
    }
    out += f.raw;
  });
  if (!had_spec) {
    append_varint(out, (kNormalizerSpec << 3) | 2);
    append_varint(out, no_prefix.size());
    out += no_prefix;
  }
  return out;
}

// Length of the UTF-8 character at s[i]: > 0 when whole and valid (the rules of SentencePiece's
// DecodeUTF8: no overlong forms, no surrogates, nothing above U+10FFFF), 0 when the bytes so far
// are a valid beginning of one, -1 when s[i] cannot begin a valid character here.
int utf8_char(std::string_view s, size_t i) {
  const uint8_t b0 = uint8_t(s[i]);
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    const uint8_t b = uint8_t(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
  }
  return len;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

std::optional<json> read_json(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path.string() + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace

struct Tokenizer::Impl {
  std::string model_path;
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_no_prefix;  // null: no dummy prefix
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  std::string unk_surface;

  std::vector<PieceType> types;
  std::vector<uint8_t> byte_value;  // for byte pieces
  std::vector<uint8_t> special;     // matched in text by encode()

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> special_ids;
  std::vector<size_t> special_lengths;  // distinct, longest first
  std::array<bool, 256> special_first{};

  int32_t bos = -1, pad = -1, unk = -1;
  std::vector<int32_t> eos;

  int32_t size() const { return int32_t(types.size()); }

  void check_id(int32_t id) const {
    if (id < 0 || id >= size())
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(size()) +
                  ") of " + model_path);
  }

  int32_t piece_id(std::string_view piece) const {
    const int id = sp.PieceToId(std::string(piece));
    if (id < 0 || id >= size() || sp.IdToPiece(id) != piece) return -1;
    return id;
  }

  void add_special(int32_t id) {
    const std::string& p = sp.IdToPiece(id);
    if (p.empty()) return;
    special[id] = 1;
    special_ids.emplace(p, id);
    special_first[uint8_t(p[0])] = true;
    if (std::find(special_lengths.begin(), special_lengths.end(), p.size()) == special_lengths.end())
      special_lengths.push_back(p.size());
  }

  void encode_plain(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    const auto& proc = (at_start || !sp_no_prefix) ? sp : *sp_no_prefix;
    std::vector<int> ids;
    const auto status = proc.Encode(text, &ids);
    check(status.ok(), model_path + ": encoding failed: " + status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  const fs::path model_path = fs::path(dir) / "tokenizer.model";
  t.model_path = model_path.string();
  std::error_code ec;
  check(fs::is_regular_file(model_path, ec), t.model_path + ": not found (a SentencePiece tokenizer.model)");

  std::string bytes;
  {
    std::ifstream in(model_path, std::ios::binary);
    check(bool(in), t.model_path + ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  const auto status = t.sp.LoadFromSerializedProto(bytes);
  check(status.ok(), t.model_path + ": not a valid SentencePiece model (" + status.ToString() + ")");
  const int n = t.sp.GetPieceSize();
  check(n > 0, t.model_path + ": the model has no pieces");

  // Piece types and normalizer flags, from the proto itself.
  t.types.reserve(n);
  bool has_denormalizer = false;
  const bool well_formed = for_each_field(bytes, [&](const Field& f) {
    if (f.wire != 2) return;
    if (f.number == kPieces) {
      PieceType type = PieceType::normal;
      for_each_field(f.bytes, [&](const Field& g) {
        if (g.number == 3 && g.wire == 0) type = PieceType(g.varint);
      });
      t.types.push_back(type);
    } else if (f.number == kNormalizerSpec) {
      for_each_field(f.bytes, [&](const Field& g) {
        if (g.wire != 0) return;
        if (g.number == kAddDummyPrefix) t.add_dummy_prefix = g.varint != 0;
        if (g.number == kRemoveExtraWhitespaces) t.remove_extra_whitespaces = g.varint != 0;
      });
    } else if (f.number == kDenormalizerSpec) {
      for_each_field(f.bytes, [&](const Field& g) {
        if (g.number == kPrecompiledCharsmap && g.wire == 2 && !g.bytes.empty()) has_denormalizer = true;
      });
    }
  });
  check(well_formed && int(t.types.size()) == n, t.model_path + ": not a valid SentencePiece model (malformed pieces)");
  check(!has_denormalizer, t.model_path + ": the model has a denormalizer, which moge's decoder does not implement");

  t.byte_value.assign(n, 0);
  t.special.assign(n, 0);
  for (int id = 0; id < n; ++id) {
    const std::string& p = t.sp.IdToPiece(id);
    if (t.types[id] == PieceType::byte) {
      unsigned v = 0;
      check(p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' &&
                std::sscanf(p.c_str() + 3, "%2x", &v) == 1,
            t.model_path + ": byte piece " + std::to_string(id) + " is \"" + p + "\", not <0xNN>");
      t.byte_value[id] = uint8_t(v);
    }
    if (t.types[id] == PieceType::control || t.types[id] == PieceType::user_defined) t.add_special(id);
  }
  t.unk = t.sp.unk_id();
  if (t.unk >= 0) {
    std::string s;
    t.sp.Decode(std::vector<int>{t.unk}, &s);
    t.unk_surface = s;
  }
  if (t.add_dummy_prefix) {
    t.sp_no_prefix = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto st = t.sp_no_prefix->LoadFromSerializedProto(without_dummy_prefix(bytes));
    check(st.ok(), t.model_path + ": cannot derive a model without the dummy prefix (" + st.ToString() + ")");
  }

  // Special ids.
  auto in_range = [&](const json& v, const std::string& file, const std::string& key) -> int32_t {
    check(v.is_number_integer(), file + ": " + key + " must be an integer, not " + v.dump());
    const int64_t id = v.get<int64_t>();
    check(id >= 0 && id < n, file + ": " + key + " " + std::to_string(id) + " is outside the vocabulary [0, " +
                                 std::to_string(n) + ") of " + t.model_path);
    return int32_t(id);
  };
  std::optional<int32_t> gen_bos, gen_pad, tok_bos, tok_pad;
  std::vector<int32_t> eos;
  bool eos_given = false;

  const fs::path gen_path = fs::path(dir) / "generation_config.json";
  if (auto gen = read_json(gen_path)) {
    const std::string file = gen_path.string();
    check(gen->is_object(), file + ": not a JSON object");
    if (gen->contains("bos_token_id") && !(*gen)["bos_token_id"].is_null())
      gen_bos = in_range((*gen)["bos_token_id"], file, "bos_token_id");
    if (gen->contains("pad_token_id") && !(*gen)["pad_token_id"].is_null())
      gen_pad = in_range((*gen)["pad_token_id"], file, "pad_token_id");
    if (gen->contains("eos_token_id") && !(*gen)["eos_token_id"].is_null()) {
      const json& v = (*gen)["eos_token_id"];
      eos_given = true;
      if (v.is_array()) {
        for (size_t i = 0; i < v.size(); ++i)
          eos.push_back(in_range(v[i], file, "eos_token_id[" + std::to_string(i) + "]"));
      } else {
        eos.push_back(in_range(v, file, "eos_token_id"));
      }
    }
  }

  const fs::path tok_path = fs::path(dir) / "tokenizer_config.json";
  if (auto cfg = read_json(tok_path)) {
    const std::string file = tok_path.string();
    check(cfg->is_object(), file + ": not a JSON object");
    auto token = [&](const char* key) -> std::optional<int32_t> {
      if (!cfg->contains(key) || (*cfg)[key].is_null()) return std::nullopt;
      const json* v = &(*cfg)[key];
      if (v->is_object()) {
        check(v->contains("content") && (*v)["content"].is_string(),
              file + ": " + key + " is an object without a \"content\" string");
        v = &(*v)["content"];
      }
      check(v->is_string(), file + ": " + key + " must be a string or an object with \"content\", not " + v->dump());
      const std::string s = v->get<std::string>();
      const int32_t id = t.piece_id(s);
      check(id >= 0, file + ": " + key + " \"" + s + "\" is not a piece of " + t.model_path);
      return id;
    };
    tok_bos = token("bos_token");
    tok_pad = token("pad_token");
    if (auto e = token("eos_token")) {
      eos_given = true;
      eos.push_back(*e);
    }
  }

  t.bos = gen_bos ? *gen_bos : tok_bos ? *tok_bos : t.sp.bos_id();
  t.pad = gen_pad ? *gen_pad : tok_pad ? *tok_pad : t.sp.pad_id();
  if (!eos_given && t.sp.eos_id() >= 0) eos.push_back(t.sp.eos_id());
  std::sort(eos.begin(), eos.end());
  eos.erase(std::unique(eos.begin(), eos.end()), eos.end());
  t.eos = std::move(eos);

  if (t.bos >= 0) t.add_special(t.bos);
  if (t.pad >= 0) t.add_special(t.pad);
  for (int32_t id : t.eos) t.add_special(id);
  for (const char* s : {"<s>", "</s>"}) {
    const int32_t id = t.piece_id(s);
    if (id >= 0) t.add_special(id);
  }
  std::sort(t.special_lengths.rbegin(), t.special_lengths.rend());

  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  if (add_bos) {
    check(t.bos >= 0, t.model_path + ": the tokenizer has no bos token to add");
    out.push_back(t.bos);
  }
  if (!parse_special || t.special_ids.empty()) {
    t.encode_plain(text, true, out);
    return out;
  }
  size_t seg = 0, pos = 0;
  while (pos < text.size()) {
    if (t.special_first[uint8_t(text[pos])]) {
      bool matched = false;
      for (size_t len : t.special_lengths) {
        if (len > text.size() - pos) continue;
        const auto it = t.special_ids.find(text.substr(pos, len));
        if (it == t.special_ids.end()) continue;
        t.encode_plain(text.substr(seg, pos - seg), seg == 0, out);
        out.push_back(it->second);
        pos += len;
        seg = pos;
        matched = true;
        break;
      }
      if (matched) continue;
    }
    ++pos;
  }
  t.encode_plain(text.substr(seg), seg == 0, out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool keep_control) const {
  StreamDecoder d(*this, keep_control);
  std::string out;
  for (int32_t id : ids) out += d.push(id);
  out += d.finish();
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->size(); }

const std::string& Tokenizer::piece(int32_t id) const {
  impl_->check_id(id);
  return impl_->sp.IdToPiece(id);
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const { return impl_->piece_id(piece); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
const std::vector<int32_t>& Tokenizer::eos_ids() const { return impl_->eos; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }

bool Tokenizer::is_eos(int32_t id) const {
  return std::find(impl_->eos.begin(), impl_->eos.end(), id) != impl_->eos.end();
}
bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < impl_->size() && impl_->special[id]; }
bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < impl_->size() && impl_->types[id] == PieceType::control;
}
bool Tokenizer::is_byte(int32_t id) const {
  return id >= 0 && id < impl_->size() && impl_->types[id] == PieceType::byte;
}

// ---- StreamDecoder: SentencePiece's Decode (sentencepiece_processor.cc), one piece at a time.

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool keep_control)
    : tok_(tokenizer.impl_.get()), keep_control_(keep_control) {}

void StreamDecoder::reset() {
  pending_.clear();
  is_bos_ws_ = true;
  bos_ws_seen_ = false;
  emitted_ = false;
}

std::string StreamDecoder::drain(bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int len = utf8_char(pending_, i);
    if (len > 0) {
      out.append(pending_, i, len);
      i += len;
    } else if (len == 0 && !final) {
      break;  // wait for the rest of the character
    } else {
      out += kReplacement;  // as SentencePiece: one U+FFFD per byte that starts no valid character
      i += 1;
    }
  }
  pending_.erase(0, i);
  if (!out.empty()) emitted_ = true;
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  const auto& t = *tok_;
  t.check_id(id);
  const PieceType type = t.types[id];
  if (type == PieceType::byte) {
    pending_.push_back(char(t.byte_value[id]));
    return drain(false);
  }
  std::string out = drain(true);
  if (bos_ws_seen_ || emitted_) is_bos_ws_ = false;
  std::string_view piece = t.sp.IdToPiece(id);
  if (type == PieceType::control) {
    bos_ws_seen_ = false;
    if (keep_control_) out += piece;  // visible, but not text for the leading-space rule
    return out;
  }
  if (type == PieceType::unknown) {
    bos_ws_seen_ = false;
    out += t.unk_surface;
    if (!t.unk_surface.empty()) emitted_ = true;
    return out;
  }
  bool has_bos_ws = false;
  if (is_bos_ws_ && (t.add_dummy_prefix || t.remove_extra_whitespaces)) {
    if (piece.starts_with(kSpaceSymbol)) {
      piece.remove_prefix(kSpaceSymbol.size());
      has_bos_ws = true;
    }
    if (t.remove_extra_whitespaces) has_bos_ws = false;  // strip every leading space
  }
  bos_ws_seen_ = has_bos_ws;
  const size_t before = out.size();
  for (size_t p = 0; p < piece.size();) {
    if (piece.compare(p, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      out += ' ';
      p += kSpaceSymbol.size();
    } else {
      out += piece[p++];
    }
  }
  if (out.size() > before) emitted_ = true;
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = drain(true);
  reset();
  return out;
}

}  // namespace moge::tokenizer
