#pragma once
// Tensor: a contiguous, row-major array of one dtype with a shape. No autograd, no strides:
// layers own their forward/backward and pass plain pointers to the kernels. Usually it owns its
// memory; Tensor::view wraps memory someone else owns (a memory-mapped checkpoint), which must
// outlive it and may be read-only.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "moge/core/buffer.h"
#include "moge/core/dtype.h"

namespace moge {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[64, 2048]"
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype = DType::f32);  // zero-filled
  static Tensor view(const void* data, Shape shape, DType dtype);
  bool is_view() const { return data_ != nullptr && buffer_.data() == nullptr; }

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return int(shape_.size()); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  bool empty() const { return numel_ == 0; }
  size_t bytes() const { return size_t(numel_) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  float* f32();
  const float* f32() const;
  bf16* bf16_data();
  const bf16* bf16_data() const;

  void fill(float value);  // f32 only
  Tensor to(DType dtype) const;  // converted copy

 private:
  Shape shape_;
  DType dtype_ = DType::f32;
  int64_t numel_ = 0;
  AlignedBuffer buffer_;
  std::byte* data_ = nullptr;  // buffer_.data(), or the viewed memory
};

}  // namespace moge
