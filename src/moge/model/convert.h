#pragma once
// Checkpoint conversion (`moge convert`): a float checkpoint (F32/F16/BF16) of the Pangu Pro MoE
// layout re-written with its GEMM weights in bf16, int8 or int4. Layout of the result
// (docs/quantization.md):
//   - GEMM weights (attention q/k/v/o, every routed and shared expert projection, lm_head):
//       bf16:  NAME.weight BF16 [out, in]
//       int8:  NAME.weight I8 [out, in] + NAME.weight_scale F32 [out]          (Q8 of quant.h)
//       int4:  NAME.weight U8 [out, in/2] + NAME.weight_scale F16 [out, in/32] (Q4 of quant.h);
//              a weight whose `in` is not a multiple of 32 is written int8 instead
//   - the embedding table BF16 (a lookup, not a GEMM); for a tied model quantized to int8/int4
//     lm_head.weight is written quantized explicitly;
//   - everything else (norms, biases, router gate, router_scale) F32: MOGE.md keeps them exact;
//   - config.json gets "torch_dtype" and, when quantized, a "quantization_config";
//   - the tokenizer and generation files are copied.
#include <cstdint>
#include <string>

#include "moge/kernels/weight.h"

namespace moge::model {

struct ConvertStats {
  int64_t tensors = 0;        // written
  int64_t quantized = 0;      // GEMM weights in the target format
  int64_t int8_fallback = 0;  // int4 requested, `in` % 32 != 0: written int8
  uint64_t in_bytes = 0, out_bytes = 0;
};

// True for the tensors the engine runs GEMMs on (what conversion may quantize).
bool is_gemm_weight(const std::string& name);

// Converts IN (a directory: config.json + safetensors) into OUT (created; must not be IN).
// `format` is bf16, q8 or q4 (f32 is allowed: an f32 copy). Throws Error naming the file or
// tensor at fault; IN already quantized is refused. Progress on stderr.
ConvertStats convert_checkpoint(const std::string& in_dir, const std::string& out_dir, kernels::WeightFormat format,
                                size_t shard_bytes = size_t(2) << 30);

}  // namespace moge::model
