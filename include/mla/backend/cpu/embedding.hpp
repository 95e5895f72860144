// mla/backend/cpu/embedding.hpp — token embedding: gather rows of a table by id, and the
// scatter-add of its backward. Forward and backward side by side.
//
// Legend: N ids (every position of the ids tensor, flattened), V vocab (rows of the table),
// C channels (the row length).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {

/// Flat index of the first id outside [0, V), or -1 when every id is valid.
inline std::int64_t embedding_first_bad_id(Cpu, const std::int32_t* ids /* (N) */, std::int64_t N,
                                           std::int64_t V) {
  for (std::int64_t n = 0; n < N; ++n) {
    if (ids[n] < 0 || ids[n] >= V) return n;
  }
  return -1;
}

/// The id at flat index `n` (host read, for error messages).
inline std::int32_t embedding_id_at(Cpu, const std::int32_t* ids, std::int64_t n) { return ids[n]; }

/// out[n, :] = weight[ids[n], :]. Ids must already be checked.
template <class T>
void embedding_forward(Cpu, const T* weight /* (V, C) */, const std::int32_t* ids /* (N) */,
                       T* out /* (N, C) */, std::int64_t N, std::int64_t C) {
  detail::parallel_for(N, N * C > detail::kParallelGrain, [&](std::int64_t n) {
    std::memcpy(out + n * C, weight + static_cast<std::int64_t>(ids[n]) * C,
                static_cast<std::size_t>(C) * sizeof(T));
  });
}

/// dweight[ids[n], :] += dout[n, :] for n = 0, 1, ..., N-1 in that order. Repeated ids
/// accumulate. Each thread owns one band of columns (whole cache lines) and walks all ids in
/// order, so every element of dweight sums its terms in id order whatever the thread count:
/// the result is deterministic and needs no atomics. One thread walks whole rows.
template <class T>
void embedding_backward(Cpu, const std::int32_t* ids /* (N) */, const T* dout /* (N, C) */,
                        T* dweight /* (V, C) */, std::int64_t N, std::int64_t C) {
  constexpr std::int64_t kLine = 64 / sizeof(T);  // band widths are multiples of a cache line
  const std::int64_t lines = (C + kLine - 1) / kLine;
  const std::int64_t bands =
      N * C > detail::kParallelGrain ? std::min<std::int64_t>(num_threads(), lines) : 1;
  const std::int64_t width = (lines + bands - 1) / bands * kLine;  // columns per band
  detail::parallel_for(bands, bands > 1, [&](std::int64_t band) {
    const std::int64_t c0 = std::min(band * width, C);
    const std::int64_t c1 = std::min(c0 + width, C);
    for (std::int64_t n = 0; n < N; ++n) {
      const T* g = dout + n * C;
      T* d = dweight + static_cast<std::int64_t>(ids[n]) * C;
      for (std::int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  });
}

}  // namespace mla::kernels
