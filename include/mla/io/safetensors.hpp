// mla/io/safetensors.hpp — reading and writing safetensors files, trusting nothing on read.
//
// Format: 8-byte little-endian header length N, N bytes of JSON header (padded with spaces),
// then the raw little-endian, row-major data. The header maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} relative to the data section, and may hold
// "__metadata__": {string: string}.
//
// parse_safetensors checks, before anything is used: the header length against a bound and the
// file size; the JSON is well-formed and every entry has exactly the expected fields and
// types; dtypes are known; shapes have rank <= 4 and their byte size does not overflow and
// equals end - begin; the entries, sorted by offset, tile the data section exactly (from 0, no
// gap, no overlap, to the end of the file). Any failure is an IoError naming the file and the
// first problem found.
//
// write_safetensors writes a temporary file in the destination's folder, flushes and fsyncs
// it, then renames it over the destination: a reader sees the old file or the new one, never
// a partial one, even if the writer is killed.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mla/core/error.hpp"
#include "mla/core/shape.hpp"
#include "mla/io/atomic_file.hpp"

namespace mla {

static_assert(std::endian::native == std::endian::little,
              "mla: checkpoints are little-endian; a big-endian host would need byte swaps");

enum class DType { F32, F64, I32, I64 };

inline constexpr std::size_t dtype_size(DType t) {
  return t == DType::F32 || t == DType::I32 ? 4 : 8;
}
inline constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

/// One tensor of a parsed file: where its bytes are in the data section.
struct SafetensorsEntry {
  DType dtype = DType::F32;
  Shape shape;
  std::uint64_t begin = 0, end = 0;
};

/// A parsed, validated safetensors file held in memory.
struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::map<std::string, SafetensorsEntry> tensors;
  std::vector<std::byte> data;  // the data section

  [[nodiscard]] std::span<const std::byte> bytes(const SafetensorsEntry& e) const {
    return std::span<const std::byte>(data).subspan(e.begin, e.end - e.begin);
  }
};

/// A tensor to write: its bytes must be little-endian, row-major, shape.numel() * dtype size.
struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::span<const std::byte> bytes;
};

/// Largest header accepted: far above any real model's, far below a memory exhaustion.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100u << 20;

namespace detail {

[[noreturn]] inline void st_fail(const std::string& where, const std::string& what) {
  throw IoError(where + ": " + what);
}

inline DType parse_dtype(const std::string& where, const std::string& name, const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "F64") return DType::F64;
  if (s == "I32") return DType::I32;
  if (s == "I64") return DType::I64;
  st_fail(where, "tensor '" + name + "' has unsupported dtype '" + s + "'");
}

}  // namespace detail

/// Parses and validates a whole file image; `where` names it in errors.
inline SafetensorsFile parse_safetensors(std::span<const std::byte> file, const std::string& where) {
  using detail::st_fail;
  if (file.size() < 8) st_fail(where, "truncated: " + std::to_string(file.size()) + " bytes, no header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(file[static_cast<std::size_t>(i)]);
  if (n > kMaxSafetensorsHeader) st_fail(where, "header length " + std::to_string(n) + " exceeds the limit");
  if (n > file.size() - 8) {
    st_fail(where, "truncated: header length " + std::to_string(n) + " but only " +
                       std::to_string(file.size() - 8) + " bytes follow");
  }
  const auto* text = reinterpret_cast<const char*>(file.data() + 8);
  nlohmann::json header = nlohmann::json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) st_fail(where, "header is not valid JSON");
  if (!header.is_object()) st_fail(where, "header is not a JSON object");

  SafetensorsFile out;
  const std::uint64_t data_size = file.size() - 8 - n;
  std::vector<std::pair<std::uint64_t, std::string>> order;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) st_fail(where, "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) st_fail(where, "__metadata__." + k + " is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || value.size() != 3 || !value.contains("dtype") ||
        !value.contains("shape") || !value.contains("data_offsets")) {
      st_fail(where, "tensor '" + name + "' needs exactly dtype, shape and data_offsets");
    }
    const auto& dt = value["dtype"];
    const auto& sh = value["shape"];
    const auto& off = value["data_offsets"];
    if (!dt.is_string()) st_fail(where, "tensor '" + name + "': dtype is not a string");
    if (!sh.is_array() || sh.size() > static_cast<std::size_t>(kMaxRank)) {
      st_fail(where, "tensor '" + name + "': shape is not an array of at most " +
                         std::to_string(kMaxRank) + " sizes");
    }
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      st_fail(where, "tensor '" + name + "': data_offsets is not [begin, end]");
    }
    SafetensorsEntry e;
    e.dtype = detail::parse_dtype(where, name, dt.get<std::string>());
    std::uint64_t bytes = dtype_size(e.dtype);
    for (const auto& d : sh) {
      if (!d.is_number_unsigned()) st_fail(where, "tensor '" + name + "': a size is not a non-negative integer");
      const std::uint64_t v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          (v != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / v)) {
        st_fail(where, "tensor '" + name + "': shape size overflows");
      }
      bytes *= v;
      e.shape = e.shape.appended(static_cast<std::int64_t>(v));
    }
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    if (e.end < e.begin || e.end > data_size) {
      st_fail(where, "tensor '" + name + "': data_offsets [" + std::to_string(e.begin) + ", " +
                         std::to_string(e.end) + ") outside the data section of " +
                         std::to_string(data_size) + " bytes");
    }
    if (e.end - e.begin != bytes) {
      st_fail(where, "tensor '" + name + "': " + std::to_string(e.end - e.begin) +
                         " bytes for shape " + e.shape.str() + " of " + dt.get<std::string>());
    }
    order.emplace_back(e.begin, name);
    out.tensors.emplace(name, e);
  }
  // The entries must tile the data section: sorted by offset, each starts where the last ended.
  std::sort(order.begin(), order.end());
  std::uint64_t cursor = 0;
  for (const auto& [begin, name] : order) {
    const SafetensorsEntry& e = out.tensors.at(name);
    if (e.begin != cursor) {
      st_fail(where, "tensor '" + name + "' starts at " + std::to_string(e.begin) + ", expected " +
                         std::to_string(cursor) + " (gap or overlap)");
    }
    cursor = e.end;
  }
  if (cursor != data_size) {
    st_fail(where, "file length " + std::to_string(file.size()) + " does not match its header (" +
                       std::to_string(8 + n + cursor) + " expected)");
  }
  out.data.assign(file.begin() + static_cast<std::ptrdiff_t>(8 + n), file.end());
  return out;
}

/// Reads and validates `path`.
inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string where = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::st_fail(where, std::string("cannot open: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  std::vector<std::byte> image(size);
  if (!in.read(reinterpret_cast<char*>(image.data()), static_cast<std::streamsize>(size))) {
    detail::st_fail(where, "read failed");
  }
  return parse_safetensors(image, where);
}

/// Writes `tensors` and `metadata` to `path` atomically (temporary file, fsync, rename).
inline void write_safetensors(const std::filesystem::path& path,
                              std::span<const SafetensorsTensor> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string where = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.shape.numel()) * dtype_size(t.dtype);
    if (bytes != t.bytes.size()) {
      detail::st_fail(where, "tensor '" + t.name + "': " + std::to_string(t.bytes.size()) +
                                 " bytes given for shape " + t.shape.str());
    }
    std::vector<std::int64_t> shape;
    for (int i = 0; i < t.shape.rank(); ++i) shape.push_back(t.shape[i]);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<std::byte> image(8 + text.size() + static_cast<std::size_t>(offset));
  for (int i = 0; i < 8; ++i) image[static_cast<std::size_t>(i)] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);
  std::memcpy(image.data() + 8, text.data(), text.size());
  std::size_t at = 8 + text.size();
  for (const SafetensorsTensor& t : tensors) {
    std::memcpy(image.data() + at, t.bytes.data(), t.bytes.size());
    at += t.bytes.size();
  }
  write_file_atomically(path, image);
}

}  // namespace mla
