#pragma once
// Whole-file reads, and writes that never leave a half-written file behind.
#include <string>

namespace moge {

// The whole file as text; throws Error "PATH: cannot open" when it cannot be read.
std::string read_text_file(const std::string& path);

// Writes text to path through path + ".tmp" and a rename; throws Error naming the path.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace moge
