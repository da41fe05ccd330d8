#pragma once
// Softmax cross-entropy over a vocabulary, the loss of language-model training.
#include <cstdint>

namespace moge::kernels {

// Target value marking a row that takes no part in the loss (padding, prompt tokens).
inline constexpr int32_t kIgnoreTarget = -1;

// logits: [rows, vocab]; targets: [rows], each in [0, vocab) or kIgnoreTarget (not checked).
// Returns Σ_rows −log softmax(logits[r])[targets[r]] (ignored rows add 0), in f32 from a double
// sum over rows in row order, so the same for any thread count.
// Writes dlogits [rows, vocab] = scale · (softmax(logits[r]) − onehot(targets[r])), the gradient
// of scale · loss: pass scale = 1 / (number of counted targets) for a mean loss. Ignored rows get
// dlogits = 0. dlogits may alias logits (the logits are then overwritten by their gradient) and
// may be null (loss only, for evaluation).
float cross_entropy_forward_backward(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                     float* dlogits, float scale);

}  // namespace moge::kernels
