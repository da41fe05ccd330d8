#pragma once
// Whole-file writes that never leave a half-written file behind.
#include <string>

namespace moge {

// Writes text to path through path + ".tmp" and a rename; throws Error naming the path.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace moge
