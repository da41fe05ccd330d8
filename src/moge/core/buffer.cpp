#include "moge/core/buffer.h"

#include <sys/mman.h>

#include <cstdint>

namespace moge {

AlignedBuffer AlignedBuffer::on_huge_pages(size_t bytes) {
  constexpr size_t kHugePage = size_t(2) << 20;
  AlignedBuffer b;
  b.size_ = bytes;
  if (bytes == 0) return b;
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* mapped = mmap(nullptr, rounded + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  // Keep the 2 MB-aligned `rounded` bytes inside the mapping; unmap the rest.
  auto* start = static_cast<std::byte*>(mapped);
  const size_t head = (kHugePage - reinterpret_cast<uintptr_t>(start) % kHugePage) % kHugePage;
  if (head > 0) munmap(start, head);
  munmap(start + head + rounded, kHugePage - head);
  std::byte* p = start + head;
  madvise(p, rounded, MADV_HUGEPAGE);  // advice: refused, the pages are 4 KB ones
  std::memset(p, 0, rounded);
  b.data_ = std::unique_ptr<std::byte, Free>(p, Free{rounded});
  return b;
}

void AlignedBuffer::Free::operator()(std::byte* p) const {
  if (mapped > 0) munmap(p, mapped);
  else std::free(p);
}

}  // namespace moge
