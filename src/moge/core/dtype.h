#pragma once
// Element types and the bf16 <-> f32 conversions every module shares.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

namespace moge {

enum class DType { f32, bf16 };

inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "f32" : "bf16"; }
DType parse_dtype(const std::string& name);  // throws Error naming the bad value

// bfloat16: the top 16 bits of an IEEE f32. Stored as raw bits.
struct bf16 {
  uint16_t bits;
};

inline float bf16_to_f32(bf16 v) { return std::bit_cast<float>(uint32_t(v.bits) << 16); }

// Round to nearest, ties to even; NaN stays NaN (quiet).
inline bf16 f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

void f32_to_bf16(const float* src, bf16* dst, size_t n);
void bf16_to_f32(const bf16* src, float* dst, size_t n);

}  // namespace moge
