#include "moge/parallel/mpi_comm.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include "moge/core/error.h"

namespace moge::parallel {

namespace {

// Largest element count one chunked MPI call gets.
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

MPI_Datatype mpi_type(Element type) {
  switch (type) {
    case Element::f32: return MPI_FLOAT;
    case Element::f64: return MPI_DOUBLE;
    case Element::i32: return MPI_INT32_T;
    case Element::i64: return MPI_INT64_T;
    case Element::u8: return MPI_UINT8_T;
  }
  throw Error("MPI: unknown element type");
}

// MPI's int count for `value`, or an Error naming the collective and what the value is.
int to_int(int64_t value, const char* op, const std::string& what) {
  if (value > INT_MAX)
    throw Error(std::string("MPI: ") + op + ": " + what + " " + std::to_string(value) + " exceeds MPI's int limit (" +
                std::to_string(INT_MAX) + ")");
  return int(value);
}

std::vector<int> to_ints(std::span<const int64_t> values, const char* op, const char* what) {
  std::vector<int> out(values.size());
  for (size_t p = 0; p < values.size(); ++p)
    out[p] = to_int(values[p], op, std::string(what) + " for rank " + std::to_string(p));
  return out;
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

void MpiComm::barrier() { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

void MpiComm::do_all_gather(const void* send, int64_t count, void* recv, Element type) {
  const int n = to_int(count, "all_gather", "count");
  mpi_check(MPI_Allgather(send, n, mpi_type(type), recv, n, mpi_type(type), MPI_COMM_WORLD), "MPI_Allgather");
}

void MpiComm::do_all_gather_v(const void* send, void* recv, std::span<const int64_t> counts,
                              std::span<const int64_t> displs, Element type) {
  const std::vector<int> n = to_ints(counts, "all_gather_v", "count");
  const std::vector<int> at = to_ints(displs, "all_gather_v", "displacement");
  mpi_check(MPI_Allgatherv(send, n[rank_], mpi_type(type), recv, n.data(), at.data(), mpi_type(type), MPI_COMM_WORLD),
            "MPI_Allgatherv");
}

void MpiComm::do_reduce_scatter(const void* send, void* recv, int64_t count, Element type) {
  const int n = to_int(count, "reduce_scatter_sum", "count");
  mpi_check(MPI_Reduce_scatter_block(send, recv, n, mpi_type(type), MPI_SUM, MPI_COMM_WORLD),
            "MPI_Reduce_scatter_block");
}

void MpiComm::do_reduce_scatter_v(const void* send, void* recv, std::span<const int64_t> counts, Element type) {
  const std::vector<int> n = to_ints(counts, "reduce_scatter_sum_v", "count");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  to_int(total, "reduce_scatter_sum_v", "total count");  // the send buffer's offsets are int as well
  mpi_check(MPI_Reduce_scatter(send, recv, n.data(), mpi_type(type), MPI_SUM, MPI_COMM_WORLD), "MPI_Reduce_scatter");
}

void MpiComm::do_all_to_all_v(const void* send, std::span<const int64_t> send_counts,
                              std::span<const int64_t> send_displs, void* recv, std::span<const int64_t> recv_counts,
                              std::span<const int64_t> recv_displs, Element type) {
  const std::vector<int> sn = to_ints(send_counts, "all_to_all_v", "send count");
  const std::vector<int> sat = to_ints(send_displs, "all_to_all_v", "send displacement");
  const std::vector<int> rn = to_ints(recv_counts, "all_to_all_v", "receive count");
  const std::vector<int> rat = to_ints(recv_displs, "all_to_all_v", "receive displacement");
  mpi_check(MPI_Alltoallv(send, sn.data(), sat.data(), mpi_type(type), recv, rn.data(), rat.data(), mpi_type(type),
                          MPI_COMM_WORLD),
            "MPI_Alltoallv");
}

void MpiComm::do_all_reduce(void* data, int64_t n, Element type) {
  auto* p = static_cast<char*>(data);
  const int64_t bytes = element_size(type);
  for (int64_t done = 0; done < n; done += kChunk) {
    const int count = int(std::min(kChunk, n - done));
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, p + done * bytes, count, mpi_type(type), MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
  }
}

void MpiComm::do_broadcast(void* data, int64_t n, int root, Element type) {
  auto* p = static_cast<char*>(data);
  const int64_t bytes = element_size(type);
  for (int64_t done = 0; done < n; done += kChunk) {
    const int count = int(std::min(kChunk, n - done));
    mpi_check(MPI_Bcast(p + done * bytes, count, mpi_type(type), root, MPI_COMM_WORLD), "MPI_Bcast");
  }
}

}  // namespace moge::parallel
