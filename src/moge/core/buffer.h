#pragma once
// AlignedBuffer: an owning, 64-byte aligned byte array (a cache line, an AVX-512 register);
// sized(): a growing scratch vector.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace moge {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, rounded);
    data_.reset(static_cast<std::byte*>(p));
  }

  // `bytes` rounded up to 2 MB and aligned to it, on fresh pages (mmap: a reused heap block
  // keeps the 4 KB pages it has) advised onto transparent huge pages (the kernel may still give
  // 4 KB ones), zero-filled by the calling thread, which so places it.
  static AlignedBuffer on_huge_pages(size_t bytes);

  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    Free() : mapped(0) {}  // (no member initializer: it would leave Free incomplete for unique_ptr)
    explicit Free(size_t bytes) : mapped(bytes) {}
    void operator()(std::byte* p) const;
    size_t mapped;  // on_huge_pages: the bytes to unmap; 0: aligned_alloc's
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t size_ = 0;
};

// Scratch reused across calls: v grown to at least n elements (never shrunk, so repeated steps
// neither allocate nor fault in fresh pages); returns its data.
template <class T>
T* sized(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace moge
