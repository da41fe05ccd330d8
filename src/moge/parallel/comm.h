#pragma once
// Comm: the collectives that expert parallelism and data parallelism need, over a fixed group of
// ranks (devices). Two back ends implement it: local (in-process devices, local_comm.h) and mpi
// (one process a rank, mpi_comm.h). Every rank of the group must call the same collectives in
// the same order with matching arguments (as in MPI).
//
// Elements: float, double, int32_t, int64_t and uint8_t (bytes); the sums take the first four.
// Counts and displacements are in elements, int64_t, and one entry per rank where they are spans.
// Send and receive buffers must not overlap (all_reduce_sum works in place).
//
// Determinism: the local back end sums in rank order, ((x_0 + x_1) + x_2) + ..., whatever the
// timing; MPI sums in its own order, fixed for a given rank count and message size.
//
// Errors: bad arguments (negative counts, spans of the wrong length, a root that is not a rank)
// throw moge::Error on the calling rank before any communication. What a back end does when
// another rank fails is said in its header: never a hang.
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

namespace moge::parallel {

enum class Element { f32, f64, i32, i64, u8 };
int64_t element_size(Element type);
const char* element_name(Element type);

template <typename T> struct ElementOf;  // defined only for the element types
template <> struct ElementOf<float> { static constexpr Element value = Element::f32; };
template <> struct ElementOf<double> { static constexpr Element value = Element::f64; };
template <> struct ElementOf<int32_t> { static constexpr Element value = Element::i32; };
template <> struct ElementOf<int64_t> { static constexpr Element value = Element::i64; };
template <> struct ElementOf<uint8_t> { static constexpr Element value = Element::u8; };

template <typename T>
concept CommElement = requires { ElementOf<T>::value; };
template <typename T>
concept SumElement = CommElement<T> && !std::same_as<T, uint8_t>;

// The displacements of blocks packed one after another: {0, c0, c0 + c1, ...}.
std::vector<int64_t> packed_displacements(std::span<const int64_t> counts);

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every rank sends `count` elements; recv (size() * count) holds rank p's at p * count.
  template <CommElement T>
  void all_gather(const T* send, int64_t count, T* recv) {
    check_count("all_gather", count);
    do_all_gather(send, count, recv, ElementOf<T>::value);
  }
  // Rank p sends counts[p] elements (this rank: counts[rank()] from `send`); they land at
  // recv + displs[p]. Every rank passes the same counts; displs are this rank's layout.
  template <CommElement T>
  void all_gather_v(const T* send, T* recv, std::span<const int64_t> counts, std::span<const int64_t> displs) {
    check_counts("all_gather_v", counts, displs);
    do_all_gather_v(send, recv, counts, displs, ElementOf<T>::value);
  }

  // send holds size() blocks of `count` elements; this rank receives in recv (count elements)
  // the sum over all ranks of their block rank().
  template <SumElement T>
  void reduce_scatter_sum(const T* send, T* recv, int64_t count) {
    check_count("reduce_scatter_sum", count);
    do_reduce_scatter(send, recv, count, ElementOf<T>::value);
  }
  // send holds blocks of counts[0], counts[1], ... elements packed in rank order; this rank
  // receives the sum of everyone's block rank() (counts[rank()] elements). Same counts on all.
  template <SumElement T>
  void reduce_scatter_sum_v(const T* send, T* recv, std::span<const int64_t> counts) {
    check_counts("reduce_scatter_sum_v", counts, counts);
    do_reduce_scatter_v(send, recv, counts, ElementOf<T>::value);
  }

  // To each peer p: send_counts[p] elements from send + send_displs[p]; from each peer p:
  // recv_counts[p] elements to recv + recv_displs[p]. recv_counts[p] here must equal
  // send_counts[rank()] on p.
  template <CommElement T>
  void all_to_all_v(const T* send, std::span<const int64_t> send_counts, std::span<const int64_t> send_displs,
                    T* recv, std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) {
    check_counts("all_to_all_v", send_counts, send_displs);
    check_counts("all_to_all_v", recv_counts, recv_displs);
    do_all_to_all_v(send, send_counts, send_displs, recv, recv_counts, recv_displs, ElementOf<T>::value);
  }

  // In place: every rank ends with the element-wise sum over all ranks of its n elements.
  template <SumElement T>
  void all_reduce_sum(T* data, int64_t n) {
    check_count("all_reduce_sum", n);
    do_all_reduce(data, n, ElementOf<T>::value);
  }

  // Every rank ends with root's n elements at data.
  template <CommElement T>
  void broadcast(T* data, int64_t n, int root) {
    check_count("broadcast", n);
    check_root("broadcast", root);
    do_broadcast(data, n, root, ElementOf<T>::value);
  }

  // Returns once every rank has called it.
  virtual void barrier() = 0;

 protected:
  // The back ends: arguments already checked as above.
  virtual void do_all_gather(const void* send, int64_t count, void* recv, Element type) = 0;
  virtual void do_all_gather_v(const void* send, void* recv, std::span<const int64_t> counts,
                               std::span<const int64_t> displs, Element type) = 0;
  virtual void do_reduce_scatter(const void* send, void* recv, int64_t count, Element type) = 0;
  virtual void do_reduce_scatter_v(const void* send, void* recv, std::span<const int64_t> counts, Element type) = 0;
  virtual void do_all_to_all_v(const void* send, std::span<const int64_t> send_counts,
                               std::span<const int64_t> send_displs, void* recv,
                               std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                               Element type) = 0;
  virtual void do_all_reduce(void* data, int64_t n, Element type) = 0;
  virtual void do_broadcast(void* data, int64_t n, int root, Element type) = 0;

 private:
  void check_count(const char* op, int64_t count) const;
  void check_root(const char* op, int root) const;
  void check_counts(const char* op, std::span<const int64_t> counts, std::span<const int64_t> displs) const;
};

}  // namespace moge::parallel
