#pragma once
// What distributed training needs from a communicator: sums for data parallelism, and the
// gathers and reduce-scatters of expert parallelism. The tools implement it over a
// parallel::Comm (MPI ranks or in-process devices); train does not depend on parallel.
// Every rank calls the same collectives in the same order with the same counts.
#include <cstdint>

namespace moge::train {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: the element-wise sum over the ranks.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  // recv (size() · n elements) holds rank p's n elements at p · n. send must not overlap recv.
  virtual void all_gather(const float* send, int64_t n, float* recv) = 0;
  virtual void all_gather(const int32_t* send, int64_t n, int32_t* recv) = 0;
  // send holds size() blocks of n elements; recv gets the sum over the ranks of block rank().
  virtual void reduce_scatter_sum(const float* send, float* recv, int64_t n) = 0;
};

}  // namespace moge::train
