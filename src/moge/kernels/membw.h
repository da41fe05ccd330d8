#pragma once
// The machine's memory read bandwidth, STREAM-style: the roofline the decode benchmarks compare
// against, measured in the same run.
#include <cstddef>

namespace moge::kernels {

// GB/s (1e9 bytes) of a parallel read-only sum over `bytes` of memory (best of `repeats`), with
// the current OpenMP thread count.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 5);

}  // namespace moge::kernels
