// model/safetensors: round trips through our writer and reader, cross-checks against an
// independent Python (numpy + struct + json) writer and reader, HF-style sharding, and corrupt
// files, each of which must raise moge::Error naming the file, never crash (run under ASan too).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moge/core/dtype.h"
#include "moge/core/error.h"
#include "moge/model/safetensors.h"
#include "test_util.h"

namespace moge::model {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Helpers

// Runs `f`, which must throw moge::Error whose message contains every one of `needles`.
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> needles) {
  try {
    f();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "message is not one line: " << message;
    for (const std::string& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos) << "message \"" << message << "\" does not contain \"" << needle << "\"";
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moge::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected moge::Error, nothing was thrown";
}

template <typename T>
std::vector<std::byte> bytes_of(const std::vector<T>& v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::byte> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!out.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

void write_bytes(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(bool(out)) << path;
}

// A hand-made file: 8-byte length (the header's own unless `length` overrides it), header text,
// `data_bytes` bytes of data (0, 1, 2, ...).
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               std::optional<uint64_t> length = std::nullopt) {
  std::vector<std::byte> out(8);
  const uint64_t n = length.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[i] = std::byte(uint8_t(n >> (8 * i)));
  for (char c : header) out.push_back(std::byte(c));
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(std::byte(uint8_t(i)));
  write_bytes(path, out);
}

// Runs /usr/bin/python3 on `script` with `args`; returns its exit status, output in `log`.
int run_python(const std::string& dir, const std::string& script, const std::string& args, std::string* log) {
  const std::string script_path = dir + "/script.py", log_path = dir + "/python.log";
  std::ofstream(script_path) << script;
  const std::string cmd = "/usr/bin/python3 " + script_path + " " + args + " > " + log_path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log_path);
  log->assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Each test gets a fresh directory of its own (ctest runs tests in parallel processes).
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = test::binary_path("safetensors_test/" + std::to_string(getpid()) + "." + info->test_suite_name() + "." +
                             info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

class SafetensorsRoundTrip : public SafetensorsTest {};
class SafetensorsPython : public SafetensorsTest {};
class SafetensorsSharded : public SafetensorsTest {};
class SafetensorsCorrupt : public SafetensorsTest {};

// ---------------------------------------------------------------------------------------------
// The format's constants

TEST(SafetensorsDType, NamesSizesAndHalfConversion) {
  EXPECT_EQ(parse_st_dtype("BF16"), StDType::BF16);
  EXPECT_EQ(parse_st_dtype("I64"), StDType::I64);
  EXPECT_FALSE(parse_st_dtype("bf16").has_value());  // names are case-sensitive
  EXPECT_FALSE(parse_st_dtype("F64").has_value());
  EXPECT_EQ(st_dtype_size(StDType::F16), 2u);
  EXPECT_EQ(st_dtype_size(StDType::I64), 8u);
  EXPECT_STREQ(st_dtype_name(StDType::U8), "U8");

  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);           // 1365/4096
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);                   // largest finite
  EXPECT_EQ(f16_to_f32(0x0400), 6.103515625e-05f);           // smallest normal, 2^-14
  EXPECT_EQ(f16_to_f32(0x03ff), 6.097555160522461e-05f);     // largest subnormal, 1023 * 2^-24
  EXPECT_EQ(f16_to_f32(0x0001), 5.9604644775390625e-08f);    // smallest subnormal, 2^-24
  EXPECT_EQ(f16_to_f32(0x8001), -5.9604644775390625e-08f);
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_to_f32(0x8000)), 0x80000000u);  // -0
  EXPECT_EQ(f16_to_f32(0x7c00), INFINITY);
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));  // smallest NaN payload stays NaN
}

// ---------------------------------------------------------------------------------------------
// Round trips through our own writer and reader

TEST_F(SafetensorsRoundTrip, AllDtypesBytesIdentical) {
  const std::vector<float> f32 = {0.5f, -1.25f, 3.0f, 1e-30f, -7.0f, 42.0f};
  const std::vector<uint16_t> bf = {0x3f80, 0xc040, 0x3eab, 0x7f80};
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x03ff};
  const std::vector<int8_t> i8 = {-128, -1, 0, 1, 127};  // odd byte count: the next tensor is misaligned
  const std::vector<int32_t> i32 = {7, -9};
  const std::vector<int64_t> i64 = {int64_t(1) << 40, -3};
  const std::vector<uint8_t> u8 = {255, 0, 9};
  const std::vector<NamedTensor> tensors = {
      {"w.f32", StDType::F32, {2, 3}, f32.data()},  {"w.bf16", StDType::BF16, {4}, bf.data()},
      {"w.i8", StDType::I8, {5}, i8.data()},        {"w.f16", StDType::F16, {3, 2}, f16.data()},
      {"pos.i32", StDType::I32, {2}, i32.data()},   {"pos.i64", StDType::I64, {1, 2}, i64.data()},
      {"mask.u8", StDType::U8, {3}, u8.data()},     {"scalar", StDType::F32, {}, f32.data()},
      {"empty", StDType::BF16, {0, 5}, nullptr},
  };
  const std::string path = file("all.safetensors");
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "héllo"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "héllo"}}));
  ASSERT_EQ(f.tensors().size(), tensors.size());
  size_t expected_data = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& want = tensors[i];
    const TensorInfo& got = f.tensors()[i];  // file order == the order given to the writer
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(got.bytes, size_t(shape_numel(want.shape)) * st_dtype_size(want.dtype));
    EXPECT_EQ(*got.file, path);
    if (got.bytes) {
      EXPECT_EQ(std::memcmp(got.data, want.data, got.bytes), 0);
    }
    EXPECT_EQ(&f.get(want.name), &got);
    expected_data += got.bytes;
  }
  // Layout: 8-byte length, header padded to a multiple of 8, then exactly the tensors' bytes.
  const std::vector<std::byte> raw = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + n + expected_data);
  EXPECT_EQ(char(raw[8]), '{');
  EXPECT_TRUE(char(raw[8 + n - 1]) == '}' || char(raw[8 + n - 1]) == ' ');
  expect_error([&] { f.get("nope"); }, {path, "nope"});
}

// As the reference writer: the header is padded with spaces so that the data section starts at a
// multiple of 8 bytes, whatever the names' lengths.
TEST_F(SafetensorsRoundTrip, HeaderPaddedToEightBytes) {
  const std::vector<float> v = {1.0f};
  for (int k = 1; k <= 8; ++k) {
    const std::string path = file("pad" + std::to_string(k) + ".safetensors");
    write_safetensors(path, {{std::string(size_t(k), 't'), StDType::F32, {1}, v.data()}});
    const std::vector<std::byte> raw = read_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, raw.data(), 8);
    ASSERT_EQ(n % 8, 0u) << "name length " << k;
    const std::string header(reinterpret_cast<const char*>(raw.data()) + 8, n);
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_EQ(raw.size(), 8 + n + 4);
    EXPECT_EQ(SafetensorsFile(path).tensors().at(0).name, std::string(size_t(k), 't'));
  }
}

TEST_F(SafetensorsRoundTrip, LoadF32ConvertsHalfTypes) {
  const std::vector<float> f32 = {1.5f, -2.0f};
  const std::vector<uint16_t> bf = {0x3f80, 0xc040, 0x3eab, 0x7f80, 0x0001, 0x8000};
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x03ff, 0x0400, 0xfc00, 0x7e00};
  const std::vector<int8_t> i8 = {1, 2};
  const std::string path = file("half.safetensors");
  write_safetensors(path, {{"a", StDType::F32, {2}, f32.data()},
                           {"b", StDType::BF16, {2, 3}, bf.data()},
                           {"h", StDType::F16, {9}, f16.data()},
                           {"q", StDType::I8, {2}, i8.data()}});
  Checkpoint ck(path);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "h", "q"}));

  Tensor a = ck.load_f32("a", {2});
  EXPECT_EQ(a.f32()[0], 1.5f);
  EXPECT_EQ(a.f32()[1], -2.0f);

  // bf16 = the top half of an f32: 0x3f80 -> 0x3f800000 = 1, 0xc040 -> -3, 0x3eab -> 0x3eab0000.
  Tensor b = ck.load_f32("b", {2, 3});
  const float want_bf[] = {1.0f, -3.0f, 0.333984375f, INFINITY, 0x1p-133f, -0.0f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(std::bit_cast<uint32_t>(b.f32()[i]), std::bit_cast<uint32_t>(want_bf[i])) << i;

  Tensor h = ck.load_f32("h", {9});
  const float want_h[] = {1.0f, -2.0f, 0.333251953125f, 65504.0f, 0x1p-24f, 1023 * 0x1p-24f, 0x1p-14f, -INFINITY};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(h.f32()[i], want_h[i]) << i;
  EXPECT_TRUE(std::isnan(h.f32()[8]));

  expect_error([&] { ck.load_f32("q", {2}); }, {path, "'q'", "I8"});
}

// Large enough for the conversion loops' OpenMP path.
TEST_F(SafetensorsRoundTrip, LoadF32LargeHalfTensors) {
  const size_t n = size_t(1) << 18;
  std::vector<bf16> bf(n);
  std::vector<uint16_t> h(n);
  for (size_t i = 0; i < n; ++i) {
    bf[i] = f32_to_bf16(float(i % 256) - 128);  // integers below 256 are exact in both types
    h[i] = uint16_t(0x3c00 + (i % 1024));       // 1 + (i % 1024) / 1024
  }
  const std::string path = file("big.safetensors");
  write_safetensors(path, {{"b", StDType::BF16, {512, 512}, bf.data()}, {"h", StDType::F16, {512, 512}, h.data()}});
  Checkpoint ck(path);
  const Tensor b = ck.load_f32("b", {512, 512}), hf = ck.load_f32("h", {512, 512});
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    bad += b.f32()[i] != float(i % 256) - 128;
    bad += hf.f32()[i] != 1.0f + float(i % 1024) / 1024;
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(SafetensorsRoundTrip, EmptyFileAndOverwrite) {
  const std::string path = file("none.safetensors");
  write_safetensors(path, {});
  EXPECT_EQ(read_bytes(path).size(), 16u);  // length + "{}" padded to 8
  EXPECT_TRUE(SafetensorsFile(path).tensors().empty());

  const std::vector<float> v = {1, 2, 3};
  write_safetensors(path, {{"x", StDType::F32, {3}, v.data()}});  // replaces the file atomically
  Checkpoint ck(path);
  EXPECT_TRUE(ck.has("x"));
  EXPECT_EQ(ck.load_f32("x", {3}).f32()[2], 3.0f);
}

TEST_F(SafetensorsRoundTrip, WriterRejectsBadInput) {
  const std::vector<float> v = {1, 2};
  const std::string path = file("bad.safetensors");
  expect_error([&] { write_safetensors(path, {{"x", StDType::F32, {2}, v.data()}, {"x", StDType::F32, {2}, v.data()}}); },
               {path, "duplicate", "'x'"});
  expect_error([&] { write_safetensors(path, {{"x", StDType::F32, {-2}, v.data()}}); }, {path, "'x'", "negative"});
  expect_error([&] { write_safetensors(path, {{"x", StDType::F32, {2}, nullptr}}); }, {path, "'x'", "no data"});
  expect_error([&] { write_safetensors(path, {{"__metadata__", StDType::F32, {2}, v.data()}}); }, {path, "reserved"});
  expect_error([&] { write_safetensors(file("no/such/dir/x.safetensors"), {}); }, {"no/such/dir/x.safetensors"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------------------------
// Cross-checks with an independent implementation: Python with numpy, the format by hand

// Writes tensors in an order unrelated to their names, with an odd-length unpadded header (so
// every tensor's bytes are misaligned in memory), and f16 tensor of all 65536 bit patterns next to
// numpy's own f32 conversion of them.
constexpr const char* kPythonWriter = R"PY(
import json, struct, sys
import numpy as np

bits = np.arange(65536, dtype=np.uint16)
bf_values = np.array([1.0, -2.5, 0.15625, 65536.0, -0.0078125], dtype=np.float32)
tensors = [
    ("z.f32", "F32", [3, 4], (np.arange(12, dtype=np.float32) * 0.5 - 2).tobytes()),
    ("a.f16_bits", "F16", [256, 256], bits.tobytes()),
    ("a.f16_as_f32", "F32", [256, 256], bits.view(np.float16).astype(np.float32).tobytes()),
    ("m.bf16", "BF16", [5], (bf_values.view(np.uint32) >> 16).astype(np.uint16).tobytes()),
    ("q.i8", "I8", [2, 3], np.array([-128, -1, 0, 1, 2, 127], dtype=np.int8).tobytes()),
    ("pos.i64", "I64", [3], np.array([0, 1, 1 << 40], dtype=np.int64).tobytes()),
    ("empty", "F32", [0, 7], b""),
]
header = {"__metadata__": {"source": "numpy"}}
data, offset = b"", 0
for name, dtype, shape, raw in tensors:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    data += raw
    offset += len(raw)
text = json.dumps(header).encode("utf-8")
if len(text) % 2 == 0:
    text += b" "  # odd length: the data section starts misaligned
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
)PY";

TEST_F(SafetensorsPython, ReadsFileWrittenByPython) {
  const std::string path = file("from_python.safetensors");
  std::string log;
  ASSERT_EQ(run_python(dir_, kPythonWriter, path, &log), 0) << log;

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("source"), "numpy");
  EXPECT_EQ(f.tensors().size(), 7u);
  const std::vector<std::byte> raw = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 2, 1u) << "the script should have produced a misaligned data section";

  Checkpoint ck(path);
  Tensor z = ck.load_f32("z.f32", {3, 4});
  for (int i = 0; i < 12; ++i) EXPECT_EQ(z.f32()[i], i * 0.5f - 2) << i;

  // Every f16 bit pattern against numpy's conversion: bit-identical, or NaN for NaN (hardware
  // conversion may quiet a signalling NaN).
  Tensor ours = ck.load_f32("a.f16_bits", {256, 256});
  Tensor numpy = ck.load_f32("a.f16_as_f32", {256, 256});
  int mismatches = 0;
  for (int i = 0; i < 65536; ++i) {
    const float a = ours.f32()[i], b = numpy.f32()[i];
    const bool same = std::isnan(b) ? std::isnan(a) : std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
    if (!same && ++mismatches <= 5) ADD_FAILURE() << "f16 bits 0x" << std::hex << i << ": ours " << a << ", numpy " << b;
  }
  EXPECT_EQ(mismatches, 0);

  Tensor m = ck.load_f32("m.bf16", {5});
  const float want_bf[] = {1.0f, -2.5f, 0.15625f, 65536.0f, -0.0078125f};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(m.f32()[i], want_bf[i]) << i;

  const TensorInfo& q = ck.get("q.i8");
  EXPECT_EQ(q.dtype, StDType::I8);
  EXPECT_EQ(q.shape, (Shape{2, 3}));
  const int8_t want_q[] = {-128, -1, 0, 1, 2, 127};
  EXPECT_EQ(std::memcmp(q.data, want_q, 6), 0);

  const TensorInfo& pos = ck.get("pos.i64");
  int64_t last;
  std::memcpy(&last, pos.data + 16, 8);
  EXPECT_EQ(last, int64_t(1) << 40);
  EXPECT_EQ(ck.load_f32("empty", {0, 7}).numel(), 0);
}

// Parses our file by hand and checks layout, alignment padding, order and values.
constexpr const char* kPythonReader = R"PY(
import json, struct, sys
import numpy as np

raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert n % 8 == 0, ("header not padded to 8", n)
text = raw[8:8 + n].decode("utf-8")
assert text.rstrip(" ").endswith("}"), "padding must be spaces"
header = json.loads(text)
data = raw[8 + n:]
assert header.pop("__metadata__") == {"format": "pt", "writer": "moge"}

spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
pos = 0
for begin, end, name in spans:
    assert begin == pos, ("not contiguous", name, begin, pos)
    pos = end
assert pos == len(data), ("trailing bytes", pos, len(data))
assert [s[2] for s in spans] == ["w.f32", "w.bf16", "w.f16", "w.i8"], spans

def get(name, dtype, np_dtype):
    v = header[name]
    assert v["dtype"] == dtype, (name, v["dtype"])
    begin, end = v["data_offsets"]
    return np.frombuffer(data[begin:end], dtype=np_dtype).reshape(v["shape"])

f32 = get("w.f32", "F32", "<f4")
assert np.array_equal(f32, (np.arange(24, dtype=np.float32) * 0.25 - 3).reshape(2, 3, 4)), f32
bf = (get("w.bf16", "BF16", "<u2").astype(np.uint32) << 16).view(np.float32)
assert np.array_equal(bf, np.array([[1.0, -2.5], [0.15625, 65536.0]], dtype=np.float32)), bf
f16 = get("w.f16", "F16", "<f2").astype(np.float32)
assert np.array_equal(f16, np.array([1.0, -2.0, 65504.0, 2.0 ** -24], dtype=np.float32)), f16
i8 = get("w.i8", "I8", "i1")
assert np.array_equal(i8, np.array([[-128, -1], [0, 127]], dtype=np.int8)), i8
print("ok")
)PY";

TEST_F(SafetensorsPython, PythonReadsFileWrittenByCpp) {
  std::vector<float> f32(24);
  for (int i = 0; i < 24; ++i) f32[i] = i * 0.25f - 3;
  std::vector<bf16> bf;
  for (float x : {1.0f, -2.5f, 0.15625f, 65536.0f}) bf.push_back(f32_to_bf16(x));
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff, 0x0001};
  const std::vector<int8_t> i8 = {-128, -1, 0, 127};
  const std::string path = file("from_cpp.safetensors");
  write_safetensors(path,
                    {{"w.f32", StDType::F32, {2, 3, 4}, f32.data()},
                     {"w.bf16", StDType::BF16, {2, 2}, bf.data()},
                     {"w.f16", StDType::F16, {4}, f16.data()},
                     {"w.i8", StDType::I8, {2, 2}, i8.data()}},
                    {{"format", "pt"}, {"writer", "moge"}});
  std::string log;
  EXPECT_EQ(run_python(dir_, kPythonReader, path, &log), 0) << log;
  EXPECT_NE(log.find("ok"), std::string::npos) << log;
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

struct Model {
  std::vector<std::vector<float>> data;
  std::vector<NamedTensor> tensors;
};

// Ten 1 KiB tensors, one 4 KiB tensor, and an inv_freq buffer that readers skip.
Model small_model() {
  Model m;
  std::vector<std::pair<std::string, Shape>> specs;
  for (int i = 0; i < 10; ++i) specs.push_back({"model.layers." + std::to_string(i) + ".w", {16, 16}});
  specs.push_back({"lm_head.weight", {32, 32}});
  specs.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {8}});
  m.data.reserve(specs.size());
  for (size_t t = 0; t < specs.size(); ++t) {
    std::vector<float> v(size_t(shape_numel(specs[t].second)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(t * 1000 + i);
    m.data.push_back(std::move(v));
    m.tensors.push_back({specs[t].first, StDType::F32, specs[t].second, m.data.back().data()});
  }
  return m;
}

TEST_F(SafetensorsSharded, WritesShardsAndIndexThatCheckpointReads) {
  const Model m = small_model();
  const std::vector<std::string> files = write_sharded(dir_, m.tensors, 2500, {{"format", "pt"}});
  // 2 KiB tensors a shard (a third would pass 2500): 5 shards of layers, lm_head alone (larger
  // than the limit), inv_freq in a seventh.
  ASSERT_EQ(files.size(), 8u);
  EXPECT_EQ(files.front(), "model-00001-of-00007.safetensors");
  EXPECT_EQ(files[6], "model-00007-of-00007.safetensors");
  EXPECT_EQ(files.back(), "model.safetensors.index.json");
  for (const std::string& f : files) EXPECT_TRUE(fs::exists(file(f))) << f;
  EXPECT_FALSE(fs::exists(file("model.safetensors")));

  std::ifstream in(file("model.safetensors.index.json"));
  const nlohmann::json index = nlohmann::json::parse(in);
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 10u * 1024 + 4096 + 32);
  EXPECT_EQ(index["weight_map"].size(), m.tensors.size());
  EXPECT_EQ(index["weight_map"]["model.layers.0.w"], "model-00001-of-00007.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.9.w"], "model-00005-of-00007.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00006-of-00007.safetensors");

  Checkpoint ck(dir_);
  EXPECT_EQ(ck.files().size(), 7u);
  EXPECT_EQ(ck.names().size(), m.tensors.size() - 1);  // inv_freq skipped
  EXPECT_FALSE(ck.has("model.layers.0.self_attn.rotary_emb.inv_freq"));
  for (size_t t = 0; t + 1 < m.tensors.size(); ++t) {
    SCOPED_TRACE(m.tensors[t].name);
    Tensor x = ck.load_f32(m.tensors[t].name, m.tensors[t].shape);
    EXPECT_EQ(std::memcmp(x.f32(), m.data[t].data(), x.bytes()), 0);
    EXPECT_EQ(SafetensorsFile(*ck.get(m.tensors[t].name).file).metadata().at("format"), "pt");
  }
  std::set<std::string> expected = {"lm_head.weight", "not.in.file"};
  for (int i = 0; i < 8; ++i) expected.insert("model.layers." + std::to_string(i) + ".w");
  EXPECT_EQ(ck.unexpected(expected), (std::vector<std::string>{"model.layers.8.w", "model.layers.9.w"}));
  expect_error([&] { ck.get("model.norm.weight"); }, {"checkpoint " + dir_, "missing tensor model.norm.weight"});
}

TEST_F(SafetensorsSharded, SingleShardReplacesAnEarlierShardedSave) {
  const Model m = small_model();
  write_sharded(dir_, m.tensors, 2500);
  ASSERT_TRUE(fs::exists(file("model.safetensors.index.json")));
  for (const char* other : {"config.json", "model-1-of-2.safetensors", "model-0000x-of-00007.safetensors"})
    std::ofstream(file(other)) << "{}";
  const std::vector<std::string> files = write_sharded(dir_, m.tensors, size_t(1) << 30);
  EXPECT_EQ(files, (std::vector<std::string>{"model.safetensors"}));
  const auto entries = std::distance(fs::directory_iterator(dir_), fs::directory_iterator());
  EXPECT_EQ(entries, 4) << "stale shards or index left behind, or other files removed";
  EXPECT_TRUE(fs::exists(file("config.json")));
  EXPECT_TRUE(fs::exists(file("model-1-of-2.safetensors")));
  EXPECT_TRUE(fs::exists(file("model-0000x-of-00007.safetensors")));
  Checkpoint ck(dir_);
  EXPECT_EQ(ck.files().size(), 1u);
  EXPECT_EQ(ck.load_f32("lm_head.weight", {32, 32}).f32()[5], 10005.0f);

  // And back to shards: the single file goes.
  write_sharded(dir_, m.tensors, 2500);
  EXPECT_FALSE(fs::exists(file("model.safetensors")));
  EXPECT_EQ(Checkpoint(dir_).files().size(), 7u);
}

TEST_F(SafetensorsSharded, MissingShardIsNamed) {
  const Model m = small_model();
  write_sharded(dir_, m.tensors, 2500);
  fs::remove(file("model-00003-of-00007.safetensors"));
  expect_error([&] { Checkpoint ck(dir_); }, {"model.safetensors.index.json", "model-00003-of-00007.safetensors", "missing"});
}

TEST_F(SafetensorsSharded, IndexedTensorAbsentFromItsShard) {
  const Model m = small_model();
  write_sharded(dir_, m.tensors, 2500);
  nlohmann::json index = nlohmann::json::parse(std::ifstream(file("model.safetensors.index.json")));
  index["weight_map"]["ghost.weight"] = "model-00002-of-00007.safetensors";
  std::ofstream(file("model.safetensors.index.json")) << index.dump();
  expect_error([&] { Checkpoint ck(dir_); },
               {"model.safetensors.index.json", "ghost.weight", "model-00002-of-00007.safetensors"});
}

TEST_F(SafetensorsSharded, BadIndexes) {
  const std::string index = file("model.safetensors.index.json");
  std::ofstream(index) << "{\"weight_map\": [1, 2]}";
  expect_error([&] { Checkpoint ck(dir_); }, {index, "weight_map"});
  std::ofstream(index) << "{\"weight_map\": {\"x\": \"../outside.safetensors\"}}";
  expect_error([&] { Checkpoint ck(dir_); }, {index, "../outside.safetensors"});
  std::ofstream(index) << "{\"weight_map\": {\"x\": 3}}";
  expect_error([&] { Checkpoint ck(dir_); }, {index, "'x'"});
  std::ofstream(index) << "{\"weight_map\": ";
  expect_error([&] { Checkpoint ck(dir_); }, {index, "not valid JSON"});
  fs::remove(index);
  expect_error([&] { Checkpoint ck(dir_); }, {"checkpoint " + dir_, "model.safetensors"});
  expect_error([&] { Checkpoint ck(file("nowhere")); }, {file("nowhere"), "no such"});
}

TEST_F(SafetensorsSharded, SameTensorInTwoShards) {
  const std::vector<float> v = {1, 2};
  write_safetensors(file("model-00001-of-00002.safetensors"), {{"x", StDType::F32, {2}, v.data()}});
  write_safetensors(file("model-00002-of-00002.safetensors"), {{"x", StDType::F32, {2}, v.data()}});
  std::ofstream(file("model.safetensors.index.json"))
      << R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})";
  expect_error([&] { Checkpoint ck(dir_); }, {"'x'", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// Corrupt files: each a moge::Error naming the file, never a crash

TEST_F(SafetensorsCorrupt, TooShortAndNotAFile) {
  const std::string path = file("short.safetensors");
  write_bytes(path, std::vector<std::byte>(5));
  expect_error([&] { SafetensorsFile f(path); }, {path, "shorter than"});
  write_bytes(path, {});
  expect_error([&] { SafetensorsFile f(path); }, {path, "0 bytes"});
  expect_error([&] { SafetensorsFile f(dir_); }, {dir_, "not a regular file"});
  expect_error([&] { SafetensorsFile f(file("absent.safetensors")); }, {"absent.safetensors", "cannot open"});
}

TEST_F(SafetensorsCorrupt, TruncatedInDataSection) {
  const std::vector<float> v(64, 1.0f);
  const std::string path = file("cut.safetensors");
  write_safetensors(path, {{"a", StDType::F32, {32}, v.data()}, {"b", StDType::F32, {32}, v.data() + 32}});
  fs::resize_file(path, fs::file_size(path) - 100);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'b'", "past the end of the data section", "truncated"});
}

TEST_F(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  const std::string path = file("len.safetensors");
  write_raw(path, R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 4, 1000);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header length 1000", "past the end of the file"});
}

TEST_F(SafetensorsCorrupt, HugeHeaderLength) {
  const std::string path = file("huge.safetensors");
  write_raw(path, "{}", 0, 200'000'000);
  expect_error([&] { SafetensorsFile f(path); }, {path, "100 MB"});
  write_raw(path, "{}", 0, UINT64_MAX);  // n + 8 would overflow
  expect_error([&] { SafetensorsFile f(path); }, {path, "100 MB"});
  write_raw(path, "{}", 0, uint64_t(-7));
  expect_error([&] { SafetensorsFile f(path); }, {path, "header length"});
}

TEST_F(SafetensorsCorrupt, BadJson) {
  const std::string path = file("json.safetensors");
  write_raw(path, R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})", 4);  // missing brace
  expect_error([&] { SafetensorsFile f(path); }, {path, "not valid JSON"});
  write_raw(path, "", 0);
  expect_error([&] { SafetensorsFile f(path); }, {path, "not valid JSON"});
  write_raw(path, "[1, 2]  ", 0);
  expect_error([&] { SafetensorsFile f(path); }, {path, "not a JSON object"});
  write_raw(path, "{\"a\xff\": 1}", 0);  // not UTF-8
  expect_error([&] { SafetensorsFile f(path); }, {path, "not valid JSON"});
  write_raw(path, std::string(100000, '[') + std::string(100000, ']'), 0);
  expect_error([&] { SafetensorsFile f(path); }, {path, "nested deeper"});
  write_raw(path, R"({"__metadata__":{"k":1}})", 0);
  expect_error([&] { SafetensorsFile f(path); }, {path, "__metadata__", "'k'"});
}

TEST_F(SafetensorsCorrupt, EntryFieldsMissingOrMistyped) {
  const std::string path = file("fields.safetensors");
  struct Case {
    const char* header;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"t":[1]})", "not a JSON object"},
      {R"({"t":{"shape":[4],"data_offsets":[0,4]}})", "missing 'dtype'"},
      {R"({"t":{"dtype":"U8","data_offsets":[0,4]}})", "missing 'shape'"},
      {R"({"t":{"dtype":"U8","shape":[4]}})", "missing 'data_offsets'"},
      {R"({"t":{"dtype":8,"shape":[4],"data_offsets":[0,4]}})", "'dtype' is not a string"},
      {R"({"t":{"dtype":"U8","shape":"4","data_offsets":[0,4]}})", "'shape' is not an array"},
      {R"({"t":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}})", "shape dimension 0"},
      {R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", "[begin, end]"},
      {R"({"t":{"dtype":"U8","shape":[4],"data_offsets":{"b":0}}})", "[begin, end]"},
      {R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0,"4"]}})", "data_offsets end"},
      {R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[-1,4]}})", "negative"},
      {R"({"t":{"dtype":"F99","shape":[4],"data_offsets":[0,4]}})", "unknown dtype 'F99'"},
      {R"({"t":{"dtype":"U8","shape":[-1,4],"data_offsets":[0,4]}})", "negative"},
      {R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "overflows"},
      {R"({"t":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,4]}})", "shape dimension 0"},
      {R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})", "begin > end"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    write_raw(path, c.header, 4);
    expect_error([&] { SafetensorsFile f(path); }, {path, c.needle});
  }
}

TEST_F(SafetensorsCorrupt, ShapeTimesDtypeIsNotByteLength) {
  const std::string path = file("size.safetensors");
  write_raw(path, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'t'", "is 12 bytes", "span 16"});
}

TEST_F(SafetensorsCorrupt, OffsetsEndPastData) {
  const std::string path = file("past.safetensors");
  write_raw(path, R"({"t":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}})", 16);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'t'", "past the end of the data section (16 bytes"});
}

TEST_F(SafetensorsCorrupt, OverlappingTensors) {
  const std::string path = file("overlap.safetensors");
  write_raw(path,
            R"({"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
            24);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'b'", "overlap tensor 'a'"});
  // The same range twice (a duplicated entry under another name) overlaps too.
  write_raw(path,
            R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 4);
  expect_error([&] { SafetensorsFile f(path); }, {path, "overlap"});
}

TEST_F(SafetensorsCorrupt, HoleBetweenTensors) {
  const std::string path = file("hole.safetensors");
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
            24);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'b'", "hole", "bytes 8 to 16"});
  write_raw(path, R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8);  // hole at the start
  expect_error([&] { SafetensorsFile f(path); }, {path, "'a'", "hole"});
}

TEST_F(SafetensorsCorrupt, TrailingBytesAfterLastTensor) {
  const std::string path = file("trailing.safetensors");
  write_raw(path, R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 7);
  expect_error([&] { SafetensorsFile f(path); }, {path, "3 trailing bytes"});
}

TEST_F(SafetensorsCorrupt, MissingTensorAndShapeMismatch) {
  const std::vector<float> v(6, 0.5f);
  const std::string path = file("model.safetensors");
  write_safetensors(path, {{"w", StDType::F32, {3, 2}, v.data()}});
  Checkpoint by_dir(dir_);  // a directory with model.safetensors
  expect_error([&] { by_dir.get("v"); }, {"checkpoint " + dir_, "missing tensor v"});
  expect_error([&] { by_dir.load_f32("v", {3, 2}); }, {"missing tensor v"});
  expect_error([&] { by_dir.load_f32("w", {2, 3}); }, {path, "'w'", "expected shape [2, 3], file has [3, 2]"});
  EXPECT_EQ(by_dir.load_f32("w", {3, 2}).f32()[5], 0.5f);
}

// Every prefix of a valid file and many random corruptions of its header: each either opens or
// throws moge::Error; nothing else (ASan/UBSan builds check the "never a crash" part).
TEST_F(SafetensorsCorrupt, PrefixesAndMutationsNeverCrash) {
  const std::vector<float> f32 = {1, 2, 3, 4};
  const std::vector<uint16_t> h = {0x3c00, 0x7c01, 0x0001};
  const std::string good = file("good.safetensors"), bad = file("bad.safetensors");
  write_safetensors(good, {{"a", StDType::F32, {2, 2}, f32.data()}, {"b", StDType::F16, {3}, h.data()}}, {{"k", "v"}});
  const std::vector<std::byte> bytes = read_bytes(good);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);

  auto try_open = [&](const std::vector<std::byte>& b) {
    write_bytes(bad, b);
    try {
      Checkpoint ck(bad);
      for (const std::string& name : ck.names()) {
        const TensorInfo& t = ck.get(name);
        if (t.dtype == StDType::F32 || t.dtype == StDType::F16 || t.dtype == StDType::BF16) ck.load_f32(name, t.shape);
      }
      return true;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
      return false;
    }
  };
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_FALSE(try_open(std::vector<std::byte>(bytes.begin(), bytes.begin() + len))) << "prefix " << len;
  }
  EXPECT_TRUE(try_open(bytes));

  std::mt19937 rng(1234);
  int opened = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::byte> b = bytes;
    const int edits = 1 + int(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (8 + n);  // the length field and the header
      const char pool[] = "0123456789{}[]\":,-. eE\\FIU";
      b[at] = rng() % 2 ? std::byte(uint8_t(rng())) : std::byte(pool[rng() % (sizeof pool - 1)]);
    }
    opened += try_open(b);
  }
  EXPECT_LT(opened, 3000);  // most mutations must be caught
}

}  // namespace
}  // namespace moge::model
