#pragma once
// A one-line progress bar on stderr for jobs that run longer than a few seconds:
//   convert [#########...........]  45/120 tensors  1.2 GB  3.4 s  (extra)
// Redrawn at most ten times a second (and always at the end); silent when stderr is not a
// terminal, except for the final line, so logs stay readable.
#include <chrono>
#include <cstdint>
#include <string>

namespace moge {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit);
  // Sets the done count (and an optional trailing text) and redraws if due.
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");  // final line with a newline
  double seconds() const;

 private:
  void draw(const std::string& extra, bool final_line);

  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace moge
