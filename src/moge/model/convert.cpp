#include "moge/model/convert.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/progress.h"
#include "moge/kernels/quant.h"
#include "moge/model/config.h"
#include "moge/model/safetensors.h"

namespace moge::model {

namespace fs = std::filesystem;
using kernels::WeightFormat;

namespace {

// The bytes of one converted tensor, owned until the shards are written.
struct Blob {
  std::string name;
  StDType dtype;
  Shape shape;
  AlignedBuffer data;
};

Blob blob(std::string name, StDType dtype, Shape shape, const void* src, size_t bytes) {
  Blob b{std::move(name), dtype, std::move(shape), AlignedBuffer(bytes)};
  if (bytes) std::memcpy(b.data.data(), src, bytes);
  return b;
}

// Appends NAME (f32 values `w` [out, in]) in `format`; returns the format actually written.
WeightFormat add_gemm_weight(std::vector<Blob>& out, const std::string& name, const Tensor& w, WeightFormat format) {
  const int64_t rows = w.dim(0), cols = w.dim(1);
  const std::string base = name.substr(0, name.size() - std::string(".weight").size());
  format = kernels::format_for_width(format, cols);
  switch (format) {
    case WeightFormat::f32:
      out.push_back(blob(name, StDType::F32, {rows, cols}, w.raw(), size_t(rows * cols) * 4));
      break;
    case WeightFormat::bf16: {
      Tensor b = w.to(DType::bf16);
      out.push_back(blob(name, StDType::BF16, {rows, cols}, b.raw(), size_t(rows * cols) * 2));
      break;
    }
    case WeightFormat::q8: {
      kernels::Q8Weight q = kernels::quantize_q8(w.f32(), rows, cols);
      out.push_back(blob(name, StDType::I8, {rows, cols}, q.q.data(), q.q.size()));
      out.push_back(blob(base + ".weight_scale", StDType::F32, {rows}, q.scale.data(), q.scale.size()));
      break;
    }
    case WeightFormat::q4: {
      kernels::Q4Weight q = kernels::quantize_q4(w.f32(), rows, cols);
      out.push_back(blob(name, StDType::U8, {rows, cols / 2}, q.qs.data(), q.qs.size()));
      out.push_back(blob(base + ".weight_scale", StDType::F16, {rows, cols / 32}, q.scale.data(), q.scale.size()));
      break;
    }
  }
  return format;
}

void write_config(const std::string& in_dir, const std::string& out_dir, WeightFormat format) {
  const std::string path = in_dir + "/config.json";
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(read_text_file(path), nullptr, false);
  check(!cfg.is_discarded() && cfg.is_object(), path + ": not a JSON object");
  cfg["torch_dtype"] = format == WeightFormat::f32 ? "float32" : "bfloat16";
  cfg.erase("quantization_config");
  if (format == WeightFormat::q8 || format == WeightFormat::q4) {
    cfg["quantization_config"] = {
        {"quant_method", "moge"},
        {"weights", format == WeightFormat::q8 ? "int8" : "int4"},
        {"weight_layout", format == WeightFormat::q8 ? "I8 [out, in] + F32 weight_scale [out] (per output channel)"
                                                     : "U8 [out, in/2] + F16 weight_scale [out, in/32] (blocks of 32)"},
        {"group_size", format == WeightFormat::q8 ? 0 : 32},
        {"activations", "int8, per token, dynamic"},
        {"not_quantized", "embed_tokens (bf16), norms, biases, mlp.gate, router_scale (f32)"}};
  }
  write_file_atomically(out_dir + "/config.json", cfg.dump(2) + "\n");
}

// Tokenizer and generation files: everything but weights, the config and training state.
void copy_side_files(const std::string& in_dir, const std::string& out_dir) {
  for (const auto& e : fs::directory_iterator(in_dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name == "config.json" || name == "model.safetensors.index.json" ||
        name == "trainer_state.json" || e.path().extension() == ".safetensors" || name.ends_with(".tmp"))
      continue;
    std::error_code ec;
    fs::copy_file(e.path(), fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    check(!ec, out_dir + "/" + name + ": cannot copy (" + ec.message() + ")");
  }
}

}  // namespace

bool is_gemm_weight(const std::string& name) {
  if (!name.ends_with(".weight")) return false;
  if (name == "lm_head.weight") return true;
  const bool attention = name.find(".self_attn.") != std::string::npos && name.ends_with("_proj.weight");
  const bool expert = name.find(".mlp.experts.") != std::string::npos || name.find(".mlp.shared_expert.") != std::string::npos;
  return attention || expert;
}

ConvertStats convert_checkpoint(const std::string& in_dir, const std::string& out_dir, WeightFormat format,
                                size_t shard_bytes) {
  std::error_code ec;
  check(!fs::exists(out_dir, ec) || !fs::equivalent(in_dir, out_dir, ec),
        out_dir + ": the output directory must differ from the input");
  const ModelConfig cfg = ModelConfig::from_file(in_dir + "/config.json");
  Checkpoint ckpt(in_dir);
  for (const std::string& name : ckpt.names())
    check(!name.ends_with(".weight_scale"), ckpt.path() + ": tensor '" + name +
                                                 "': the checkpoint is already quantized; convert from a float one");

  std::vector<const TensorInfo*> order;  // file order, shard by shard
  for (const auto& file : ckpt.files())
    for (const TensorInfo& t : file->tensors()) order.push_back(&t);
  const bool quantize = format == WeightFormat::q8 || format == WeightFormat::q4;
  const bool tied_lm_head = cfg.tie_word_embeddings && !ckpt.has("lm_head.weight") && quantize;

  ConvertStats stats;
  std::vector<Blob> blobs;
  Progress progress(std::string("convert ") + kernels::weight_format_name(format), int64_t(order.size()), "tensors");
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorInfo& t = *order[i];
    stats.in_bytes += t.bytes;
    Tensor w = ckpt.load_f32(t.name, t.shape);
    if (is_gemm_weight(t.name)) {
      check(t.shape.size() == 2, *t.file + ": tensor '" + t.name + "' is a weight matrix but has shape " + shape_str(t.shape));
      const WeightFormat written = add_gemm_weight(blobs, t.name, w, format);
      stats.quantized += written == format;
      stats.int8_fallback += written != format;
    } else if (t.name == "model.embed_tokens.weight" && format != WeightFormat::f32) {
      if (tied_lm_head) add_gemm_weight(blobs, "lm_head.weight", w, format), ++stats.quantized;
      Tensor b = w.to(DType::bf16);
      blobs.push_back(blob(t.name, StDType::BF16, t.shape, b.raw(), size_t(b.numel()) * 2));
    } else {
      blobs.push_back(blob(t.name, StDType::F32, t.shape, w.raw(), size_t(w.numel()) * 4));
    }
    progress.update(int64_t(i + 1), t.name);
  }
  std::vector<NamedTensor> tensors;
  for (const Blob& b : blobs) {
    tensors.push_back({b.name, b.dtype, b.shape, b.data.data()});
    stats.out_bytes += b.data.size();
  }
  stats.tensors = int64_t(tensors.size());
  progress.finish("writing " + out_dir);
  fs::create_directories(out_dir, ec);
  check(!ec, out_dir + ": cannot create directory (" + ec.message() + ")");
  write_sharded(out_dir, tensors, shard_bytes, {{"format", "pt"}, {"moge_weights", kernels::weight_format_name(format)}});
  write_config(in_dir, out_dir, format);
  copy_side_files(in_dir, out_dir);
  return stats;
}

}  // namespace moge::model
