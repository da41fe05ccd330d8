#pragma once
// The learning-rate schedule: linear warmup, then cosine decay (as nanoGPT and most LLM
// pre-training recipes). With 0-based step s:
//
//   s <  warmup            lr = max_lr * (s + 1) / warmup            (reaches max_lr at s = warmup - 1)
//   warmup <= s < total    lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2
//   s >= total             lr = min_lr
//
// Learning rates are double, as torch's (Python floats), so a reference computing the same formula
// gets the same values.
#include <cstdint>

namespace moge::train {

struct ScheduleConfig {
  double max_lr = 0;
  double min_lr = 0;
  int64_t warmup = 0;  // steps of linear warmup (0: start at max_lr)
  int64_t total = 0;   // the step at which the cosine reaches min_lr
};

class LrSchedule {
 public:
  // Throws moge::Error naming the field: max_lr, min_lr finite and >= 0, min_lr <= max_lr,
  // total >= 1, 0 <= warmup <= total.
  explicit LrSchedule(const ScheduleConfig& config);

  double at(int64_t step) const;  // throws moge::Error when step < 0
  const ScheduleConfig& config() const { return config_; }

 private:
  ScheduleConfig config_;
};

}  // namespace moge::train
