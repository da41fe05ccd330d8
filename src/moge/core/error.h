#pragma once
// moge::Error: the one exception type for bad input at the edges (files, configs, flags,
// requests). Its message names the file or field at fault; `moge` prints it on one line.
#include <stdexcept>
#include <string>

namespace moge {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws Error(message) when `ok` is false. For edge validation, not for hot loops.
inline void check(bool ok, const std::string& message) {
  if (!ok) throw Error(message);
}

}  // namespace moge
