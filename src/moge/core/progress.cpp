#include "moge/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "moge/core/clock.h"

namespace moge {

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

double Progress::seconds() const { return seconds_since(start_); }

void Progress::update(int64_t done, const std::string& extra) {
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  if (!tty_ || now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(extra, false);
}

void Progress::finish(const std::string& extra) {
  done_ = total_;
  draw(extra, true);
}

void Progress::draw(const std::string& extra, bool final_line) {
  constexpr int kWidth = 24;
  const double frac = total_ > 0 ? double(done_) / double(total_) : 1.0;
  std::string bar(kWidth, '.');
  for (int i = 0; i < int(frac * kWidth + 1e-9) && i < kWidth; ++i) bar[i] = '#';
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %s  %.1f s  %s%s", tty_ ? "\r\033[K" : "", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(), seconds(),
               extra.c_str(), final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace moge
