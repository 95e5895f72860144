// mla/attention/common.hpp — internal: what the attention layers share.
#pragma once

#include <cstdint>
#include <span>

#include "mla/nn/layers.hpp"

namespace mla::detail {

/// Where a cached step's new tokens go: row b's T new tokens sit at positions starts[b] ..
/// starts[b] + T - 1, and once appended the row holds lengths[b] = starts[b] + T tokens. The
/// model fills it once per step: host values for its own control flow, device copies (int32)
/// for the kernels.
template <Device D>
struct StepPositions {
  std::span<const std::int64_t> starts;  // [B], host
  std::int64_t max_length = 0;           // the largest of the lengths
  Tensor<std::int32_t, D> device_starts;   // [B]
  Tensor<std::int32_t, D> device_lengths;  // [B]
};

/// Rotates x [B, T, (H,) R] by RoPE from position 0 (training).
template <class T, Device D>
Var<T, D> rotate(const Var<T, D>& x, double theta) {
  return rope(x, std::int64_t{0}, theta);
}
/// Rotates the new tokens x [B, T, (H,) R] of a cached step: row b from starts[b].
template <class T, Device D>
Var<T, D> rotate(const Var<T, D>& x, const StepPositions<D>& at, double theta) {
  return rope(x, at.device_starts, theta);
}

/// Attention output o [B, T, H, Dv] -> merged heads -> o_proj -> [B, T, D].
template <class T, Device D>
Var<T, D> project_heads(Tape<T, D>& tape, const ParameterStore<T, D>& store, std::int32_t o_proj,
                        const Var<T, D>& o) {
  const Shape& s = o.shape();
  return nn::linear(reshape(o, Shape{s[0], s[1], s[2] * s[3]}), nn::bind(tape, store, o_proj));
}

}  // namespace mla::detail
