#pragma once
// The safetensors format (https://github.com/huggingface/safetensors), read by mmap without
// copying and validated as strictly as the format's own Rust reader; and written the way its
// writer does. A file is:
//
//   8 bytes   N, little-endian u64: the length of the JSON header (at most 100 MB)
//   N bytes   UTF-8 JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
//             "data_offsets": [BEGIN, END]}, ..., "__metadata__": {"key": "value", ...}}
//             padded with spaces so that the data section starts 8-byte aligned
//   the rest  the data section: every tensor's bytes, little-endian, C order; offsets are
//             relative to its start. Tensors tile it exactly: no overlaps, no holes, no
//             trailing bytes.
//
// A Checkpoint is a Hugging Face model directory: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (tensor name -> shard file), or a path to one .safetensors file.
// Every bad file raises moge::Error with a one-line message naming the file (and the tensor or
// field at fault).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moge/core/tensor.h"

namespace moge::model {

// The element types we accept. F32/F16/BF16 are weights; I8 is quantized weights; I32/I64/U8
// appear in metadata-like tensors (positions, masks). Anything else in a file is an error.
enum class StDType { F32, F16, BF16, I8, I32, I64, U8 };

size_t st_dtype_size(StDType t);                            // bytes per element
const char* st_dtype_name(StDType t);                       // "F32", "BF16", ... as in the file
std::optional<StDType> parse_st_dtype(std::string_view s);  // nullopt when unknown

// IEEE half -> float, exact: subnormals, ±0, ±inf and NaN (payload kept) included.
float f16_to_f32(uint16_t h);

// One tensor as it sits in a mapped file: a view, valid while its SafetensorsFile lives.
struct TensorInfo {
  std::string name;
  StDType dtype = StDType::F32;
  Shape shape;
  const std::byte* data = nullptr;  // not necessarily aligned to the element size
  size_t bytes = 0;                 // == numel() * st_dtype_size(dtype), checked at open
  const std::string* file = nullptr;  // path of the file holding it (owned by that file)

  int64_t numel() const { return shape_numel(shape); }
};

// One .safetensors file, mapped read-only (MAP_PRIVATE) and validated when opened. Move-only;
// the TensorInfo pointers and views stay valid for its lifetime.
class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the Rust reader

  explicit SafetensorsFile(std::string path);  // throws Error naming the file
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return *path_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& get(const std::string& name) const;      // throws Error naming file + tensor
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file (offset) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // __metadata__
  size_t file_size() const { return size_; }

 private:
  void parse();  // header + layout validation, fills tensors_/index_/metadata_

  // The path lives on the heap so that TensorInfo::file survives moves of this object.
  std::unique_ptr<std::string> path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A model's weights across one or more files. Names ending in "rotary_emb.inv_freq" (a buffer
// some exporters save) are skipped: not listed, not found, not reported.
class Checkpoint {
 public:
  // `path`: a directory with model.safetensors.index.json (shards), or with model.safetensors,
  // or a .safetensors file. Throws Error naming the directory, index or shard at fault.
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws Error "checkpoint PATH: missing tensor NAME".
  const TensorInfo& get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // F32/F16/BF16 converted to an owning f32 Tensor. Throws Error naming the tensor when its shape
  // is not `expected_shape` ("expected shape [..], file has [..]") or its dtype is not a float.
  Tensor load_f32(const std::string& name, const Shape& expected_shape) const;
  // Present tensors that are not in `expected`, sorted: what a model loader should report.
  std::vector<std::string> unexpected(const std::set<std::string>& expected) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  void open_index(const std::string& index_path, const std::string& dir);
  void add_file(const std::string& file_path);  // opens it and indexes all its tensors

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorInfo*> index_;
};

// A tensor to write: `data` points at numel(shape) * st_dtype_size(dtype) bytes, little-endian.
struct NamedTensor {
  std::string name;
  StDType dtype = StDType::F32;
  Shape shape;
  const void* data = nullptr;
};

// Writes one file, tensors laid out in the given order, header padded with spaces to a multiple
// of 8 bytes. Written to `path + ".tmp"`, fsync'd, then renamed over `path`. Throws Error naming
// the file (or the tensor: duplicate names, negative dims, null data).
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Hugging Face sharding: tensors packed greedily in order into shards of at most
// `max_shard_bytes` of data (a larger tensor gets a shard of its own), written as
// `DIR/model-00001-of-0000N.safetensors` plus `DIR/model.safetensors.index.json`
// ({"metadata": {"total_size": BYTES}, "weight_map": {NAME: SHARD}}). A single shard is written
// as `DIR/model.safetensors` without an index, as transformers does. Files of an earlier save
// that the new one does not use (old shards, a stale index) are removed. Returns the names of
// the files written (shards, then the index if any).
std::vector<std::string> write_sharded(const std::string& dir, const std::vector<NamedTensor>& tensors,
                                       size_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata = {});

}  // namespace moge::model
