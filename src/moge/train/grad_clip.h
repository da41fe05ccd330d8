#pragma once
// Gradient clipping by global L2 norm, with torch.nn.utils.clip_grad_norm_'s semantics: the norm
// is taken over all gradients as one vector, and when max_norm / (norm + 1e-6) < 1 every gradient
// is multiplied by that coefficient.
//
// The norm is accumulated in double over fixed chunks of each array, and the chunks' partial sums
// are added in order: the result is bitwise the same for any OpenMP thread count.
#include <span>
#include <vector>

namespace moge::train {

// sqrt(sum over all arrays of sum g²).
double grad_norm(std::span<const std::span<const float>> grads);
double grad_norm(std::span<const std::span<float>> grads);
// sum over all arrays of sum g² (the pieces of a norm over gradients that several processes hold).
double sum_of_squares(std::span<const std::span<const float>> grads);
double sum_of_squares(std::span<const std::span<float>> grads);


// Scales the gradients in place as described above and returns the norm before clipping. A
// non-finite norm (inf/NaN gradients) is returned with the gradients left as they are, so the
// caller can skip the step (torch would scale them by NaN). Throws moge::Error when max_norm is not
// finite and > 0.
double clip_grad_norm(std::span<const std::span<float>> grads, double max_norm);
// The same with the norm given (a norm over gradients that several processes hold).
void clip_to_norm(std::span<const std::span<float>> grads, double norm, double max_norm);
// The factor clip_to_norm() multiplies the gradients by: float(max_norm / (norm + 1e-6)) when that
// is below 1, else 1 (also for a non-finite norm). For AdamW::step(lr, grad_scale), which applies
// it on the fly instead of in a pass of its own.
float clip_coefficient(double norm, double max_norm);

}  // namespace moge::train
