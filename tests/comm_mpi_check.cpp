// The MPI back end of parallel::Comm, run under mpirun by tests/cli/comm_mpi_test.sh.
//
//   comm_mpi_check collectives   every collective against values computed directly
//                                (comm_checks.h), and counts above INT_MAX refused clearly
//   comm_mpi_check throw         the last rank throws while the others wait in an all-reduce
//   comm_mpi_check die           the last rank exits without a word while the others wait
//
// A rank that throws prints "comm_mpi_check: error: rank r of n: ..." and ends every rank
// (abort_world), the way the moge command does.
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comm_checks.h"
#include "moge/core/error.h"
#include "moge/parallel/mpi_comm.h"

namespace {

using moge::Error;
using moge::parallel::MpiComm;

// Each call must throw a moge::Error that says MPI's int limit was exceeded.
void check_int_limit(MpiComm& comm) {
  const int64_t big = int64_t(INT_MAX) + 1;
  float dummy = 0;
  std::vector<int64_t> counts(size_t(comm.size()), 0), displs(size_t(comm.size()), 0);
  counts.back() = big;
  const std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"all_gather", [&] { comm.all_gather(&dummy, big, &dummy); }},
      {"all_gather_v", [&] { comm.all_gather_v(&dummy, &dummy, counts, displs); }},
      {"reduce_scatter_sum", [&] { comm.reduce_scatter_sum(&dummy, &dummy, big); }},
      {"reduce_scatter_sum_v", [&] { comm.reduce_scatter_sum_v(&dummy, &dummy, counts); }},
      {"all_to_all_v", [&] { comm.all_to_all_v(&dummy, counts, displs, &dummy, displs, displs); }},
  };
  for (const auto& [name, call] : calls) {
    bool refused = false;
    try {
      call();
    } catch (const Error& e) {
      refused = std::string(e.what()).find("exceeds MPI's int limit (2147483647)") != std::string::npos;
      if (!refused) throw Error(std::string(name) + ": unexpected error: " + e.what());
    }
    if (!refused) throw Error(std::string(name) + " of more than INT_MAX elements was not refused");
  }
}

void run(const std::string& mode) {
  MpiComm comm;
  const int last = comm.size() - 1;
  if (mode == "collectives") {
    check_int_limit(comm);
    const std::vector<std::string> errors = moge::test::CommChecker(comm, /*exact_order=*/false).run();
    for (const std::string& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    if (!errors.empty()) throw Error(std::to_string(errors.size()) + " collective checks failed");
    std::printf("rank %d of %d: every collective ok\n", comm.rank(), comm.size());
    return;
  }
  if (mode != "throw" && mode != "die") throw Error("unknown mode '" + mode + "' (collectives, throw, die)");
  float x = 1;
  comm.all_reduce_sum(&x, 1);  // every rank is up
  if (comm.rank() == last) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (mode == "die") std::_Exit(3);
    throw Error("rank fails on purpose");
  }
  for (;;) comm.all_reduce_sum(&x, 1);  // waits for the last rank forever
}

}  // namespace

int main(int argc, char** argv) {
  moge::parallel::MpiSession session;
  int rank = 0, size = 1;
  try {
    MpiComm comm;
    rank = comm.rank(), size = comm.size();
    run(argc > 1 ? argv[1] : "collectives");
    comm.barrier();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "comm_mpi_check: error: rank %d of %d: %s\n", rank, size, e.what());
    std::fflush(stderr);
    moge::parallel::abort_world(1);
  }
  return 0;
}
