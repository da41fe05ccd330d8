#include "moge/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <utility>

#include "moge/core/dtype.h"
#include "moge/core/error.h"

namespace moge::model {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Element types

namespace {

struct DTypeEntry {
  StDType type;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {StDType::F32, "F32", 4}, {StDType::F16, "F16", 2}, {StDType::BF16, "BF16", 2},
    {StDType::I8, "I8", 1},   {StDType::I32, "I32", 4}, {StDType::I64, "I64", 8},
    {StDType::U8, "U8", 1},
};

const DTypeEntry& dtype_entry(StDType t) {
  for (const DTypeEntry& e : kDTypes)
    if (e.type == t) return e;
  throw Error("invalid StDType value " + std::to_string(int(t)));
}

}  // namespace

size_t st_dtype_size(StDType t) { return dtype_entry(t).size; }
const char* st_dtype_name(StDType t) { return dtype_entry(t).name; }

std::optional<StDType> parse_st_dtype(std::string_view s) {
  for (const DTypeEntry& e : kDTypes)
    if (s == e.name) return e.type;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f)  // inf (mantissa 0) or NaN (payload kept in the top mantissa bits)
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0)  // normal: rebias the exponent from 15 to 127
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // ±0 or subnormal: mantissa × 2^-24, exact in f32.
  const float magnitude = float(mantissa) * 0x1p-24f;
  return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
}

// ---------------------------------------------------------------------------------------------
// Reading: small helpers

namespace {

constexpr int kMaxJsonDepth = 8;  // a valid header nests 3 deep: {"t": {"shape": [ ... ]}}
constexpr const char* kInvFreqSuffix = "rotary_emb.inv_freq";

std::string errno_text() { return std::strerror(errno); }

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool skipped_name(const std::string& name) { return ends_with(name, kInvFreqSuffix); }

uint64_t read_le64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}

// nlohmann's messages start with "[json.exception...] " and may quote a long token: keep them
// short and on one line.
std::string short_json_message(const std::exception& e) {
  std::string m = e.what();
  if (size_t close = m.find("] "); m.rfind("[json.exception", 0) == 0 && close != std::string::npos)
    m = m.substr(close + 2);
  if (m.size() > 160) m = m.substr(0, 160) + "...";
  std::replace(m.begin(), m.end(), '\n', ' ');
  return m;
}

// Refuses absurdly nested JSON before it reaches the parser: no input may cost unbounded stack
// anywhere downstream.
void check_nesting(std::string_view text, const std::string& where) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      check(++depth <= kMaxJsonDepth, where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

// Parses `text` as a JSON object; `where` names the file (and part) in errors.
json parse_json_object(std::string_view text, const std::string& where) {
  check_nesting(text, where);
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(where + ": not valid JSON (" + short_json_message(e) + ")");
  }
  check(j.is_object(), where + ": not a JSON object");
  return j;
}

// A non-negative JSON integer that fits in int64, else an Error naming `what`.
uint64_t json_size(const json& v, const std::string& what) {
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    check(v.get<int64_t>() >= 0, what + " is negative (" + v.dump() + ")");
  }
  check(v.is_number_unsigned(), what + " is not a non-negative integer");
  const uint64_t x = v.get<uint64_t>();
  check(x <= uint64_t(std::numeric_limits<int64_t>::max()), what + " overflows (" + std::to_string(x) + ")");
  return x;
}

const json& field(const json& entry, const char* key, const std::string& where) {
  auto it = entry.find(key);
  check(it != entry.end(), where + ": missing '" + key + "'");
  return *it;
}

std::string offsets_str(uint64_t begin, uint64_t end) {
  std::string s = "[";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on a + chain
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  s += "]";
  return s;
}

// A tensor entry of the header, before its bytes are located.
struct Entry {
  TensorInfo info;
  uint64_t begin = 0, end = 0;  // relative to the data section
};

StDType parse_entry_dtype(const json& entry, const std::string& where) {
  const json& v = field(entry, "dtype", where);
  check(v.is_string(), where + ": 'dtype' is not a string");
  const std::string& name = v.get_ref<const std::string&>();
  std::optional<StDType> t = parse_st_dtype(name);
  check(t.has_value(), where + ": unknown dtype '" + name + "' (expected F32, F16, BF16, I8, I32, I64 or U8)");
  return *t;
}

// The shape, and its byte size for `dtype`, with every product checked for overflow.
Shape parse_entry_shape(const json& entry, StDType dtype, const std::string& where, uint64_t* bytes) {
  const json& v = field(entry, "shape", where);
  check(v.is_array(), where + ": 'shape' is not an array");
  Shape shape;
  uint64_t total = st_dtype_size(dtype);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint64_t d = json_size(v[i], where + ": shape dimension " + std::to_string(i));
    check(!__builtin_mul_overflow(total, d, &total) && total <= uint64_t(std::numeric_limits<int64_t>::max()),
          where + ": shape " + v.dump() + " overflows");
    shape.push_back(int64_t(d));
  }
  *bytes = total;
  return shape;
}

Entry parse_entry(const std::string& name, const json& entry, const std::string& path) {
  const std::string where = path + ": tensor '" + name + "'";
  check(entry.is_object(), where + ": entry is not a JSON object");
  Entry e;
  e.info.name = name;
  e.info.dtype = parse_entry_dtype(entry, where);
  uint64_t bytes = 0;
  e.info.shape = parse_entry_shape(entry, e.info.dtype, where, &bytes);

  const json& offsets = field(entry, "data_offsets", where);
  check(offsets.is_array() && offsets.size() == 2, where + ": 'data_offsets' is not a [begin, end] pair");
  e.begin = json_size(offsets[0], where + ": data_offsets begin");
  e.end = json_size(offsets[1], where + ": data_offsets end");
  check(e.begin <= e.end, where + ": data_offsets " + offsets_str(e.begin, e.end) + " has begin > end");
  check(e.end - e.begin == bytes, where + ": shape " + shape_str(e.info.shape) + " x " + st_dtype_name(e.info.dtype) +
                                      " is " + std::to_string(bytes) + " bytes but data_offsets " +
                                      offsets_str(e.begin, e.end) + " span " + std::to_string(e.end - e.begin));
  e.info.bytes = size_t(bytes);
  return e;
}

std::map<std::string, std::string> parse_metadata(const json& v, const std::string& path) {
  check(v.is_object(), path + ": '__metadata__' is not a JSON object");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    check(value.is_string(), path + ": '__metadata__' value for '" + key + "' is not a string");
    out[key] = value.get<std::string>();
  }
  return out;
}

// Tensors, sorted by offset, must tile the data section exactly as the Rust reader demands:
// each begins where the previous ended, none runs past the end, and the last ends at the end.
void check_layout(const std::vector<Entry>& sorted, uint64_t data_size, const std::string& path) {
  uint64_t cursor = 0;
  const std::string* previous = nullptr;
  for (const Entry& e : sorted) {
    const std::string where = path + ": tensor '" + e.info.name + "'";
    check(e.end <= data_size, where + ": data_offsets " + offsets_str(e.begin, e.end) +
                                  " run past the end of the data section (" + std::to_string(data_size) +
                                  " bytes; file truncated?)");
    check(e.begin >= cursor, where + ": data_offsets " + offsets_str(e.begin, e.end) + " overlap tensor '" +
                                 (previous ? *previous : std::string()) + "' (which ends at " +
                                 std::to_string(cursor) + ")");
    check(e.begin == cursor, where + ": hole in the data section: bytes " + std::to_string(cursor) + " to " +
                                 std::to_string(e.begin) + " belong to no tensor");
    cursor = e.end;
    previous = &e.info.name;
  }
  check(cursor == data_size, path + ": " + std::to_string(data_size - cursor) +
                                 " trailing bytes after the last tensor (data section " +
                                 std::to_string(data_size) + " bytes, tensors cover " + std::to_string(cursor) + ")");
}

// Closes a file descriptor on every path out of a scope.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::make_unique<std::string>(std::move(path))) {
  const std::string& p = *path_;
  FdGuard file{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
  check(file.fd >= 0, p + ": cannot open (" + errno_text() + ")");
  struct stat st {};
  check(::fstat(file.fd, &st) == 0, p + ": cannot stat (" + errno_text() + ")");
  check(S_ISREG(st.st_mode), p + ": not a regular file");
  size_ = size_t(st.st_size);
  check(size_ >= 8, p + ": file is " + std::to_string(size_) + " bytes, shorter than the 8-byte header length");

  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
  check(m != MAP_FAILED, p + ": mmap failed (" + errno_text() + ")");
  map_ = m;
  try {
    parse();
  } catch (...) {
    ::munmap(map_, size_);  // the destructor does not run for a throwing constructor
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  std::swap(path_, other.path_);
  std::swap(map_, other.map_);
  std::swap(size_, other.size_);
  std::swap(tensors_, other.tensors_);
  std::swap(index_, other.index_);
  std::swap(metadata_, other.metadata_);
  return *this;
}

void SafetensorsFile::parse() {
  const std::string& p = *path_;
  const auto* base = static_cast<const std::byte*>(map_);
  const uint64_t n = read_le64(base);
  check(n <= kMaxHeaderBytes, p + ": header length " + std::to_string(n) + " exceeds the 100 MB cap");
  check(n <= size_ - 8, p + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                            std::to_string(size_) + " bytes)");
  const json header = parse_json_object(std::string_view(reinterpret_cast<const char*>(base + 8), n), p + ": header");

  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") metadata_ = parse_metadata(value, p);
    else entries.push_back(parse_entry(key, value, p));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.info.name) < std::tie(b.begin, b.end, b.info.name);
  });
  const uint64_t data_size = size_ - 8 - n;
  check_layout(entries, data_size, p);

  const std::byte* data = base + 8 + n;
  tensors_.reserve(entries.size());
  for (Entry& e : entries) {
    e.info.data = data + e.begin;
    e.info.file = path_.get();
    index_.emplace(e.info.name, tensors_.size());
    tensors_.push_back(std::move(e.info));
  }
}

const TensorInfo& SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  check(it != index_.end(), path() + ": no tensor '" + name + "'");
  return tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = 100'000'000;

std::string read_small_file(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  check(!ec, path + ": cannot read (" + ec.message() + ")");
  check(size <= kMaxIndexBytes, path + ": larger than 100 MB");
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  check(!in.bad(), path + ": read failed");
  return text.str();
}

// A shard name from an index must stay inside the checkpoint directory.
void check_shard_name(const std::string& shard, const std::string& index_path) {
  const fs::path p(shard);
  bool ok = !shard.empty() && p.is_relative();
  for (const fs::path& part : p) ok = ok && part != "..";
  check(ok, index_path + ": shard name '" + shard + "' is not a file name inside the checkpoint directory");
}

bool is_float(StDType t) { return t == StDType::F32 || t == StDType::F16 || t == StDType::BF16; }

void copy_to_f32(const TensorInfo& t, float* out) {
  check(is_float(t.dtype), *t.file + ": tensor '" + t.name + "' has dtype " + st_dtype_name(t.dtype) +
                               ", not a float type (F32, F16 or BF16)");
  const size_t n = size_t(t.numel());
  if (n == 0) return;  // `out` of an empty Tensor is null, and memcpy(nullptr, p, 0) is undefined
  if (t.dtype == StDType::F32) {
    std::memcpy(out, t.data, n * sizeof(float));
  } else if (t.dtype == StDType::BF16) {
#pragma omp parallel for schedule(static) if (n > (1u << 16))
    for (size_t i = 0; i < n; ++i) {
      bf16 v;  // memcpy: the mapped data need not be 2-byte aligned
      std::memcpy(&v.bits, t.data + 2 * i, 2);
      out[i] = bf16_to_f32(v);
    }
  } else {
#pragma omp parallel for schedule(static) if (n > (1u << 16))
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
  }
}

}  // namespace

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path index = fs::path(path) / kIndexName;
    const fs::path single = fs::path(path) / kSingleName;
    if (fs::exists(index, ec)) open_index(index.string(), path);
    else if (fs::exists(single, ec)) add_file(single.string());
    else throw Error("checkpoint " + path + ": neither " + kIndexName + " nor " + kSingleName + " found");
  } else {
    check(fs::exists(path, ec), "checkpoint " + path + ": no such file or directory");
    add_file(path);
  }
}

void Checkpoint::open_index(const std::string& index_path, const std::string& dir) {
  const json index = parse_json_object(read_small_file(index_path), index_path);
  auto wm = index.find("weight_map");
  check(wm != index.end() && wm->is_object(), index_path + ": no 'weight_map' object");

  // Shard -> the tensors the index places there; std::map: shards open in name order.
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : wm->items()) {
    check(shard.is_string(), index_path + ": weight_map entry for '" + name + "' is not a string");
    const std::string& file = shard.get_ref<const std::string&>();
    check_shard_name(file, index_path);
    by_shard[file].push_back(name);
  }
  for (const auto& [shard, names] : by_shard) {
    const fs::path shard_path = fs::path(dir) / shard;
    std::error_code ec;
    check(fs::is_regular_file(shard_path, ec), index_path + ": shard '" + shard + "' (holding '" + names.front() +
                                                   "') is missing: " + shard_path.string());
    add_file(shard_path.string());
    const SafetensorsFile& file = *files_.back();
    for (const std::string& name : names) {
      check(skipped_name(name) || file.has(name),
            index_path + ": tensor '" + name + "' is listed in shard '" + shard + "' but that file does not contain it");
    }
  }
}

void Checkpoint::add_file(const std::string& file_path) {
  files_.push_back(std::make_unique<SafetensorsFile>(file_path));
  for (const TensorInfo& t : files_.back()->tensors()) {
    if (skipped_name(t.name)) continue;
    auto [it, inserted] = index_.emplace(t.name, &t);
    check(inserted, "checkpoint " + path_ + ": tensor '" + t.name + "' is in both " + *it->second->file + " and " +
                        file_path);
  }
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  auto it = index_.find(name);
  check(it != index_.end(), "checkpoint " + path_ + ": missing tensor " + name);
  return *it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, info] : index_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

Tensor Checkpoint::load_f32(const std::string& name, const Shape& expected_shape) const {
  const TensorInfo& t = get(name);
  check(t.shape == expected_shape, *t.file + ": tensor '" + name + "': expected shape " + shape_str(expected_shape) +
                                       ", file has " + shape_str(t.shape));
  Tensor out(t.shape);
  copy_to_f32(t, out.f32());
  return out;
}

std::vector<std::string> Checkpoint::unexpected(const std::set<std::string>& expected) const {
  std::vector<std::string> out;
  for (const auto& [name, info] : index_)
    if (!expected.count(name)) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// Writes a file as `path.tmp`, then fsyncs and renames it over `path` in commit(); an
// uncommitted temp file is removed. Every failure names `path`.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    check(fd_ >= 0, path_ + ": cannot create " + tmp_ + " (" + errno_text() + ")");
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t done = ::write(fd_, p, bytes);
      if (done < 0 && errno == EINTR) continue;
      check(done > 0, path_ + ": write failed (" + errno_text() + ")");
      p += done;
      bytes -= size_t(done);
    }
  }

  void commit() {
    check(::fsync(fd_) == 0, path_ + ": fsync failed (" + errno_text() + ")");
    const int rc = ::close(fd_);
    fd_ = -1;
    check(rc == 0, path_ + ": close failed (" + errno_text() + ")");
    check(std::rename(tmp_.c_str(), path_.c_str()) == 0, path_ + ": cannot rename " + tmp_ + " (" + errno_text() + ")");
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Bytes of one tensor to write, checked: dims non-negative, no overflow, data present.
uint64_t checked_bytes(const NamedTensor& t, const std::string& path) {
  const std::string where = path + ": tensor '" + t.name + "'";
  uint64_t total = st_dtype_size(t.dtype);
  for (int64_t d : t.shape) {
    check(d >= 0, where + ": negative dimension in shape " + shape_str(t.shape));
    check(!__builtin_mul_overflow(total, uint64_t(d), &total), where + ": shape " + shape_str(t.shape) + " overflows");
  }
  check(t.data != nullptr || total == 0, where + ": no data");
  return total;
}

void check_unique_names(const std::vector<NamedTensor>& tensors, const std::string& path) {
  std::set<std::string> seen;
  for (const NamedTensor& t : tensors) {
    check(t.name != "__metadata__", path + ": '__metadata__' is reserved, not a tensor name");
    check(seen.insert(t.name).second, path + ": duplicate tensor name '" + t.name + "'");
  }
}

// The JSON header, `__metadata__` first and tensors in layout order, padded with spaces so that
// 8 + its length is a multiple of 8 (the data section then starts 8-byte aligned).
std::string make_header(const std::vector<NamedTensor>& tensors, const std::vector<uint64_t>& bytes,
                        const std::map<std::string, std::string>& metadata, const std::string& path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    header[tensors[i].name] = {{"dtype", st_dtype_name(tensors[i].dtype)},
                               {"shape", tensors[i].shape},
                               {"data_offsets", {offset, offset + bytes[i]}}};
    offset += bytes[i];
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(path + ": cannot encode header (" + short_json_message(e) + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

bool is_shard_name(const std::string& s) {
  static const std::string pattern = "model-#####-of-#####.safetensors";  // # = a digit
  if (s.size() != pattern.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool ok = pattern[i] == '#' ? std::isdigit(static_cast<unsigned char>(s[i])) != 0 : s[i] == pattern[i];
    if (!ok) return false;
  }
  return true;
}

// Greedy packing in order, as transformers does: a new shard starts when the next tensor would
// push the current one past the limit.
std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& bytes, uint64_t max_bytes) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t current = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!shards.back().empty() && current + bytes[i] > max_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes[i];
  }
  return shards;
}

void write_index(const std::string& path, const std::vector<NamedTensor>& tensors,
                 const std::vector<std::vector<size_t>>& shards, const std::vector<std::string>& files,
                 uint64_t total_bytes) {
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s)
    for (size_t i : shards[s]) weight_map[tensors[i].name] = files[s];
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  std::string text;
  try {
    text = index.dump(2) + "\n";
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(path + ": cannot encode index (" + short_json_message(e) + ")");
  }
  AtomicFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

// Removes what an earlier save left that this one does not use: other shards, and the index or
// the single file (transformers prefers model.safetensors over an index when both exist).
void remove_stale(const std::string& dir, const std::vector<std::string>& written) {
  const std::set<std::string> keep(written.begin(), written.end());
  const bool sharded = keep.count(kIndexName) != 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = is_shard_name(name) || name == (sharded ? kSingleName : kIndexName);
    if (ours && !keep.count(name)) {
      std::error_code rm;
      fs::remove(e.path(), rm);
      check(!rm, dir + ": cannot remove stale " + name + " (" + rm.message() + ")");
    }
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_unique_names(tensors, path);
  std::vector<uint64_t> bytes;
  for (const NamedTensor& t : tensors) bytes.push_back(checked_bytes(t, path));
  const std::string header = make_header(tensors, bytes, metadata, path);

  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  AtomicFile out(path);
  out.write(length, 8);
  out.write(header.data(), header.size());
  for (size_t i = 0; i < tensors.size(); ++i) out.write(tensors[i].data, bytes[i]);
  out.commit();
}

std::vector<std::string> write_sharded(const std::string& dir, const std::vector<NamedTensor>& tensors,
                                       size_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  check(max_shard_bytes > 0, dir + ": max_shard_bytes must be positive");
  check_unique_names(tensors, dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, dir + ": cannot create directory (" + ec.message() + ")");

  std::vector<uint64_t> bytes;
  uint64_t total = 0;
  for (const NamedTensor& t : tensors) {
    bytes.push_back(checked_bytes(t, dir));
    total += bytes.back();
  }
  const std::vector<std::vector<size_t>> shards = plan_shards(bytes, max_shard_bytes);

  std::vector<std::string> files;
  for (size_t s = 0; s < shards.size(); ++s)
    files.push_back(shards.size() == 1 ? std::string(kSingleName) : shard_name(s, shards.size()));
  for (size_t s = 0; s < shards.size(); ++s) {
    std::vector<NamedTensor> part;
    for (size_t i : shards[s]) part.push_back(tensors[i]);
    write_safetensors((fs::path(dir) / files[s]).string(), part, metadata);
  }
  std::vector<std::string> written = files;
  if (shards.size() > 1) {
    write_index((fs::path(dir) / kIndexName).string(), tensors, shards, files, total);
    written.push_back(kIndexName);
  }
  remove_stale(dir, written);
  return written;
}

}  // namespace moge::model
