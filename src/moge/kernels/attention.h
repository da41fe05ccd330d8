#pragma once
// Causal grouped-query attention of new queries against a KV cache.
#include <cstdint>

namespace moge::kernels {

struct AttentionShape {
  int heads;     // query heads H
  int kv_heads;  // KV heads; query head h reads kv head h / (H / kv_heads)
  int head_dim;
};

// q: [tokens, H, hd] at positions first_position .. first_position + tokens - 1.
// k, v: [first_position + tokens, kv_heads, hd] (the cache, already holding these tokens).
// out: [tokens, H, hd]. Scale 1/sqrt(hd); query t sees keys 0 .. first_position + t.
void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t tokens,
                       int64_t first_position, const AttentionShape& shape);

}  // namespace moge::kernels
