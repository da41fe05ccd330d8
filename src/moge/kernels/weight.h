#pragma once
// Weight: a matrix W [out, in] used as y = x · Wᵀ, stored dense (f32, bf16) or quantized (Q8, Q4;
// formats in quant.h), owned or viewing a memory-mapped checkpoint. linear() runs it: dense
// through oneDNN, quantized through the int8 kernels with activations quantized per row.
#include <cstdint>
#include <string>
#include <vector>

#include "moge/core/tensor.h"
#include "moge/kernels/gemv_bf16.h"
#include "moge/kernels/matmul.h"
#include "moge/kernels/quant.h"

namespace moge::kernels {

enum class WeightFormat { f32, bf16, q8, q4 };
const char* weight_format_name(WeightFormat f);
WeightFormat parse_weight_format(const std::string& name);  // f32|bf16|int8|int4; Error otherwise
// The format a weight with `in` columns gets when `format` is asked for: int4 needs in % 32 == 0
// (its blocks), other widths fall back to int8.
WeightFormat format_for_width(WeightFormat format, int64_t in);

// What a GEMM needs to know of a weight; cheap to copy.
struct WeightRef {
  WeightFormat format = WeightFormat::f32;
  MatRef dense{};  // f32/bf16, stored [out, in] (bf16 amx_tiles: amx_bf16.h's tile layout)
  Q8Ref q8{};
  Q4Ref q4{};
  int64_t out = 0, in = 0;
  bool amx_tiles = false;  // bf16 packed for amx_linear_bf16: every product runs that kernel
};

// y[rows, out] = x[rows, in] · Wᵀ (overwrites y). Quantized weights run the int8 kernels
// (quant.h), bf16 ones at up to kGemvMaxRows rows our GEMV where the CPU has AVX-512 BF16
// (gemv_bf16.h), the rest oneDNN; bf16 weights in AMX tiles run amx_linear_bf16 at any rows.
void linear(int64_t rows, const float* x, const WeightRef& w, float* y);

// Several products at once, e.g. the gate and up projections of all the experts a token chose.
// The GEMVs among them (up to kGemvMaxRows rows; quantized, or bf16 where our GEMV runs)
// are split evenly, by weight bytes, over ONE OpenMP team: at decode an expert matrix is only
// 2-4 MB, and one team for all of them also saves a fork/join per matrix. Activations shared by
// several tasks (same x, rows and format) are prepared once. The other tasks run one linear()
// each after them. Results equal linear() on each task, bit for bit.
struct LinearTask {
  const WeightRef* w;
  int64_t rows;
  const float* x;  // [rows, w->in]
  float* y;        // [rows, w->out]
};
void linear_group(const LinearTask* tasks, size_t count);

class Weight {
 public:
  Weight() = default;
  static Weight dense(Tensor t);  // f32 or bf16 [out, in], owned or a view
  static Weight quantized(Q8Weight w);
  static Weight quantized(Q4Weight w);
  // Views of stored Q8 arrays (row sums, which the file does not hold, are computed and owned).
  // scale: f32 with `out` elements (owned or a view). Q4 scales are copied when not 2-byte aligned.
  static Weight q8_view(const int8_t* q, Tensor scale, int64_t out, int64_t in);
  static Weight q4_view(const uint8_t* qs, const uint16_t* scale, int64_t out, int64_t in);
  // A view of bf16 W [out, in] packed by amx_pack_weight (amx_bf16.h) at `tiles`.
  static Weight amx_tiles_view(const bf16* tiles, int64_t out, int64_t in);
  // Converts f32 w [out, in] to format_for_width(format, in) (quantizing for q8/q4).
  static Weight from_f32(const Tensor& w, WeightFormat format);

  const WeightRef& ref() const { return ref_; }
  WeightFormat format() const { return ref_.format; }
  int64_t out() const { return ref_.out; }
  int64_t in() const { return ref_.in; }
  size_t bytes() const;  // of the stored weight (what a GEMV streams)
  bool empty() const { return ref_.out == 0; }

 private:
  WeightRef ref_;
  Tensor dense_;  // f32/bf16 weight, or the Q8 scales of a view
  Q8Weight q8_;
  Q4Weight q4_;
  std::vector<int32_t> row_sum_;
  std::vector<uint16_t> q4_scale_copy_;  // Q4 scales of a view whose stored ones are misaligned
};

}  // namespace moge::kernels
