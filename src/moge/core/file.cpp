#include "moge/core/file.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "moge/core/error.h"

namespace moge {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  check(!in.bad(), path + ": read failed");
  return text.str();
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    check(bool(out), path + ": cannot open for writing");
    out << text;
    check(bool(out), path + ": write failed");
  }
  check(std::rename(tmp.c_str(), path.c_str()) == 0, path + ": cannot rename " + tmp);
}

}  // namespace moge
