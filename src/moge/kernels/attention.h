#pragma once
// Causal grouped-query attention: of new queries against a KV cache (inference), and of a whole
// sequence against itself with its backward (training). From 16 new tokens on (prefill, training)
// it runs as tiles through kernels::matmul (S = Q·Kᵀ, softmax, P·V per query head and block of
// query rows); below, one query row at a time. Which way depends on the token count only, so the
// training forward and the inference forward of the same sequence give the same bits.
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

// Training: causal self-attention of one sequence (q: [tokens, H, hd]; k, v: [tokens, kv_heads, hd];
// out: [tokens, H, hd]), equal to attention_forward with first_position = 0. Also writes
// lse: [tokens, H], the natural log of Σ_{j ≤ t} exp(scale · q_t · k_j), which is all backward
// needs to recompute the attention probabilities (p_tj = exp(scale · q_t · k_j − lse_t)) instead
// of storing tokens² of them. A batch of sequences is one call per sequence.
void attention_forward_train(const float* q, const float* k, const float* v, float* out, float* lse, int64_t tokens,
                             const AttentionShape& shape);

// The gradients of attention_forward_train given dout = dL/dout [tokens, H, hd], from its inputs,
// its out and its lse. dq [tokens, H, hd], dk and dv [tokens, kv_heads, hd] are overwritten; dk and
// dv sum over the query heads that share a kv head. Deterministic for any thread count: every
// element is summed by one thread in a fixed order.
void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dq, float* dk, float* dv, int64_t tokens,
                        const AttentionShape& shape);

}  // namespace moge::kernels
