#pragma once
// MPI back end of the communicator: processes (one a rank, started by mpirun) on one or many
// machines. MpiSession owns MPI's lifetime; MpiComm does the collectives on MPI_COMM_WORLD.
//
// Errors: MPI_COMM_WORLD is set to MPI_ERRORS_RETURN and every failed call throws moge::Error
// with MPI's error string. A rank that throws leaves the others blocked in their next collective:
// the front end catches the error, prints it and calls abort_world(), which ends every rank. A
// rank that dies (a signal, an exit without MPI_Finalize) makes mpirun end the others.
//
// Counts: MPI counts and displacements are int. all_reduce_sum and broadcast send larger arrays
// in chunks of at most 2^28 elements; the other collectives refuse a count or displacement above
// INT_MAX with a moge::Error, on the calling rank, before any communication.
//
// Threads: MPI is initialized with MPI_THREAD_FUNNELED; only the thread that created the session
// may call MpiComm (OpenMP workers never do).
//
// <mpi.h> stays in the source file: users of this header do not see MPI's types or macros.
#include <cstdint>

#include "moge/parallel/comm.h"

namespace moge::parallel {

class MpiSession {
 public:
  // MPI_Init_thread (unless MPI is already initialized, in which case this session neither
  // initializes nor finalizes it) and MPI_ERRORS_RETURN on MPI_COMM_WORLD.
  MpiSession();
  // MPI_Finalize, if this session initialized MPI and nothing finalized it since.
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

// Ends every rank of MPI_COMM_WORLD with exit code `code` (MPI_Abort); does not return.
[[noreturn]] void abort_world(int code);

// The collectives of Comm on MPI_COMM_WORLD, one rank a device. Needs a live MpiSession.
class MpiComm : public Comm {
 public:
  MpiComm();
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override;

 protected:
  void do_all_gather(const void* send, int64_t count, void* recv, Element type) override;
  void do_all_gather_v(const void* send, void* recv, std::span<const int64_t> counts,
                       std::span<const int64_t> displs, Element type) override;
  void do_reduce_scatter(const void* send, void* recv, int64_t count, Element type) override;
  void do_reduce_scatter_v(const void* send, void* recv, std::span<const int64_t> counts, Element type) override;
  void do_all_to_all_v(const void* send, std::span<const int64_t> send_counts, std::span<const int64_t> send_displs,
                       void* recv, std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                       Element type) override;
  void do_all_reduce(void* data, int64_t n, Element type) override;
  void do_broadcast(void* data, int64_t n, int root, Element type) override;

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace moge::parallel
