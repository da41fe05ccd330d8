#include "moge/kernels/weight.h"

#include <cstring>

#include "moge/core/error.h"

namespace moge::kernels {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::q8: return "int8";
    case WeightFormat::q4: return "int4";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32") return WeightFormat::f32;
  if (name == "bf16") return WeightFormat::bf16;
  if (name == "int8") return WeightFormat::q8;
  if (name == "int4") return WeightFormat::q4;
  throw Error("weight type '" + name + "' is not one of f32, bf16, int8, int4");
}

WeightFormat format_for_width(WeightFormat format, int64_t in) {
  return format == WeightFormat::q4 && in % 32 != 0 ? WeightFormat::q8 : format;
}

void linear(int64_t rows, const float* x, const WeightRef& w, float* y) {
  switch (w.format) {
    case WeightFormat::f32:
    case WeightFormat::bf16: {
      MatRef b = w.dense;
      b.trans = true;
      matmul(rows, w.out, w.in, MatRef::f32(x, w.in), b, y, w.out);
      return;
    }
    case WeightFormat::q8: return gemm_q8(rows, x, w.in, w.q8, y, w.out);
    case WeightFormat::q4: return gemm_q4(rows, x, w.in, w.q4, y, w.out);
  }
}

Weight Weight::dense(Tensor t) {
  check(t.rank() == 2, "a weight matrix must be 2-D, got " + shape_str(t.shape()));
  Weight w;
  w.dense_ = std::move(t);
  const bool f32 = w.dense_.dtype() == DType::f32;
  w.ref_.format = f32 ? WeightFormat::f32 : WeightFormat::bf16;
  w.ref_.out = w.dense_.dim(0);
  w.ref_.in = w.dense_.dim(1);
  w.ref_.dense = f32 ? MatRef::f32(w.dense_.f32(), w.ref_.in) : MatRef::bf16(w.dense_.bf16_data(), w.ref_.in);
  return w;
}

Weight Weight::quantized(Q8Weight q) {
  Weight w;
  w.q8_ = std::move(q);
  w.ref_ = {WeightFormat::q8, {}, w.q8_.ref(), {}, w.q8_.out, w.q8_.in};
  return w;
}

Weight Weight::quantized(Q4Weight q) {
  Weight w;
  w.q4_ = std::move(q);
  w.ref_ = {WeightFormat::q4, {}, {}, w.q4_.ref(), w.q4_.out, w.q4_.in};
  return w;
}

Weight Weight::q8_view(const int8_t* q, Tensor scale, int64_t out, int64_t in) {
  check(scale.numel() == out && scale.dtype() == DType::f32,
        "int8 weight [" + std::to_string(out) + ", " + std::to_string(in) + "]: weight_scale must hold " +
            std::to_string(out) + " f32 values, has shape " + shape_str(scale.shape()));
  Weight w;
  w.dense_ = std::move(scale);
  w.row_sum_.resize(out);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    int32_t s = 0;
    for (int64_t k = 0; k < in; ++k) s += q[o * in + k];
    w.row_sum_[o] = s;
  }
  w.ref_ = {WeightFormat::q8, {}, {q, w.dense_.f32(), w.row_sum_.data(), out, in}, {}, out, in};
  return w;
}

Weight Weight::q4_view(const uint8_t* qs, const uint16_t* scale, int64_t out, int64_t in) {
  check(in % 32 == 0, "int4 weight [" + std::to_string(out) + ", " + std::to_string(in) +
                          "]: columns must be a multiple of 32");
  Weight w;
  if (reinterpret_cast<uintptr_t>(scale) % alignof(uint16_t) != 0) {  // a file may place them anywhere
    w.q4_scale_copy_.resize(size_t(out * (in / 32)));
    std::memcpy(w.q4_scale_copy_.data(), scale, w.q4_scale_copy_.size() * sizeof(uint16_t));
    scale = w.q4_scale_copy_.data();
  }
  w.ref_ = {WeightFormat::q4, {}, {}, {qs, scale, out, in}, out, in};
  return w;
}

Weight Weight::from_f32(const Tensor& t, WeightFormat format) {
  const int64_t out = t.dim(0), in = t.dim(1);
  switch (format_for_width(format, in)) {
    case WeightFormat::f32: return dense(t.to(DType::f32));
    case WeightFormat::bf16: return dense(t.to(DType::bf16));
    case WeightFormat::q8: return quantized(quantize_q8(t.f32(), out, in));
    case WeightFormat::q4: return quantized(quantize_q4(t.f32(), out, in));
  }
  return {};
}

size_t Weight::bytes() const {
  switch (ref_.format) {
    case WeightFormat::f32: return size_t(ref_.out * ref_.in) * 4;
    case WeightFormat::bf16: return size_t(ref_.out * ref_.in) * 2;
    case WeightFormat::q8: return size_t(ref_.out * ref_.in) + size_t(ref_.out) * 4;
    case WeightFormat::q4: return size_t(ref_.out * ref_.in) / 2 + size_t(ref_.out * ref_.in / 32) * 2;
  }
  return 0;
}

}  // namespace moge::kernels
