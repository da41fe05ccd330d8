// The local back end of parallel::Comm: every collective against values computed directly
// (comm_checks.h) for D = 1, 2, 3, 4, 8; sums bitwise in device order whatever the timing; a
// failing device ends every other device's collective with a moge::Error within a second.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm_checks.h"
#include "moge/core/error.h"
#include "moge/parallel/local_comm.h"

namespace moge::parallel {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs fn on D devices and returns the message of the Error run_on_devices throws ("" if none).
std::string run_error(int devices, const DeviceFunction& fn) {
  try {
    run_on_devices(devices, fn, 1);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LocalComm, EveryCollectiveMatchesDirectValues) {
  for (int devices : {1, 2, 3, 4, 8}) {
    std::vector<std::vector<std::string>> errors(devices);
    std::vector<int> ranks(devices, -1), sizes(devices, -1);
    run_on_devices(
        devices,
        [&](Comm& comm, int device) {
          ranks[device] = comm.rank();
          sizes[device] = comm.size();
          errors[device] = test::CommChecker(comm, /*exact_order=*/true).run();
        },
        1);
    for (int d = 0; d < devices; ++d) {
      EXPECT_EQ(ranks[d], d);
      EXPECT_EQ(sizes[d], devices);
      for (const std::string& e : errors[d]) ADD_FAILURE() << "D = " << devices << ": " << e;
    }
  }
}

// The devices reach the collective in a different order every time: the sums stay bitwise the
// same, in device order.
TEST(LocalComm, SumsInDeviceOrderWhateverTheTiming) {
  const int devices = 4;
  const int64_t n = 257;
  for (int trial = 0; trial < 12; ++trial) {
    std::vector<std::vector<float>> all_reduced(devices), scattered(devices);
    run_on_devices(
        devices,
        [&](Comm& comm, int d) {
          std::this_thread::sleep_for(std::chrono::milliseconds((d * 3 + trial * 5) % 7));
          std::vector<float> data(n), send(n * devices), recv(n);
          for (int64_t i = 0; i < n; ++i) data[i] = test::comm_value<float>(d, i);
          for (int64_t i = 0; i < n * devices; ++i) send[i] = test::comm_value<float>(d, i);
          comm.all_reduce_sum(data.data(), n);
          std::this_thread::sleep_for(std::chrono::milliseconds((d * 5 + trial) % 4));
          comm.reduce_scatter_sum(send.data(), recv.data(), n);
          all_reduced[d] = data;
          scattered[d] = recv;
        },
        1);
    for (int d = 0; d < devices; ++d) {
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(all_reduced[d][i], test::comm_sum_in_order<float>(devices, i)) << "trial " << trial;
        ASSERT_EQ(scattered[d][i], test::comm_sum_in_order<float>(devices, d * n + i)) << "trial " << trial;
      }
    }
  }
}

TEST(LocalComm, BarrierOrdersWrites) {
  const int devices = 4;
  std::vector<std::atomic<int>> slot(devices);
  std::atomic<int> wrong{0};
  run_on_devices(
      devices,
      [&](Comm& comm, int d) {
        for (int round = 1; round <= 200; ++round) {
          slot[d].store(round, std::memory_order_relaxed);
          comm.barrier();
          for (int p = 0; p < devices; ++p)
            if (slot[p].load(std::memory_order_relaxed) != round) ++wrong;
          comm.barrier();
        }
      },
      1);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(LocalComm, EachDeviceGetsItsOwnOpenMPThreads) {
  std::vector<int> seen(3, 0);
  run_on_devices(3, [&](Comm&, int d) { seen[d] = omp_get_max_threads(); }, 2);
  EXPECT_EQ(seen, std::vector<int>(3, 2));
  const int expected = std::max(1, omp_get_max_threads() / 2);
  std::vector<int> by_default(2, 0);
  run_on_devices(2, [&](Comm&, int d) { by_default[d] = omp_get_max_threads(); });
  EXPECT_EQ(by_default, std::vector<int>(2, expected));
}

// Device 2 throws while devices 0 and 3 wait in an all-reduce and device 1 is still computing:
// 0 and 3 are woken with an Error naming device 2 and its message, device 1 gets it as soon as it
// enters the collective, all within a second; run_on_devices rethrows device 2's error.
TEST(LocalComm, FailingDeviceEndsEveryCollectiveWithinASecond) {
  const int devices = 4;
  std::mutex mu;
  Clock::time_point failed_at;
  std::vector<double> latency(devices, -1);
  std::vector<std::string> message(devices);
  const std::string error = run_error(devices, [&](Comm& comm, int d) {
    float x = 1;
    if (d == 2) {
      std::this_thread::sleep_for(100ms);
      std::lock_guard lock(mu);
      failed_at = Clock::now();
      throw Error("boom on purpose");
    }
    if (d == 1) std::this_thread::sleep_for(300ms);  // busy elsewhere when device 2 fails
    const Clock::time_point entered = Clock::now();
    try {
      for (;;) comm.all_reduce_sum(&x, 1);
    } catch (const Error& e) {
      const Clock::time_point now = Clock::now();
      std::lock_guard lock(mu);
      latency[d] = seconds(now - std::max(entered, failed_at));
      message[d] = e.what();
      throw;
    }
  });
  EXPECT_EQ(error, "local device 2 of 4: boom on purpose");
  for (int d : {0, 1, 3}) {
    EXPECT_EQ(message[d], "local device 2 of 4 failed: boom on purpose") << "device " << d;
    EXPECT_GE(latency[d], 0.0) << "device " << d;
    EXPECT_LT(latency[d], 1.0) << "device " << d;
  }
}

TEST(LocalComm, DeviceThatReturnsWhileOthersWaitIsAnError) {
  const std::string error = run_error(3, [](Comm& comm, int d) {
    if (d == 2) return;
    comm.barrier();
  });
  EXPECT_NE(error.find("local device 2 of 3 returned while"), std::string::npos) << error;
}

TEST(LocalComm, MismatchedCallsThrowOnEveryDevice) {
  std::atomic<int> thrown{0};
  auto counting = [&](auto&& call) {
    try {
      call();
    } catch (const Error&) {
      ++thrown;
      throw;
    }
  };
  std::string error = run_error(2, [&](Comm& comm, int d) {
    float x = 0;
    counting([&] { d == 0 ? comm.all_reduce_sum(&x, 1) : comm.barrier(); });
  });
  EXPECT_NE(error.find("device 1 calls barrier while device 0 calls all_reduce_sum"), std::string::npos) << error;
  EXPECT_EQ(thrown.load(), 2);

  error = run_error(2, [&](Comm& comm, int d) {
    float x[2] = {0, 0};
    comm.all_reduce_sum(x, d + 1);
  });
  EXPECT_NE(error.find("all_reduce_sum: device 1 passes count 2, device 0 1"), std::string::npos) << error;

  error = run_error(2, [&](Comm& comm, int d) {
    float send[2] = {0, 0}, recv[2];
    const std::vector<int64_t> send_counts = {1, 1}, displs = {0, 1};
    const std::vector<int64_t> recv_counts = d == 0 ? std::vector<int64_t>{1, 1} : std::vector<int64_t>{0, 1};
    comm.all_to_all_v(send, send_counts, displs, recv, recv_counts, displs);
  });
  EXPECT_NE(error.find("device 0 sends 1 elements to device 1, which expects 0"), std::string::npos) << error;
}

TEST(LocalComm, BadArgumentsThrowBeforeCommunicating) {
  EXPECT_NE(run_error(2, [](Comm& comm, int) {
              float x = 0;
              comm.all_reduce_sum(&x, -1);
            }).find("comm: all_reduce_sum of a negative count (-1)"),
            std::string::npos);
  EXPECT_NE(run_error(2, [](Comm& comm, int) {
              float x = 0;
              comm.broadcast(&x, 1, 2);
            }).find("broadcast root 2 is not one of the 2 ranks"),
            std::string::npos);
  EXPECT_NE(run_error(3, [](Comm& comm, int) {
              float x = 0;
              const std::vector<int64_t> counts = {1, 1};
              comm.all_gather_v(&x, &x, counts, counts);
            }).find("one entry per rank (3), got 2 and 2"),
            std::string::npos);
  EXPECT_THROW(LocalGroup(0), Error);
}

TEST(LocalComm, OtherExceptionsAreNotMogeErrors) {
  try {
    run_on_devices(2, [](Comm& comm, int d) {
      if (d == 1) throw std::logic_error("internal");
      comm.barrier();
    });
    FAIL() << "no exception";
  } catch (const Error& e) {
    FAIL() << "a moge::Error: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "local device 1 of 2: internal");
  }
}

TEST(LocalComm, GroupRunsAgainAfterAFailure) {
  LocalGroup group(3);
  EXPECT_EQ(group.size(), 3);
  EXPECT_THROW(group.run([](Comm& comm, int d) {
                 if (d == 0) throw Error("first run fails");
                 comm.barrier();
               }),
               Error);
  std::vector<int64_t> sums(3, 0);
  group.run([&](Comm& comm, int d) {
    int64_t x = d + 1;
    comm.all_reduce_sum(&x, 1);
    sums[d] = x;
  });
  EXPECT_EQ(sums, std::vector<int64_t>(3, 6));
}

}  // namespace
}  // namespace moge::parallel
