// mla/train/token_file.hpp — llm.c token files (docs/design.md §6), and the windows over them.
//
// Format: 256 little-endian int32 (header[0] = 20240520 magic, header[1] = 1 for uint16
// tokens, header[2] = token count), then the tokens as little-endian uint16. The reader checks
// the magic, the version, and that the file is exactly 1024 + 2 * count bytes; with a vocab
// size it also checks every token id. The writer is atomic (temporary file, fsync, rename).
#pragma once


#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "mla/core/tensor.hpp"
#include "mla/io/atomic_file.hpp"
#include "mla/io/safetensors.hpp"

namespace mla {

inline constexpr std::int32_t kTokenFileMagic = 20240520;
inline constexpr std::int32_t kTokenFileVersion = 1;
inline constexpr std::size_t kTokenFileHeader = 256 * sizeof(std::int32_t);

/// Parses a token file image; `vocab_size` > 0 also rejects any id >= vocab_size.
inline std::vector<std::uint16_t> parse_tokens(std::span<const std::byte> file, const std::string& where,
                                               std::int64_t vocab_size = 0) {
  auto fail = [&](const std::string& what) { throw IoError(where + ": " + what); };
  if (file.size() < kTokenFileHeader) {
    fail("truncated: " + std::to_string(file.size()) + " bytes, shorter than the 1024-byte header");
  }
  auto header = [&](int i) {
    std::uint32_t v = 0;
    for (int b = 3; b >= 0; --b) v = (v << 8) | std::to_integer<std::uint32_t>(file[static_cast<std::size_t>(4 * i + b)]);
    return static_cast<std::int32_t>(v);
  };
  if (header(0) != kTokenFileMagic) fail("wrong magic " + std::to_string(header(0)) + " (expected 20240520): not a token file");
  if (header(1) != kTokenFileVersion) fail("unsupported version " + std::to_string(header(1)) + " (expected 1, uint16 tokens)");
  const std::int64_t count = header(2);
  if (count < 0) fail("negative token count " + std::to_string(count));
  const std::uint64_t expected = kTokenFileHeader + 2 * static_cast<std::uint64_t>(count);
  if (file.size() != expected) {
    fail("size " + std::to_string(file.size()) + " bytes does not match its header (" + std::to_string(count) +
         " tokens: " + std::to_string(expected) + " bytes)");
  }
  std::vector<std::uint16_t> tokens(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::size_t at = kTokenFileHeader + 2 * static_cast<std::size_t>(i);
    tokens[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(std::to_integer<unsigned>(file[at]) |
                                                                     (std::to_integer<unsigned>(file[at + 1]) << 8));
    if (vocab_size > 0 && tokens[static_cast<std::size_t>(i)] >= vocab_size) {
      fail("token " + std::to_string(tokens[static_cast<std::size_t>(i)]) + " at position " + std::to_string(i) +
           " is not below the vocabulary size " + std::to_string(vocab_size));
    }
  }
  return tokens;
}

inline std::vector<std::uint16_t> read_tokens(const std::filesystem::path& path, std::int64_t vocab_size = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open: " + std::strerror(errno));
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_tokens(std::as_bytes(std::span<const char>(raw)), path.string(), vocab_size);
}

/// Writes `tokens` to `path` atomically.
inline void write_tokens(const std::filesystem::path& path, std::span<const std::uint16_t> tokens) {
  std::vector<std::byte> image(kTokenFileHeader + 2 * tokens.size());
  auto put32 = [&](std::size_t at, std::uint32_t v) {
    for (int b = 0; b < 4; ++b) image[at + static_cast<std::size_t>(b)] = static_cast<std::byte>((v >> (8 * b)) & 0xff);
  };
  put32(0, kTokenFileMagic);
  put32(4, kTokenFileVersion);
  put32(8, static_cast<std::uint32_t>(tokens.size()));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    image[kTokenFileHeader + 2 * i] = static_cast<std::byte>(tokens[i] & 0xff);
    image[kTokenFileHeader + 2 * i + 1] = static_cast<std::byte>(tokens[i] >> 8);
  }
  write_file_atomically(path, image);
}

/// Number of evaluation windows of length T over n tokens (docs/design.md §6): every k with
/// k*T + T + 1 <= n.
inline std::int64_t eval_windows(std::int64_t n, std::int64_t T) { return n < T + 1 ? 0 : (n - 1) / T; }

/// Fills ids and targets [B, T] from windows first..first+B-1 (inputs [kT, kT+T), targets shifted by one).
inline void fill_eval_batch(std::span<const std::uint16_t> tokens, std::int64_t first, std::int64_t T,
                            Tensor<std::int32_t>& ids, Tensor<std::int32_t>& targets) {
  const std::int64_t B = ids.shape()[0];
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t start = (first + b) * T;
    for (std::int64_t t = 0; t < T; ++t) {
      ids.at(b, t) = tokens[static_cast<std::size_t>(start + t)];
      targets.at(b, t) = tokens[static_cast<std::size_t>(start + t + 1)];
    }
  }
}

}  // namespace mla
