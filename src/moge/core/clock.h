#pragma once
// Seconds of wall-clock time since a steady_clock instant: timings, throughput figures,
// progress bars.
#include <chrono>

namespace moge {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace moge
