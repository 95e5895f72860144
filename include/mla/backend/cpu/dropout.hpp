// mla/backend/cpu/dropout.hpp — inverted dropout with a counter-based mask, forward and
// backward side by side.
//
// Legend: n elements (the tensor seen flat), p drop probability in [0, 1).
//
// Element i is kept when u(seed, i) >= p, where u is a uniform in [0, 1) with 53 bits taken
// from SplitMix64's mixing function of (mix(seed) + (i + 1) * golden). The mask is thus a pure
// function of (seed, i): the same for any thread count, and the backward recomputes it rather
// than storing it. Kept elements are scaled by 1 / (1 - p), so the expectation is unchanged.
#pragma once

#include <cmath>
#include <cstdint>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {
namespace detail {

inline constexpr std::uint64_t kDropoutGolden = 0x9E3779B97F4A7C15ULL;

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
constexpr std::uint64_t dropout_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The per-seed key every element's counter is offset by.
constexpr std::uint64_t dropout_key(std::uint64_t seed) {
  return dropout_mix(seed + kDropoutGolden);
}

/// Integer form of "u >= p" on the 53-bit grid: keep when (hash >> 11) >= ceil(p * 2^53).
inline std::uint64_t dropout_threshold(double p) {
  return static_cast<std::uint64_t>(std::ceil(p * 9007199254740992.0));  // 2^53
}

constexpr bool dropout_keep(std::uint64_t key, std::uint64_t i, std::uint64_t threshold) {
  return (dropout_mix(key + (i + 1) * kDropoutGolden) >> 11) >= threshold;
}

}  // namespace detail

/// y[i] = keep(i) ? x[i] / (1 - p) : 0.
template <class T>
void dropout_forward(Cpu, const T* x,  // (n)
                     T* y,             // (n)
                     std::int64_t n, T p, std::uint64_t seed) {
  const std::uint64_t key = detail::dropout_key(seed);
  const std::uint64_t threshold = detail::dropout_threshold(static_cast<double>(p));
  const T scale = T(1) / (T(1) - p);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    const bool keep = detail::dropout_keep(key, static_cast<std::uint64_t>(i), threshold);
    y[i] = keep ? x[i] * scale : T(0);
  });
}

/// dx[i] += keep(i) ? dy[i] / (1 - p) : 0, with the mask recomputed from (seed, i).
template <class T>
void dropout_backward(Cpu, const T* dy,  // (n)
                      T* dx,             // (n)
                      std::int64_t n, T p, std::uint64_t seed) {
  const std::uint64_t key = detail::dropout_key(seed);
  const std::uint64_t threshold = detail::dropout_threshold(static_cast<double>(p));
  const T scale = T(1) / (T(1) - p);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    if (detail::dropout_keep(key, static_cast<std::uint64_t>(i), threshold)) dx[i] += dy[i] * scale;
  });
}

}  // namespace mla::kernels
