// libFuzzer target: the token-file reader (docs/design.md §6) must refuse any byte string with an
// IoError (or parse it), never crash, read out of bounds or overflow. Built by tests/fuzz/run.sh.
#include <cstddef>
#include <cstdint>
#include <span>

#include <mla/train/token_file.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
    const auto tokens = mla::parse_tokens(bytes, "fuzz", /*vocab_size=*/50000);
    (void)mla::eval_windows(static_cast<std::int64_t>(tokens.size()), 7);
  } catch (const mla::IoError&) {
  }
  return 0;
}
