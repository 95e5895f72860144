// mla/train/batches.hpp — seeded random training windows over a token stream.
//
// Legend: N tokens in the stream, T window (sequence) length, B rows of a micro-batch.
//
// Row `row` of micro-batch `micro` of step `step` reads the window that starts at
//   s = window_start(seed, step, micro, row, N, T)   in [0, N - T - 1]
// with inputs tokens[s, s + T) and targets tokens[s + 1, s + T + 1). The start is a
// counter-based hash of (seed, step, micro, row): no RNG state is carried from one step to the
// next, so the data position of a run is just its step count, and a resumed run reads exactly
// the windows an uninterrupted one would. The hash is splitmix64's finalizer folded over the
// four counters, reduced modulo the number of valid starts (bias below range / 2^64).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "mla/core/error.hpp"
#include "mla/core/tensor.hpp"

namespace mla {

namespace detail {

/// splitmix64's output function: a bijection of 64-bit words with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace detail

/// A 64-bit hash of (seed, a, b, c): the same on every platform and compiler.
constexpr std::uint64_t counter_hash(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  std::uint64_t h = detail::mix64(seed);
  h = detail::mix64(h ^ a);
  h = detail::mix64(h ^ b);
  return detail::mix64(h ^ c);
}

/// Whether a stream of `n_tokens` holds at least one training window of length `T`.
constexpr bool has_training_window(std::int64_t n_tokens, std::int64_t T) { return T >= 1 && n_tokens >= T + 1; }

/// Start of the training window of (step, micro, row): in [0, n_tokens - T - 1].
inline std::int64_t window_start(std::uint64_t seed, std::int64_t step, std::int64_t micro, std::int64_t row,
                                 std::int64_t n_tokens, std::int64_t T) {
  if (!has_training_window(n_tokens, T)) {
    throw ArgumentError("window_start: " + std::to_string(n_tokens) + " tokens hold no window of " +
                        std::to_string(T) + " inputs and their targets (need at least " + std::to_string(T + 1) + ")");
  }
  const auto count = static_cast<std::uint64_t>(n_tokens - T);  // number of valid starts
  const std::uint64_t h = counter_hash(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(micro),
                                       static_cast<std::uint64_t>(row));
  return static_cast<std::int64_t>(h % count);
}

/// Fills ids and targets [B, T] with the windows of (step, micro, row = 0..B-1).
inline void fill_train_batch(std::span<const std::uint16_t> tokens, std::uint64_t seed, std::int64_t step,
                             std::int64_t micro, Tensor<std::int32_t>& ids, Tensor<std::int32_t>& targets) {
  const std::int64_t B = ids.shape()[0], T = ids.shape()[1];
  const auto n = static_cast<std::int64_t>(tokens.size());
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t start = window_start(seed, step, micro, b, n, T);
    for (std::int64_t t = 0; t < T; ++t) {
      ids.at(b, t) = tokens[static_cast<std::size_t>(start + t)];
      targets.at(b, t) = tokens[static_cast<std::size_t>(start + t + 1)];
    }
  }
}

}  // namespace mla
