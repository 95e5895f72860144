// mla/attention/common.hpp — internal: what the attention layers share.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "mla/nn/layers.hpp"

namespace mla::detail {

/// Rotates x [B, T, (H,) R] by RoPE: from position 0 (training, `starts` empty) or from
/// starts[b] in row b (a cached step).
template <class T, Device D>
Var<T, D> rotate(const Var<T, D>& x, std::span<const std::int64_t> starts, double theta) {
  return starts.empty() ? rope(x, std::int64_t{0}, theta) : rope(x, starts, theta);
}

/// Keys valid in each row once T new tokens are appended: starts[b] + T, in a buffer kept
/// across calls (no allocation in steady decoding).
inline const std::vector<std::int64_t>& cached_lengths(std::span<const std::int64_t> starts, std::int64_t Tn) {
  thread_local std::vector<std::int64_t> lengths;
  lengths.assign(starts.begin(), starts.end());
  for (auto& l : lengths) l += Tn;
  return lengths;
}

/// Attention output o [B, T, H, Dv] -> merged heads -> o_proj -> [B, T, D].
template <class T, Device D>
Var<T, D> project_heads(Tape<T, D>& tape, const ParameterStore<T, D>& store, std::int32_t o_proj,
                        const Var<T, D>& o) {
  const Shape& s = o.shape();
  return nn::linear(reshape(o, Shape{s[0], s[1], s[2] * s[3]}), nn::bind(tape, store, o_proj));
}

}  // namespace mla::detail
