#include "moge/parallel/local_comm.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "moge/core/error.h"

// How a collective runs: every device posts its arguments (pointers, counts) in its slot of
// Shared::posts and waits at a barrier; then each device checks that the posts match, does its
// own part of the work by reading the other devices' buffers directly, and waits at a second
// barrier, so that no device returns (and reuses its buffers or its slot) while another still
// reads them. The barrier is a mutex and condition variable that a failure also wakes.

namespace moge::parallel {

namespace {

enum class Op { barrier, all_gather, all_gather_v, reduce_scatter, reduce_scatter_v, all_to_all_v, all_reduce, broadcast };

const char* op_name(Op op) {
  switch (op) {
    case Op::barrier: return "barrier";
    case Op::all_gather: return "all_gather";
    case Op::all_gather_v: return "all_gather_v";
    case Op::reduce_scatter: return "reduce_scatter_sum";
    case Op::reduce_scatter_v: return "reduce_scatter_sum_v";
    case Op::all_to_all_v: return "all_to_all_v";
    case Op::all_reduce: return "all_reduce_sum";
    case Op::broadcast: return "broadcast";
  }
  return "?";
}

// One device's arguments to the current collective.
struct Post {
  Post() = default;
  Post(Op op, Element type, const void* send, void* recv) : op(op), type(type), send(send), recv(recv) {}

  Op op = Op::barrier;
  Element type = Element::f32;
  const void* send = nullptr;
  void* recv = nullptr;  // all_reduce_sum and broadcast: the data
  int64_t count = 0;     // all_gather, reduce_scatter_sum, all_reduce_sum, broadcast
  int root = 0;
  std::span<const int64_t> counts, displs;            // all_gather_v, reduce_scatter_sum_v; all_to_all_v: send
  std::span<const int64_t> recv_counts, recv_displs;  // all_to_all_v
};

std::string device_name(int device, int devices) {
  return "local device " + std::to_string(device) + " of " + std::to_string(devices);
}

// Calls f(T{}) with T the C++ type of `type`.
template <typename F>
void with_type(Element type, F&& f) {
  switch (type) {
    case Element::f32: return f(float{});
    case Element::f64: return f(double{});
    case Element::i32: return f(int32_t{});
    case Element::i64: return f(int64_t{});
    case Element::u8: return f(uint8_t{});
  }
}

void copy_bytes(void* to, const void* from, int64_t bytes) {
  if (bytes > 0) std::memcpy(to, from, size_t(bytes));
}

// out[i] = ((x_0[i] + x_1[i]) + x_2[i]) + ... for i < n: device order, whatever the timing.
template <typename T>
void sum_in_order(const std::vector<const T*>& x, int64_t n, T* out) {
  if (n == 0) return;
  std::copy(x[0], x[0] + n, out);
  for (size_t p = 1; p < x.size(); ++p) {
    const T* xp = x[p];
    for (int64_t i = 0; i < n; ++i) out[i] += xp[i];
  }
}

}  // namespace

struct LocalGroup::Shared {
  explicit Shared(int devices) : devices(devices), posts(size_t(devices)) {}

  const int devices;
  std::vector<Post> posts;  // posts[d]: device d's arguments to the current collective

  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;          // devices waiting at the barrier
  uint64_t generation = 0;  // barriers completed
  // The first failure of the run: its device, message and exception.
  int failed_device = -1;
  std::string failure;
  std::exception_ptr error;
  int returned_device = -1;  // the first device whose function returned

  void reset() {
    std::lock_guard lock(mu);
    arrived = 0;
    failed_device = -1;
    failure.clear();
    error = nullptr;
    returned_device = -1;
  }

  // Throws, with mu held, if the barrier can no longer complete.
  void throw_if_broken(int device) const {
    if (failed_device >= 0) throw Error(device_name(failed_device, devices) + " failed: " + failure);
    if (returned_device >= 0)
      throw Error(device_name(returned_device, devices) + " returned while " + device_name(device, devices) +
                  " waits in a collective (every device must call the same collectives in the same order)");
  }

  // Returns once every device has called it; throws if a device failed or returned instead.
  void sync(int device) {
    std::unique_lock lock(mu);
    throw_if_broken(device);
    const uint64_t gen = generation;
    if (++arrived == devices) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lock, [&] { return generation != gen || failed_device >= 0 || returned_device >= 0; });
    if (generation != gen) return;
    throw_if_broken(device);
  }

  void fail(int device, std::exception_ptr e) {
    std::lock_guard lock(mu);
    if (failed_device >= 0) return;  // the first failure is the cause; later ones follow from it
    failed_device = device;
    error = e;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      failure = x.what();
    } catch (...) {
      failure = "an exception that is not a std::exception";
    }
    cv.notify_all();
  }

  void returned(int device) {
    std::lock_guard lock(mu);
    if (returned_device < 0) returned_device = device;
    cv.notify_all();
  }

  // What is wrong with the posts of the current collective ("" if nothing): every device checks
  // every post after the first barrier, so all of them find the same.
  std::string mismatch() const {
    const Post& a = posts[0];
    const std::string op = std::string("local comm: ") + op_name(a.op) + ": ";
    for (int p = 1; p < devices; ++p) {
      const Post& b = posts[size_t(p)];
      const std::string dev = "device " + std::to_string(p);
      if (b.op != a.op)
        return "local comm: " + dev + " calls " + op_name(b.op) + " while device 0 calls " + op_name(a.op) +
               " (every device must call the same collectives in the same order)";
      if (b.type != a.type)
        return op + dev + " passes " + element_name(b.type) + " elements, device 0 " + element_name(a.type);
      if (b.count != a.count)
        return op + dev + " passes count " + std::to_string(b.count) + ", device 0 " + std::to_string(a.count);
      if (b.root != a.root)
        return op + dev + " passes root " + std::to_string(b.root) + ", device 0 " + std::to_string(a.root);
      if ((a.op == Op::all_gather_v || a.op == Op::reduce_scatter_v) && !std::ranges::equal(a.counts, b.counts))
        return op + dev + " passes other counts than device 0 (every device passes the same counts)";
    }
    if (a.op == Op::all_to_all_v) {
      for (int p = 0; p < devices; ++p) {
        for (int q = 0; q < devices; ++q) {
          const int64_t sent = posts[size_t(p)].counts[size_t(q)], expected = posts[size_t(q)].recv_counts[size_t(p)];
          if (sent != expected)
            return op + "device " + std::to_string(p) + " sends " + std::to_string(sent) + " elements to device " +
                   std::to_string(q) + ", which expects " + std::to_string(expected);
        }
      }
    }
    return "";
  }
};

namespace {

// One device's endpoint.
class LocalComm : public Comm {
 public:
  LocalComm(LocalGroup::Shared& shared, int device) : s_(shared), rank_(device) {}
  int rank() const override { return rank_; }
  int size() const override { return s_.devices; }

  void barrier() override {
    collective(Post(), [] {});
  }

 protected:
  void do_all_gather(const void* send, int64_t count, void* recv, Element type) override {
    Post post(Op::all_gather, type, send, recv);
    post.count = count;
    collective(post, [&] {
      const int64_t bytes = count * element_size(type);
      for (int p = 0; p < size(); ++p)
        copy_bytes(static_cast<char*>(recv) + p * bytes, s_.posts[size_t(p)].send, bytes);
    });
  }

  void do_all_gather_v(const void* send, void* recv, std::span<const int64_t> counts, std::span<const int64_t> displs,
                       Element type) override {
    Post post(Op::all_gather_v, type, send, recv);
    post.counts = counts, post.displs = displs;
    collective(post, [&] {
      const int64_t width = element_size(type);
      for (int p = 0; p < size(); ++p)
        copy_bytes(static_cast<char*>(recv) + displs[size_t(p)] * width, s_.posts[size_t(p)].send,
                   counts[size_t(p)] * width);
    });
  }

  void do_reduce_scatter(const void* send, void* recv, int64_t count, Element type) override {
    Post post(Op::reduce_scatter, type, send, recv);
    post.count = count;
    collective(post, [&] { sum_sends(type, rank_ * count, count, recv); });
  }

  void do_reduce_scatter_v(const void* send, void* recv, std::span<const int64_t> counts, Element type) override {
    Post post(Op::reduce_scatter_v, type, send, recv);
    post.counts = counts;
    collective(post, [&] {
      int64_t offset = 0;
      for (int p = 0; p < rank_; ++p) offset += counts[size_t(p)];
      sum_sends(type, offset, counts[size_t(rank_)], recv);
    });
  }

  void do_all_to_all_v(const void* send, std::span<const int64_t> send_counts, std::span<const int64_t> send_displs,
                       void* recv, std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                       Element type) override {
    Post post(Op::all_to_all_v, type, send, recv);
    post.counts = send_counts, post.displs = send_displs;
    post.recv_counts = recv_counts, post.recv_displs = recv_displs;
    collective(post, [&] {
      const int64_t width = element_size(type);
      const size_t me = size_t(rank_);
      for (int p = 0; p < size(); ++p) {
        const Post& from = s_.posts[size_t(p)];
        copy_bytes(static_cast<char*>(recv) + recv_displs[size_t(p)] * width,
                   static_cast<const char*>(from.send) + from.displs[me] * width, from.counts[me] * width);
      }
    });
  }

  // Device r sums slice r of the data over all devices and writes the sum into slice r of every
  // device's data: slice r is touched by device r alone, so the work needs no further barrier.
  void do_all_reduce(void* data, int64_t n, Element type) override {
    Post post(Op::all_reduce, type, nullptr, data);
    post.count = n;
    collective(post, [&] {
      const int devices = size();
      const int64_t begin = n * rank_ / devices, end = n * (rank_ + 1) / devices;
      with_type(type, [&](auto zero) {
        using T = decltype(zero);
        std::vector<const T*> x(static_cast<size_t>(devices));
        for (int p = 0; p < devices; ++p) x[size_t(p)] = static_cast<const T*>(s_.posts[size_t(p)].recv) + begin;
        std::vector<T> sum(size_t(end - begin));
        sum_in_order(x, end - begin, sum.data());
        for (int p = 0; p < devices; ++p)
          std::copy(sum.begin(), sum.end(), static_cast<T*>(s_.posts[size_t(p)].recv) + begin);
      });
    });
  }

  void do_broadcast(void* data, int64_t n, int root, Element type) override {
    Post post(Op::broadcast, type, nullptr, data);
    post.count = n, post.root = root;
    collective(post, [&] {
      if (rank_ != root) copy_bytes(data, s_.posts[size_t(root)].recv, n * element_size(type));
    });
  }

 private:
  template <typename Work>
  void collective(const Post& post, Work&& work) {
    s_.posts[size_t(rank_)] = post;  // every other device left the previous collective: nobody reads it
    s_.sync(rank_);
    // Past the first barrier every device is in this collective and reaches the second one, even
    // with posts that do not match or work that throws: until then the others may still read its
    // posted arguments and buffers.
    const std::string mismatch = s_.mismatch();
    std::exception_ptr error;
    if (mismatch.empty()) {
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
    }
    s_.sync(rank_);
    if (!mismatch.empty()) throw Error(mismatch);
    if (error) std::rethrow_exception(error);
  }

  // recv = the sum over devices, in device order, of elements [offset, offset + n) of their sends.
  void sum_sends(Element type, int64_t offset, int64_t n, void* recv) {
    with_type(type, [&](auto zero) {
      using T = decltype(zero);
      std::vector<const T*> x(static_cast<size_t>(size()));
      for (int p = 0; p < size(); ++p) x[size_t(p)] = static_cast<const T*>(s_.posts[size_t(p)].send) + offset;
      sum_in_order(x, n, static_cast<T*>(recv));
    });
  }

  LocalGroup::Shared& s_;
  const int rank_;
};

}  // namespace

LocalGroup::LocalGroup(int devices) {
  check(devices >= 1, "local devices: the number of devices (" + std::to_string(devices) + ") must be at least 1");
  shared_ = std::make_unique<Shared>(devices);
}

LocalGroup::~LocalGroup() = default;

int LocalGroup::size() const { return shared_->devices; }

void LocalGroup::run(const DeviceFunction& fn, int threads_per_device) {
  Shared& s = *shared_;
  s.reset();
  const int threads = threads_per_device > 0 ? threads_per_device : std::max(1, omp_get_max_threads() / s.devices);
  std::vector<LocalComm> comms;
  comms.reserve(size_t(s.devices));
  for (int d = 0; d < s.devices; ++d) comms.emplace_back(s, d);

  std::vector<std::thread> workers;
  for (int d = 0; d < s.devices; ++d) {
    try {
      workers.emplace_back([&, d] {
        omp_set_num_threads(threads);
        try {
          fn(comms[size_t(d)], d);
          s.returned(d);
        } catch (...) {
          s.fail(d, std::current_exception());
        }
      });
    } catch (...) {  // no thread for device d: the started ones must not wait for it
      s.fail(d, std::current_exception());
      break;
    }
  }
  for (std::thread& w : workers) w.join();

  if (s.failed_device < 0) return;
  const std::string prefix = device_name(s.failed_device, s.devices) + ": ";
  try {
    std::rethrow_exception(s.error);
  } catch (const Error& e) {
    throw Error(prefix + e.what());
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what());
  }
}

void run_on_devices(int devices, const DeviceFunction& fn, int threads_per_device) {
  LocalGroup(devices).run(fn, threads_per_device);
}

}  // namespace moge::parallel
