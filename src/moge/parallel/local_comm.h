#pragma once
// Local back end of the communicator: D devices in one process, each driven by its own
// std::thread, exchanging data through shared memory (each device reads the others' buffers
// directly between two synchronizations).
//
//   run_on_devices(4, [&](Comm& comm, int device) { ... comm.all_gather(...) ... });
//
// Determinism: sums are taken in device order, ((x_0 + x_1) + x_2) + ..., whatever the timing,
// so every result is a function of the inputs alone.
//
// Failure: when one device's function throws, every other device that waits in a collective, or
// enters one later, throws moge::Error("local device d of D failed: <its message>") at once
// (they are woken, nothing polls). A device whose function returns while another waits in a
// collective it will never join is an error of the same kind. run() then joins every thread and
// rethrows the first failure (a moge::Error stays one, std::exception becomes
// std::runtime_error), its message prefixed with "local device d of D: ".
//
// Mismatched calls (devices calling different collectives, element types, equal counts or roots,
// or all_to_all_v counts that do not pair up) make every device throw the same moge::Error.
//
// Threads: each device thread calls omp_set_num_threads(threads_per_device) before the function,
// so each device's OpenMP regions get their own team of that size; the default is the caller's
// omp_get_max_threads() / D, at least 1. Waiting in a collective blocks (no spinning): devices may
// outnumber cores. With many devices set OMP_WAIT_POLICY=passive, or idle OpenMP teams of one
// device spin on the cores the others need.
#include <functional>
#include <memory>

#include "moge/parallel/comm.h"

namespace moge::parallel {

using DeviceFunction = std::function<void(Comm& comm, int device)>;

class LocalGroup {
 public:
  explicit LocalGroup(int devices);  // devices >= 1, else moge::Error
  ~LocalGroup();
  LocalGroup(const LocalGroup&) = delete;
  LocalGroup& operator=(const LocalGroup&) = delete;

  int size() const;

  // Runs fn(comm, device) for every device on its own thread and joins them; rethrows the first
  // failure as described above. A group may run several times, one run at a time.
  void run(const DeviceFunction& fn, int threads_per_device = 0);

  struct Shared;  // the state the devices share (local_comm.cpp)

 private:
  std::unique_ptr<Shared> shared_;
};

// LocalGroup(devices).run(fn, threads_per_device).
void run_on_devices(int devices, const DeviceFunction& fn, int threads_per_device = 0);

}  // namespace moge::parallel
