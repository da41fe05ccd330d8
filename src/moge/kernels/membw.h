#pragma once
// The machine's memory read bandwidth, STREAM-style: the roofline the decode benchmarks compare
// against, measured in the same run.
#include <cstddef>

namespace moge::kernels {

// GB/s (1e9 bytes) of a parallel read-only sum over `bytes` of memory (best of `repeats`), with
// the current OpenMP thread count.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 5);

// One timed pass of that sum over n floats at p (64-byte aligned, already touched), in GB/s:
// for benchmarks that alternate it with the kernel they compare, since on a VM the bandwidth
// drifts by 2x within minutes and only measurements side by side compare like with like.
double read_bandwidth_once(const float* p, size_t n);

}  // namespace moge::kernels
