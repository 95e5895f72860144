// mla/autodiff/ops/rope.hpp — rotary position embedding (rotate-half / GPT-NeoX form, docs/design.md
// §4) on the last axis.
//
//   rope(x [B, T, R] | [B, T, H, R], position_offset = 0, theta = 10000)
//   rope(x, batch_offsets [B], theta = 10000)        // ragged decoding: one start per batch row
//   rope(x, starts int32 [B] on the device, theta)   // the same, positions already uploaded
//   token t of batch row b sits at position offset_b + t; every head is rotated the same way.
//
// The forward saves a table of cos and sin ([P, T, R], P = 1 or B, computed in double) and the
// backward rotates dout back with it: no sin/cos is evaluated twice.
//
// Legend: B batch, T time, H heads, R rotated size (even).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

/// Rotates x by positions base + start[p] + t (start: int32 [P] in device memory, or null for
/// 0), p = 0 when P == 1, else p = b.
template <class T, Device D>
Var<T, D> rope_impl(const Var<T, D>& x, const std::int32_t* start, std::int64_t base, std::int64_t P,
                    double theta) {
  const Shape& s = x.shape();
  const std::int64_t B = s[0], Tn = s[1], H = s.rank() == 4 ? s[2] : 1, R = s[-1];
  Tape<T, D>* tape = common_tape("rope", x);
  Tensor<T, D> table = new_output(tape, Shape{P, Tn, R});  // (P, T, R): cos | sin
  kernels::rope_table(D{}, start, base, P, Tn, R, theta, table.data());
  Tensor<T, D> out = new_output(tape, s);
  kernels::rope_forward(D{}, x.value().data(), table.data(), out.data(), B, Tn, H, R, P);
  if (!records(x)) return unrecorded(out, tape);
  return tape->record(
      out, [table, ix = x.node(), B, Tn, H, R, P](Tape<T, D>& t, const Tensor<T, D>& dout) {
        if (const auto dx = t.grad_target(ix)) {
          kernels::rope_backward(D{}, table.data(), dout.data(), dx.grad.data(), B, Tn, H, R, P, dx.accumulate);
        }
      });
}

/// Checks x's shape and theta.
inline void check_rope(const Shape& s, double theta) {
  if (s.rank() != 3 && s.rank() != 4) {
    throw ShapeError("rope: x must be [B, T, R] or [B, T, H, R], got " + s.str());
  }
  if (s[-1] % 2 != 0) {
    throw ShapeError("rope: the rotated size R = " + std::to_string(s[-1]) + " (last axis of " + s.str() +
                     ") must be even");
  }
  if (!(theta > 0.0) || !std::isfinite(theta)) {
    throw ArgumentError("rope: theta must be positive and finite, got " + std::to_string(theta));
  }
}

/// Throws ArgumentError for an offset that is negative or does not fit in 32 bits.
inline void check_offsets(std::span<const std::int64_t> offsets) {
  const std::int64_t P = static_cast<std::int64_t>(offsets.size());
  for (std::int64_t p = 0; p < P; ++p) {
    const std::int64_t o = offsets[static_cast<std::size_t>(p)];
    if (o < 0 || o > std::numeric_limits<std::int32_t>::max()) {
      throw ArgumentError("rope: position offset " + std::to_string(o) +
                          (P > 1 ? " of batch row " + std::to_string(p) : std::string()) +
                          (o < 0 ? " is negative" : " does not fit in 32 bits"));
    }
  }
}

/// Host offsets checked and copied to device memory as int32 (from the tape's arena when x is
/// on a tape), a chunk at a time through the stack.
template <class T, Device D>
Tensor<std::int32_t, D> device_offsets(const Var<T, D>& x, std::span<const std::int64_t> offsets) {
  check_offsets(offsets);
  const std::int64_t P = static_cast<std::int64_t>(offsets.size());
  Tensor<std::int32_t, D> dev = x.tape() ? x.tape()->template empty_as<std::int32_t>(Shape{P})
                                         : Tensor<std::int32_t, D>::empty(Shape{P});
  constexpr std::int64_t kChunk = 64;
  std::int32_t host[kChunk];
  for (std::int64_t p0 = 0; p0 < P; p0 += kChunk) {
    const std::int64_t n = std::min(kChunk, P - p0);
    for (std::int64_t p = 0; p < n; ++p) host[p] = static_cast<std::int32_t>(offsets[static_cast<std::size_t>(p0 + p)]);
    D::copy_from_host(dev.data() + p0, host, static_cast<std::size_t>(n) * sizeof(std::int32_t));
  }
  return dev;
}

}  // namespace detail

/// Every batch row starts at `position_offset` (0 for training; the cache length when decoding).
template <class T, Device D>
Var<T, D> rope(const Var<T, D>& x, std::int64_t position_offset = 0, double theta = 10000.0) {
  detail::check_rope(x.shape(), theta);
  detail::check_offsets(std::span<const std::int64_t>(&position_offset, 1));
  return detail::rope_impl(x, static_cast<const std::int32_t*>(nullptr), position_offset, 1, theta);
}

/// Batch row b starts at `batch_offsets[b]` (ragged decoding); one offset per batch row.
template <class T, Device D>
Var<T, D> rope(const Var<T, D>& x, std::span<const std::int64_t> batch_offsets,
               double theta = 10000.0) {
  const Shape& s = x.shape();
  detail::check_rope(s, theta);
  if (static_cast<std::int64_t>(batch_offsets.size()) != s[0]) {
    throw ShapeError("rope: " + std::to_string(batch_offsets.size()) + " batch offsets for x " +
                     s.str() + " (one per batch row, B = " + std::to_string(s[0]) + ")");
  }
  const auto starts = detail::device_offsets(x, batch_offsets);
  return detail::rope_impl(x, starts.data(), 0, s[0], theta);
}

/// Batch row b starts at `starts[b]`, int32 [B] already in the device's memory (a cached
/// step's positions, uploaded once for every layer). The offsets are the caller's to check.
template <class T, Device D>
Var<T, D> rope(const Var<T, D>& x, const Tensor<std::int32_t, D>& starts, double theta = 10000.0) {
  const Shape& s = x.shape();
  detail::check_rope(s, theta);
  if (starts.shape() != Shape{s[0]}) {
    throw ShapeError("rope: starts " + starts.shape().str() + " for x " + s.str() + " (one per batch row)");
  }
  return detail::rope_impl(x, starts.data(), 0, s[0], theta);
}

}  // namespace mla
