#include "moge/train/schedule.h"

#include <cmath>
#include <numbers>
#include <string>

#include "moge/core/error.h"

namespace moge::train {

LrSchedule::LrSchedule(const ScheduleConfig& c) : config_(c) {
  auto num = [](double v) { return std::to_string(v); };
  check(std::isfinite(c.max_lr) && c.max_lr >= 0, "schedule: max_lr must be finite and >= 0, got " + num(c.max_lr));
  check(std::isfinite(c.min_lr) && c.min_lr >= 0, "schedule: min_lr must be finite and >= 0, got " + num(c.min_lr));
  check(c.min_lr <= c.max_lr, "schedule: min_lr (" + num(c.min_lr) + ") must be <= max_lr (" + num(c.max_lr) + ")");
  check(c.total >= 1, "schedule: total must be >= 1, got " + std::to_string(c.total));
  check(c.warmup >= 0, "schedule: warmup must be >= 0, got " + std::to_string(c.warmup));
  check(c.warmup <= c.total,
        "schedule: warmup (" + std::to_string(c.warmup) + ") must be <= total (" + std::to_string(c.total) + ")");
}

double LrSchedule::at(int64_t step) const {
  check(step >= 0, "schedule: step must be >= 0, got " + std::to_string(step));
  const ScheduleConfig& c = config_;
  if (step < c.warmup) return c.max_lr * double(step + 1) / double(c.warmup);
  // warmup == total leaves no decay phase: the branch below is never reached with a zero span.
  if (step >= c.total) return c.min_lr;
  const double progress = double(step - c.warmup) / double(c.total - c.warmup);
  return c.min_lr + 0.5 * (c.max_lr - c.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace moge::train
