#include "moge/core/tensor.h"

#include <algorithm>
#include <cassert>

#include "moge/core/error.h"

namespace moge {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    check(d >= 0, "negative dimension in shape " + shape_str(shape));
    check(d == 0 || n <= (int64_t(1) << 48) / d, "shape " + shape_str(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

Tensor::Tensor(Shape shape, DType dtype)
    : shape_(std::move(shape)),
      dtype_(dtype),
      numel_(shape_numel(shape_)),
      buffer_(size_t(numel_) * dtype_size(dtype)),
      data_(buffer_.data()) {}

Tensor Tensor::view(const void* data, Shape shape, DType dtype) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.numel_ = shape_numel(t.shape_);
  t.data_ = static_cast<std::byte*>(const_cast<void*>(data));
  return t;
}

float* Tensor::f32() {
  assert(dtype_ == DType::f32);
  return reinterpret_cast<float*>(data_);
}
const float* Tensor::f32() const {
  assert(dtype_ == DType::f32);
  return reinterpret_cast<const float*>(data_);
}
bf16* Tensor::bf16_data() {
  assert(dtype_ == DType::bf16);
  return reinterpret_cast<bf16*>(data_);
}
const bf16* Tensor::bf16_data() const {
  assert(dtype_ == DType::bf16);
  return reinterpret_cast<const bf16*>(data_);
}

void Tensor::fill(float value) {
  float* p = f32();
  std::fill(p, p + numel_, value);
}

Tensor Tensor::to(DType dtype) const {
  Tensor out(shape_, dtype);
  if (dtype == dtype_) {
    std::copy_n(static_cast<const std::byte*>(raw()), bytes(), static_cast<std::byte*>(out.raw()));
  } else if (dtype == DType::bf16) {
    f32_to_bf16(f32(), out.bf16_data(), numel_);
  } else {
    bf16_to_f32(bf16_data(), out.f32(), numel_);
  }
  return out;
}

}  // namespace moge
