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

#include <cstdint>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

/// y[i] = keep(i) ? x[i] / (1 - p) : 0.
template <class T>
void dropout_forward(Cpu, const T* x,  // (n)
                     T* y,             // (n)
                     std::int64_t n, T p, std::uint64_t seed) {
  const std::uint64_t key = dropout_hash::key(seed);
  const std::uint64_t threshold = dropout_hash::threshold(static_cast<double>(p));
  const T scale = T(1) / (T(1) - p);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    const bool keep = dropout_hash::keep(key, static_cast<std::uint64_t>(i), threshold);
    y[i] = keep ? x[i] * scale : T(0);
  });
}

/// dx[i] += keep(i) ? dy[i] / (1 - p) : 0, with the mask recomputed from (seed, i).
template <class T>
void dropout_backward(Cpu, const T* dy,  // (n)
                      T* dx,             // (n)
                      std::int64_t n, T p, std::uint64_t seed) {
  const std::uint64_t key = dropout_hash::key(seed);
  const std::uint64_t threshold = dropout_hash::threshold(static_cast<double>(p));
  const T scale = T(1) / (T(1) - p);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    if (dropout_hash::keep(key, static_cast<std::uint64_t>(i), threshold)) dx[i] += dy[i] * scale;
  });
}

}  // namespace mla::kernels
