#pragma once
// NumPy .npy files (format 1.0/2.0, little-endian, C order): the exchange format with the
// PyTorch reference scripts and `moge logits`. f32 and int32 payloads.
#include <cstdint>
#include <string>
#include <vector>

#include "moge/core/tensor.h"

namespace moge {

struct NpyArray {
  Shape shape;
  std::string descr;          // "<f4", "<i4", ...
  std::vector<float> f32;     // filled when descr is <f4 (or converted from <f8)
  std::vector<int32_t> i32;   // filled when descr is <i4 (or converted from <i8)
};

NpyArray read_npy(const std::string& path);      // throws Error naming the file
Tensor read_npy_f32(const std::string& path);    // f32 tensor, throws if not a float array
void write_npy(const std::string& path, const float* data, const Shape& shape);

}  // namespace moge
