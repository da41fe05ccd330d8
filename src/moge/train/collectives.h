#pragma once
// What distributed training needs from a communicator: sums for data parallelism, and the
// gathers and reduce-scatters of expert parallelism. The tools use it over a parallel::Comm (MPI
// ranks or in-process devices) through CollectivesOver below; train does not depend on parallel.
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

// Collectives over any communicator with these calls under parallel::Comm's names (a template,
// so that train names no other module): CollectivesOver<parallel::Comm> is the tools' and
// tests' glue.
template <class Comm>
class CollectivesOver : public Collectives {
 public:
  explicit CollectivesOver(Comm& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void allreduce_sum(float* data, int64_t n) override { comm_.all_reduce_sum(data, n); }
  void allreduce_sum(double* data, int64_t n) override { comm_.all_reduce_sum(data, n); }
  void all_gather(const float* send, int64_t n, float* recv) override { comm_.all_gather(send, n, recv); }
  void all_gather(const int32_t* send, int64_t n, int32_t* recv) override { comm_.all_gather(send, n, recv); }
  void reduce_scatter_sum(const float* send, float* recv, int64_t n) override {
    comm_.reduce_scatter_sum(send, recv, n);
  }

 private:
  Comm& comm_;
};

}  // namespace moge::train
