// Bad input at the edges raises moge::Error whose message names the field, tensor, file or option
// at fault: MoE configs, routing-mode strings, layer weights, .npy files, simulation options.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <unistd.h>

#include "moge/core/error.h"
#include "moge/core/npy.h"
#include "moge/moe/config.h"
#include "moge/moe/layer.h"
#include "moge/moe/route_sim.h"

namespace moge::moe {
namespace {

namespace fs = std::filesystem;

// Runs `f`, which must throw moge::Error with `needle` in its message.
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" does not name " << needle;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moge::Error naming " << needle << ", got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected moge::Error naming " << needle << ", nothing was thrown";
}

// A small valid configuration; each test breaks one thing.
MoeConfig valid_config() {
  MoeConfig cfg;
  cfg.d_model = 8;
  cfg.expert_ff = 4;
  cfg.shared_ff = 6;
  cfg.router.num_experts = 16;
  cfg.router.num_groups = 4;
  cfg.router.top_k = 4;
  cfg.router.mode = RoutingMode::grouped;
  return cfg;
}

TEST(Config, ValidConfigsPass) {
  EXPECT_NO_THROW(valid_config().validate());
  MoeConfig cfg = valid_config();
  cfg.router.mode = RoutingMode::group_limited;
  cfg.router.topk_group = 4;
  cfg.router.renormalize = true;
  EXPECT_NO_THROW(cfg.validate());
  cfg.shared_ff = 0;  // no shared expert is allowed
  EXPECT_NO_THROW(cfg.validate());
  EXPECT_NO_THROW(MoeLayer{valid_config()});
}

TEST(Config, RouterFieldsAreChecked) {
  auto router_error = [](auto change, const std::string& field) {
    SCOPED_TRACE(field);
    MoeConfig cfg = valid_config();
    change(cfg.router);
    expect_error([&] { cfg.router.validate(); }, field);
    expect_error([&] { cfg.validate(); }, field);        // through the layer config
    expect_error([&] { MoeLayer layer(cfg); }, field);  // and the layer constructor
  };
  router_error([](RouterConfig& r) { r.num_experts = 10; }, "num_experts");  // 10 % 4 != 0
  router_error([](RouterConfig& r) { r.top_k = 6; }, "top_k");              // grouped: 6 % 4 != 0
  router_error(
      [](RouterConfig& r) {
        r.mode = RoutingMode::topk;
        r.top_k = 17;  // > N = 16
      },
      "top_k");
  router_error([](RouterConfig& r) { r.top_k = 20; }, "top_k");  // > N, and not a multiple of M either
  router_error([](RouterConfig& r) { r.renormalize = true; }, "renormalize");
  for (int bad_topk_group : {0, -1, 5}) {  // group_limited needs 1 <= topk_group <= M = 4
    router_error(
        [&](RouterConfig& r) {
          r.mode = RoutingMode::group_limited;
          r.topk_group = bad_topk_group;
        },
        "topk_group");
  }
  // One kept group of 4 experts cannot supply top_k = 8.
  router_error(
      [](RouterConfig& r) {
        r.mode = RoutingMode::group_limited;
        r.top_k = 8;
        r.topk_group = 1;
      },
      "topk_group");
}

TEST(Config, ZeroAndNegativeSizesAreRejected) {
  for (int bad : {0, -4}) {
    SCOPED_TRACE(bad);
    auto router_error = [&](auto change, const std::string& field) {
      MoeConfig cfg = valid_config();
      change(cfg.router);
      expect_error([&] { cfg.validate(); }, field);
    };
    router_error([&](RouterConfig& r) { r.num_experts = bad; }, "num_experts");
    router_error([&](RouterConfig& r) { r.num_groups = bad; }, "num_groups");
    router_error([&](RouterConfig& r) { r.top_k = bad; }, "top_k");

    MoeConfig cfg = valid_config();
    cfg.d_model = bad;
    expect_error([&] { cfg.validate(); }, "d_model");
    cfg = valid_config();
    cfg.expert_ff = bad;
    expect_error([&] { cfg.validate(); }, "expert_ff");
  }
  MoeConfig cfg = valid_config();
  cfg.shared_ff = -1;  // 0 means "no shared expert"; negative is an error
  expect_error([&] { cfg.validate(); }, "shared_ff");
  cfg = valid_config();
  cfg.aux_alpha = -0.5f;
  expect_error([&] { cfg.validate(); }, "aux_alpha");
}

TEST(Config, RoutingModeNames) {
  for (RoutingMode mode : {RoutingMode::grouped, RoutingMode::topk, RoutingMode::group_limited})
    EXPECT_EQ(parse_routing_mode(routing_mode_name(mode)), mode);
  expect_error([] { parse_routing_mode("nonsense"); }, "nonsense");
  expect_error([] { parse_routing_mode("Grouped"); }, "Grouped");  // case matters
  expect_error([] { parse_routing_mode(""); }, "routing mode");
  expect_error([] { parse_dtype("fp16"); }, "fp16");
}

// ---------------------------------------------------------------------------------------------
// Layer weights

TEST(Config, LayerRejectsMisshapenWeights) {
  const MoeConfig cfg = valid_config();  // N = 16, d = 8, F = 4, S = 6
  auto weights_error = [&](auto change, const std::string& tensor) {
    SCOPED_TRACE(tensor);
    MoeWeights w = MoeWeights::zeros(cfg);
    change(w);
    expect_error([&] { MoeLayer layer(cfg, std::move(w)); }, "'" + tensor + "'");
  };
  weights_error([](MoeWeights& w) { w.router_scale = Tensor({16}); }, "router_scale");     // [N], not [1, N]
  weights_error([](MoeWeights& w) { w.router_scale = Tensor({1, 17}); }, "router_scale");  // [1, N + 1]
  weights_error([](MoeWeights& w) { w.experts_down = Tensor({16, 4, 8}); }, "experts_down");  // [N, F, d]
  weights_error([](MoeWeights& w) { w.gate = Tensor({8, 16}); }, "gate");
  weights_error([](MoeWeights& w) { w.shared_up = Tensor(); }, "shared_up");  // missing although S = 6
  weights_error([](MoeWeights& w) { w.experts_gate = Tensor({16, 4, 8}, DType::bf16); }, "experts_gate");

  // Shared-expert tensors given to a layer without a shared expert.
  MoeConfig no_shared = cfg;
  no_shared.shared_ff = 0;
  MoeWeights w = MoeWeights::zeros(no_shared);
  w.shared_gate = Tensor({6, 8});
  expect_error([&] { MoeLayer layer(no_shared, std::move(w)); }, "shared_gate");
}

// ---------------------------------------------------------------------------------------------
// .npy files

// A scratch directory of this process's own, removed at the end of the test.
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("moge_config_test." + std::to_string(getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Npy, BadFilesRaiseErrorsNamingThePath) {
  TempDir dir;

  // A good file reads back (so the failures below are about the damage, not the writer).
  const std::string good = dir.file("good.npy");
  const float data[6] = {1, 2, 3, 4, 5, 6};
  write_npy(good, data, {2, 3});
  Tensor t = read_npy_f32(good);
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.f32()[5], 6.0f);

  const std::string missing = dir.file("missing.npy");
  expect_error([&] { read_npy(missing); }, missing);

  // Truncated in the data, and in the header.
  const std::string bytes = read_bytes(good);
  const std::string short_data = dir.file("short_data.npy"), short_header = dir.file("short_header.npy");
  write_bytes(short_data, bytes.substr(0, bytes.size() - 5));
  write_bytes(short_header, bytes.substr(0, 20));
  expect_error([&] { read_npy(short_data); }, short_data);
  expect_error([&] { read_npy(short_header); }, short_header);

  const std::string text = dir.file("text.npy"), empty = dir.file("empty.npy");
  write_bytes(text, "this is not a numpy file\n");
  write_bytes(empty, "");
  expect_error([&] { read_npy(text); }, text);
  expect_error([&] { read_npy(empty); }, empty);
  expect_error([&] { read_npy_f32(text); }, text);
}

// An .npy file (format 1.0) of this header dictionary and payload, written by hand so that tests
// can make files numpy would not.
std::string npy_bytes(std::string header, const std::string& payload) {
  // Pad with spaces so the 10-byte preamble, the header and its newline fill whole 64-byte blocks.
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += char(header.size() & 0xff);
  bytes += char(header.size() >> 8);
  return bytes + header + payload;
}

// An int32 array reads as i32, and read_npy_f32 refuses it naming the file.
TEST(Npy, IntegerArrayIsNotAFloatTensor) {
  TempDir dir;
  const int32_t values[3] = {7, -1, 42};
  const std::string path = dir.file("ints.npy");
  write_bytes(path, npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
                              std::string(reinterpret_cast<const char*>(values), sizeof(values))));

  NpyArray a = read_npy(path);
  EXPECT_EQ(a.descr, "<i4");
  EXPECT_EQ(a.shape, (Shape{3}));
  EXPECT_EQ(a.i32, (std::vector<int32_t>{7, -1, 42}));
  expect_error([&] { read_npy_f32(path); }, path);
}

// A header whose shape multiplies past int64 (undefined behaviour in a plain product) is an Error
// naming the file, not a crash or std::length_error.
TEST(Npy, OverflowingShapeIsAnErrorNamingThePath) {
  TempDir dir;
  const std::string path = dir.file("overflow.npy");
  write_bytes(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627775, 1099511627775), }", ""));
  expect_error([&] { read_npy(path); }, path);
}

// ---------------------------------------------------------------------------------------------
// Simulation options

TEST(Config, SimulateRoutingChecksDevices) {
  RouteSimOptions o;
  o.router.num_experts = 64;
  o.router.num_groups = 8;
  o.router.top_k = 8;
  o.trials = 10;
  for (int bad_devices : {3, 0, -8, 128}) {
    SCOPED_TRACE(bad_devices);
    o.devices = bad_devices;
    expect_error([&] { simulate_routing(o); }, "devices");
  }
  o.devices = 8;
  EXPECT_NO_THROW(simulate_routing(o));
  o.router.top_k = 6;  // grouped: not a multiple of 8 groups
  expect_error([&] { simulate_routing(o); }, "top_k");
}

}  // namespace
}  // namespace moge::moe
