#pragma once
// Checks of every collective of a parallel::Comm against values computed here directly; shared
// by the local back end's tests (parallel_comm_test.cpp) and the MPI check (comm_mpi_check.cpp).
// Each rank's inputs are a fixed function of (rank, index); the sums are expected in rank order,
// ((x_0 + x_1) + x_2) + ..., bit for bit when `exact_order`, else within a few rounding errors
// (MPI sums in its own order). Variable counts include zeros; gaps between the blocks of a
// receive buffer must keep their sentinel.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "moge/parallel/comm.h"

namespace moge::test {

// Rank `rank`'s element `i`: floats of mixed magnitudes (the sum's order shows in the last bits),
// integers small enough that sums do not overflow.
template <typename T>
T comm_value(int rank, int64_t i) {
  uint64_t h = (uint64_t(rank) + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t(i) + 7) * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  if constexpr (std::is_floating_point_v<T>) {
    const double unit = double(h % 2000001) / 1000000.0 - 1.0;  // [-1, 1]
    return T(unit * std::pow(10.0, double(h % 5) - 2.0));      // scales 0.01 .. 100
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    return T(h % 256);
  } else {
    return T(int64_t(h % 2001) - 1000);
  }
}

template <typename T>
T comm_sum_in_order(int ranks, int64_t i) {
  T s = comm_value<T>(0, i);
  for (int q = 1; q < ranks; ++q) s += comm_value<T>(q, i);
  return s;
}

class CommChecker {
 public:
  CommChecker(parallel::Comm& comm, bool exact_order) : c_(comm), exact_(exact_order), r_(comm.rank()), n_(comm.size()) {}

  // Runs every check; returns the failures ("rank r: what: detail"), empty when all pass.
  std::vector<std::string> run() {
    all_types<float>();
    all_types<double>();
    all_types<int32_t>();
    all_types<int64_t>();
    all_types<uint8_t>();
    c_.barrier();
    return errors_;
  }

 private:
  template <typename T>
  static constexpr bool summable = !std::is_same_v<T, uint8_t>;

  template <typename T>
  void all_types() {
    for (int64_t count : {0, 1, 5}) all_gather<T>(count);
    all_gather_v<T>(false);
    all_gather_v<T>(true);
    all_to_all_v<T>();
    if constexpr (summable<T>) {
      for (int64_t count : {0, 1, 7}) reduce_scatter<T>(count);
      reduce_scatter_v<T>(false);
      reduce_scatter_v<T>(true);
      for (int64_t n : {0, 1, 3, 1000}) all_reduce<T>(n);
    }
    for (int root = 0; root < n_; ++root) {
      broadcast<T>(root, 4);
      broadcast<T>(root, 0);
    }
  }

  template <typename T>
  static T sentinel() {
    return T(99);
  }

  template <typename T>
  void expect(const std::string& what, int64_t at, T got, T want, bool is_sum) {
    bool ok = got == want;
    if (!ok && is_sum && !exact_ && std::is_floating_point_v<T>) {
      // Any order of summing n values of magnitude <= 100 errs by less than n^2 * 100 * eps.
      const double tol = 4.0 * n_ * n_ * 100.0 * double(std::numeric_limits<T>::epsilon());
      ok = std::abs(double(got) - double(want)) <= tol;
    }
    if (ok || errors_.size() >= 20) return;
    char line[256];
    std::snprintf(line, sizeof line, "rank %d: %s<%s>: [%lld] = %.9g, expected %.9g", r_, what.c_str(),
                  parallel::element_name(parallel::ElementOf<T>::value), static_cast<long long>(at), double(got),
                  double(want));
    errors_.push_back(line);
  }

  template <typename T>
  void all_gather(int64_t count) {
    std::vector<T> send(count), recv(n_ * count, sentinel<T>());
    for (int64_t i = 0; i < count; ++i) send[i] = comm_value<T>(r_, i);
    c_.all_gather(send.data(), count, recv.data());
    for (int p = 0; p < n_; ++p)
      for (int64_t i = 0; i < count; ++i)
        expect("all_gather count " + std::to_string(count), p * count + i, recv[p * count + i],
               comm_value<T>(p, i), false);
  }

  // counts[p] = (3p + 1) % 4 (zero for p = 1, 5, ...) or all zero; blocks placed with gaps of p.
  template <typename T>
  void all_gather_v(bool zeros) {
    std::vector<int64_t> counts(n_), displs(n_);
    int64_t end = 0;
    for (int p = 0; p < n_; ++p) {
      counts[p] = zeros ? 0 : (3 * p + 1) % 4;
      displs[p] = end + p;
      end = displs[p] + counts[p];
    }
    std::vector<T> send(counts[r_]), recv(end, sentinel<T>());
    for (size_t i = 0; i < send.size(); ++i) send[i] = comm_value<T>(r_, int64_t(i));
    c_.all_gather_v(send.data(), recv.data(), counts, displs);
    std::vector<T> want(end, sentinel<T>());
    for (int p = 0; p < n_; ++p)
      for (int64_t i = 0; i < counts[p]; ++i) want[displs[p] + i] = comm_value<T>(p, i);
    for (int64_t i = 0; i < end; ++i)
      expect(std::string("all_gather_v") + (zeros ? " zeros" : ""), i, recv[i], want[i], false);
  }

  // Rank r sends (r + 2p + 1) % 4 elements to peer p, its blocks stored in reverse peer order;
  // the receive blocks are packed in rank order with a gap of one after each.
  template <typename T>
  void all_to_all_v() {
    auto sends = [](int from, int to) { return int64_t((from + 2 * to + 1) % 4); };
    std::vector<int64_t> send_counts(n_), send_displs(n_), recv_counts(n_),
        recv_displs(n_);
    int64_t send_total = 0, recv_end = 0;
    for (int p = n_ - 1; p >= 0; --p) {
      send_counts[p] = sends(r_, p);
      send_displs[p] = send_total;
      send_total += send_counts[p];
    }
    for (int p = 0; p < n_; ++p) {
      recv_counts[p] = sends(p, r_);
      recv_displs[p] = recv_end;
      recv_end += recv_counts[p] + 1;
    }
    std::vector<T> send(send_total), recv(recv_end, sentinel<T>());
    for (int p = 0; p < n_; ++p)
      for (int64_t i = 0; i < send_counts[p]; ++i)
        send[send_displs[p] + i] = comm_value<T>(r_, 1000 * p + i);
    c_.all_to_all_v(send.data(), send_counts, send_displs, recv.data(), recv_counts, recv_displs);
    std::vector<T> want(recv_end, sentinel<T>());
    for (int p = 0; p < n_; ++p)
      for (int64_t i = 0; i < recv_counts[p]; ++i)
        want[recv_displs[p] + i] = comm_value<T>(p, 1000 * r_ + i);
    for (int64_t i = 0; i < recv_end; ++i) expect("all_to_all_v", i, recv[i], want[i], false);
  }

  template <typename T>
  void reduce_scatter(int64_t count) {
    std::vector<T> send(n_ * count), recv(count, sentinel<T>());
    for (int64_t i = 0; i < n_ * count; ++i) send[i] = comm_value<T>(r_, i);
    c_.reduce_scatter_sum(send.data(), recv.data(), count);
    for (int64_t i = 0; i < count; ++i)
      expect("reduce_scatter_sum count " + std::to_string(count), i, recv[i],
             comm_sum_in_order<T>(n_, r_ * count + i), true);
  }

  // counts[p] = (2p + 3) % 5 (zero for p = 1, 6, ...) or all zero.
  template <typename T>
  void reduce_scatter_v(bool zeros) {
    std::vector<int64_t> counts(n_);
    int64_t total = 0, offset = 0;
    for (int p = 0; p < n_; ++p) {
      counts[p] = zeros ? 0 : (2 * p + 3) % 5;
      if (p < r_) offset += counts[p];
      total += counts[p];
    }
    std::vector<T> send(total), recv(counts[r_], sentinel<T>());
    for (int64_t i = 0; i < total; ++i) send[i] = comm_value<T>(r_, i);
    c_.reduce_scatter_sum_v(send.data(), recv.data(), counts);
    for (int64_t i = 0; i < counts[r_]; ++i)
      expect(std::string("reduce_scatter_sum_v") + (zeros ? " zeros" : ""), i, recv[i],
             comm_sum_in_order<T>(n_, offset + i), true);
  }

  template <typename T>
  void all_reduce(int64_t n) {
    std::vector<T> data(n);
    for (int64_t i = 0; i < n; ++i) data[i] = comm_value<T>(r_, i);
    c_.all_reduce_sum(data.data(), n);
    for (int64_t i = 0; i < n; ++i)
      expect("all_reduce_sum n " + std::to_string(n), i, data[i], comm_sum_in_order<T>(n_, i), true);
  }

  template <typename T>
  void broadcast(int root, int64_t n) {
    std::vector<T> data(n);
    for (int64_t i = 0; i < n; ++i) data[i] = comm_value<T>(r_, i);
    c_.broadcast(data.data(), n, root);
    for (int64_t i = 0; i < n; ++i)
      expect("broadcast root " + std::to_string(root), i, data[i], comm_value<T>(root, i), false);
  }

  parallel::Comm& c_;
  const bool exact_;
  const int r_, n_;
  std::vector<std::string> errors_;
};

}  // namespace moge::test
