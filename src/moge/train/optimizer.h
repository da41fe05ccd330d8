#pragma once
// AdamW over f32 master weights, computing exactly what torch.optim.AdamW (torch 1.13,
// foreach=False, amsgrad=False) computes, in the same order of f32 operations:
//
//   t += 1
//   p *= 1 - lr * weight_decay                        (decoupled decay; only parameters with decay)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   p += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// Scalars (the coefficients, bias corrections and step size) are computed in double, as Python
// does, and rounded to f32 once, as torch does when it applies them to an f32 tensor. Hence the
// hyperparameters are double: 0.95 and 0.95f differ in the 8th digit.
//
// The optimizer does not own parameters or gradients: add() registers pointers that must stay
// valid. Its state (the two moments per parameter and the step count) can be saved to and restored
// from a safetensors file for an exact resume:
//
//   auto tensors = opt.state_tensors();                         // "NAME.exp_avg", "NAME.exp_avg_sq"
//   model::write_safetensors(path, tensors, {{"step", std::to_string(opt.step_count())}});
//   ...
//   model::SafetensorsFile file(path);
//   opt.load_state(file, std::stoll(file.metadata().at("step")));
#include <cstdint>
#include <string>
#include <vector>

#include "moge/model/safetensors.h"

namespace moge::train {

struct AdamWConfig {
  double lr = 1e-3;  // used by step() without an argument
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  // Throws moge::Error naming the field: lr >= 0, beta1 and beta2 in [0, 1), eps >= 0,
  // weight_decay >= 0 (all finite).
  explicit AdamW(const AdamWConfig& config);

  // Registers param[0, n) with its gradient grad[0, n). decay = false for parameters that get no
  // weight decay (norm weights, biases, router_scale: the caller decides). Names must be unique and
  // non-empty; they name the state tensors. Moments start at zero.
  void add(std::string name, float* param, float* grad, int64_t n, bool decay);
  // The same for a shard: param[0, n) is elements [offset, offset + n) of a parameter of `total`
  // elements that several optimizers (one a device, expert parallelism) update piecewise.
  // state_tensors() still gives this shard's n elements; load_state() reads the shard out of
  // the whole parameter's state (shape [total]).
  void add_shard(std::string name, float* param, float* grad, int64_t n, bool decay, int64_t offset,
                 int64_t total);

  // One update of every registered parameter with learning rate lr (e.g. from an LrSchedule).
  // Throws moge::Error when lr is negative or not finite. grad_scale multiplies every gradient
  // element first (g * grad_scale rounded to f32, the gradients themselves left unchanged): the
  // coefficient of gradient clipping (clip_coefficient() in grad_clip.h) folded into the update,
  // bitwise what clip_to_norm() followed by step(lr) computes, in one pass over memory less.
  // zero_grads: the gradients are set to 0 once read, in the same pass (what a zero_grad() before
  // the next step would do, without its own pass over them).
  void step(double lr, float grad_scale = 1.0f, bool zero_grads = false);
  void step() { step(config_.lr); }

  int64_t step_count() const { return step_; }  // steps taken (torch's state['step'])
  const AdamWConfig& config() const { return config_; }

  // Views of the moments, in add() order: "NAME.exp_avg" and "NAME.exp_avg_sq", F32, shape [n],
  // valid until the next add() or the optimizer's destruction. Ready for model::write_safetensors.
  std::vector<model::NamedTensor> state_tensors() const;

  // Restores the moments from a file written from state_tensors(), and the step count (kept by the
  // caller, e.g. in the file's metadata). Every parameter's two tensors must be there, F32 of shape
  // [n]; a tensor named *.exp_avg or *.exp_avg_sq that belongs to no parameter is an error too
  // (a different model), while other tensors are ignored. Checks everything before changing
  // anything: on an Error the optimizer is as it was.
  void load_state(const model::SafetensorsFile& file, int64_t step_count);

 private:
  struct Param {
    std::string name;
    float* data;
    float* grad;
    int64_t n;
    bool decay;
    int64_t offset, total;  // the shard of the whole parameter (0, n when not sharded)
    std::vector<float> exp_avg, exp_avg_sq;
  };
  AdamWConfig config_;
  std::vector<Param> params_;
  int64_t step_ = 0;
};

}  // namespace moge::train
