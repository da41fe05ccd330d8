#pragma once
// MPI back end of the communicator: processes (one a rank, started by mpirun) on one or many
// machines. MpiSession owns MPI's lifetime; MpiComm does the collectives on MPI_COMM_WORLD.
//
// Errors: MPI_COMM_WORLD is set to MPI_ERRORS_RETURN and every failed call throws moge::Error
// with MPI's error string. A rank that throws leaves the others blocked in their next collective:
// the front end catches the error, prints it and calls abort_world(), which ends every rank.
//
// Threads: MPI is initialized with MPI_THREAD_FUNNELED; only the thread that created the session
// may call MpiComm (OpenMP workers never do).
//
// <mpi.h> stays in the source file: users of this header do not see MPI's types or macros.
#include <cstdint>

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

// Collectives on MPI_COMM_WORLD. Needs a live MpiSession. Counts are elements (int64_t: arrays
// larger than MPI's int counts go in chunks of at most 2^28 elements).
class MpiComm {
 public:
  MpiComm();
  int rank() const { return rank_; }
  int size() const { return size_; }

  // In place (MPI_IN_PLACE): every rank ends with the element-wise sum over all ranks.
  void allreduce_sum(float* data, int64_t n);
  void allreduce_sum(double* data, int64_t n);
  // Every rank ends with root's `bytes` bytes at `data`.
  void broadcast(void* data, int64_t bytes, int root);
  void barrier();

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace moge::parallel
