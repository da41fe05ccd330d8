#include "moge/parallel/comm.h"

#include <string>

#include "moge/core/error.h"

namespace moge::parallel {

int64_t element_size(Element type) {
  switch (type) {
    case Element::f32: return 4;
    case Element::f64: return 8;
    case Element::i32: return 4;
    case Element::i64: return 8;
    case Element::u8: return 1;
  }
  return 0;
}

const char* element_name(Element type) {
  switch (type) {
    case Element::f32: return "f32";
    case Element::f64: return "f64";
    case Element::i32: return "i32";
    case Element::i64: return "i64";
    case Element::u8: return "u8";
  }
  return "?";
}

std::vector<int64_t> packed_displacements(std::span<const int64_t> counts) {
  std::vector<int64_t> displs(counts.size());
  int64_t offset = 0;
  for (size_t p = 0; p < counts.size(); ++p) {
    displs[p] = offset;
    offset += counts[p];
  }
  return displs;
}

void Comm::check_count(const char* op, int64_t count) const {
  check(count >= 0, std::string("comm: ") + op + " of a negative count (" + std::to_string(count) + ")");
}

void Comm::check_root(const char* op, int root) const {
  check(root >= 0 && root < size(), std::string("comm: ") + op + " root " + std::to_string(root) +
                                        " is not one of the " + std::to_string(size()) + " ranks");
}

void Comm::check_counts(const char* op, std::span<const int64_t> counts, std::span<const int64_t> displs) const {
  const std::string where = std::string("comm: ") + op + ": ";
  check(counts.size() == size_t(size()) && displs.size() == size_t(size()),
        where + "counts and displacements need one entry per rank (" + std::to_string(size()) + "), got " +
            std::to_string(counts.size()) + " and " + std::to_string(displs.size()));
  for (int p = 0; p < size(); ++p) {
    if (counts[p] < 0 || displs[p] < 0)
      throw Error(where + "rank " + std::to_string(p) + " has a negative count or displacement (" +
                  std::to_string(counts[p]) + ", " + std::to_string(displs[p]) + ")");
  }
}

}  // namespace moge::parallel
