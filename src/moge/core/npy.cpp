#include "moge/core/npy.h"

#include <cstring>
#include <fstream>

#include "moge/core/error.h"

namespace moge {
namespace {

// The value of 'key' in the header's Python dict literal: a quoted string, True/False, or a tuple.
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  size_t pos = header.find("'" + key + "'");
  check(pos != std::string::npos, path + ": npy header has no '" + key + "'");
  pos = header.find(':', pos);
  check(pos != std::string::npos, path + ": malformed npy header");
  pos = header.find_first_not_of(' ', pos + 1);
  check(pos != std::string::npos, path + ": malformed npy header");
  size_t end;
  if (header[pos] == '\'') end = header.find('\'', pos + 1) + 1;
  else if (header[pos] == '(') end = header.find(')', pos) + 1;
  else end = header.find_first_of(",}", pos);
  check(end != std::string::npos && end > pos, path + ": malformed npy header");
  return header.substr(pos, end - pos);
}

Shape parse_shape(const std::string& tuple, const std::string& path) {
  Shape shape;
  int64_t value = -1;
  for (char ch : tuple) {
    if (ch >= '0' && ch <= '9') {
      value = (value < 0 ? 0 : value * 10) + (ch - '0');
      check(value < (int64_t(1) << 40), path + ": npy dimension too large");
    } else if (value >= 0) {
      shape.push_back(value);
      value = -1;
    }
  }
  return shape;
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open");
  char magic[8];
  in.read(magic, 8);
  check(in && std::memcmp(magic, "\x93NUMPY", 6) == 0, path + ": not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  check(in && header_len < (1u << 20), path + ": bad npy header length");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  check(bool(in), path + ": truncated npy header");

  NpyArray a;
  std::string descr = header_field(header, "descr", path);
  a.descr = descr.substr(1, descr.size() - 2);
  check(header_field(header, "fortran_order", path) == "False", path + ": Fortran order not supported");
  a.shape = parse_shape(header_field(header, "shape", path), path);
  int64_t n = 0;
  try {
    n = shape_numel(a.shape);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  // Check the payload is there before allocating for it.
  const auto data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const int64_t available = int64_t(in.tellg() - data_start);
  in.seekg(data_start);

  auto read_as = [&](auto tag, auto& out) {
    using T = decltype(tag);
    check(available >= n * int64_t(sizeof(T)),
          path + ": truncated npy data (" + std::to_string(n) + " elements expected)");
    std::vector<T> raw(n);
    in.read(reinterpret_cast<char*>(raw.data()), n * sizeof(T));
    check(bool(in), path + ": truncated npy data (" + std::to_string(n) + " elements expected)");
    out.assign(raw.begin(), raw.end());
  };
  if (a.descr == "<f4") read_as(float{}, a.f32);
  else if (a.descr == "<f8") read_as(double{}, a.f32);
  else if (a.descr == "<i4") read_as(int32_t{}, a.i32);
  else if (a.descr == "<i8") read_as(int64_t{}, a.i32);
  else throw Error(path + ": unsupported npy dtype '" + a.descr + "'");
  return a;
}

Tensor read_npy_f32(const std::string& path) {
  NpyArray a = read_npy(path);
  check(a.descr == "<f4" || a.descr == "<f8", path + ": expected a float array, got " + a.descr);
  Tensor t(a.shape);
  std::memcpy(t.f32(), a.f32.data(), a.f32.size() * sizeof(float));
  return t;
}

void write_npy(const std::string& path, const float* data, const Shape& shape) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(3,)" vs "(3, 4)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    check(bool(out), path + ": cannot write");
    uint16_t len = uint16_t(header.size());
    out.write("\x93NUMPY\x01\x00", 8);
    out.write(reinterpret_cast<const char*>(&len), 2);
    out.write(header.data(), header.size());
    out.write(reinterpret_cast<const char*>(data), shape_numel(shape) * sizeof(float));
    check(bool(out), path + ": write failed");
  }
  check(std::rename(tmp.c_str(), path.c_str()) == 0, path + ": cannot rename temp file");
}

}  // namespace moge
