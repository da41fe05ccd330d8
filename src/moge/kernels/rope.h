#pragma once
// Rotary position embedding in the rotate-half (NeoX) layout over the whole head:
//   for i < hd/2, angle = pos · theta^(-2i/hd):
//   out[i] = x[i] cos − x[i + hd/2] sin,  out[i + hd/2] = x[i + hd/2] cos + x[i] sin.
#include <cstdint>

namespace moge::kernels {

// x: [tokens, heads, head_dim], row t at position first_position + t; rotated in place.
void rope_apply(float* x, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta);

// The gradient of rope_apply: a rotation's Jacobian is the rotation itself, so dL/dx is dL/dout
// rotated back by the same angles (the inverse rotation). dx: [tokens, heads, head_dim] holds
// dL/dout on entry and dL/dx on return.
void rope_backward(float* dx, int64_t tokens, int heads, int head_dim, int64_t first_position, double theta);

}  // namespace moge::kernels
