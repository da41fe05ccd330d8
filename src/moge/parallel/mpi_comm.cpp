#include "moge/parallel/mpi_comm.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "moge/core/error.h"

namespace moge::parallel {

namespace {

// Largest element count one MPI call gets (MPI counts are int).
constexpr int64_t kChunk = int64_t(1) << 28;

std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, size_t(std::max(length, 0)));
}

void mpi_check(int code, const char* call) {
  if (code != MPI_SUCCESS) throw Error(std::string("MPI: ") + call + " failed: " + error_string(code));
}

template <typename T>
void allreduce_chunked(T* data, int64_t n, MPI_Datatype type) {
  check(n >= 0, "MPI: allreduce of a negative element count");
  for (int64_t done = 0; done < n; done += kChunk) {
    const int count = int(std::min(kChunk, n - done));
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
}

}  // namespace

MpiSession::MpiSession() {
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owns_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      owns_ = false;
      throw Error("MPI: the library does not provide MPI_THREAD_FUNNELED");
    }
  }
  mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void abort_world(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort should not return; make sure nothing runs after it
}

MpiComm::MpiComm() {
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
  check(initialized != 0, "MPI: MpiComm needs an MpiSession (MPI is not initialized)");
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
}

void MpiComm::allreduce_sum(float* data, int64_t n) { allreduce_chunked(data, n, MPI_FLOAT); }
void MpiComm::allreduce_sum(double* data, int64_t n) { allreduce_chunked(data, n, MPI_DOUBLE); }

void MpiComm::broadcast(void* data, int64_t bytes, int root) {
  check(bytes >= 0, "MPI: broadcast of a negative byte count");
  check(root >= 0 && root < size_, "MPI: broadcast root " + std::to_string(root) + " is not a rank");
  auto* p = static_cast<char*>(data);
  for (int64_t done = 0; done < bytes; done += kChunk) {
    const int count = int(std::min(kChunk, bytes - done));
    mpi_check(MPI_Bcast(p + done, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  }
}

void MpiComm::barrier() { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

}  // namespace moge::parallel
