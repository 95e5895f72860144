// mla/autodiff/ops/rope.hpp — rotary position embedding (rotate-half / GPT-NeoX form, docs/design.md
// §4) on the last axis.
//
//   rope(x [B, T, R] | [B, T, H, R], position_offset = 0, theta = 10000)
//   rope(x, batch_offsets [B], theta = 10000)        // ragged decoding: one start per batch row
//   token t of batch row b sits at position offset_b + t; every head is rotated the same way.
//
// The forward saves a table of cos and sin ([P, T, R], P = 1 or B, computed in double) and the
// backward rotates dout back with it: no sin/cos is evaluated twice.
//
// Legend: B batch, T time, H heads, R rotated size (even).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/cpu/rope.hpp"

namespace mla {
namespace detail {

/// Rotates x by positions start[p] + t, p = 0 when P == 1, else p = b.
template <class T, Device D>
Var<T, D> rope_impl(const Var<T, D>& x, const std::int64_t* start, std::int64_t P, double theta) {
  const Shape& s = x.shape();
  if (s.rank() != 3 && s.rank() != 4) {
    throw ShapeError("rope: x must be [B, T, R] or [B, T, H, R], got " + s.str());
  }
  const std::int64_t B = s[0], Tn = s[1], H = s.rank() == 4 ? s[2] : 1, R = s[-1];
  if (R % 2 != 0) {
    throw ShapeError("rope: the rotated size R = " + std::to_string(R) + " (last axis of " +
                     s.str() + ") must be even");
  }
  if (!(theta > 0.0) || !std::isfinite(theta)) {
    throw ArgumentError("rope: theta must be positive and finite, got " + std::to_string(theta));
  }
  for (std::int64_t p = 0; p < P; ++p) {
    if (start[p] < 0) {
      throw ArgumentError("rope: position offset " + std::to_string(start[p]) +
                          (P > 1 ? " of batch row " + std::to_string(p) : std::string()) +
                          " is negative");
    }
  }

  Tape<T, D>* tape = common_tape("rope", x);
  Tensor<T, D> table = new_output(tape, Shape{P, Tn, R});  // (P, T, R): cos | sin
  kernels::rope_table(D{}, start, P, Tn, R, theta, table.data());
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

}  // namespace detail

/// Every batch row starts at `position_offset` (0 for training; the cache length when decoding).
template <class T, Device D>
Var<T, D> rope(const Var<T, D>& x, std::int64_t position_offset = 0, double theta = 10000.0) {
  return detail::rope_impl(x, &position_offset, 1, theta);
}

/// Batch row b starts at `batch_offsets[b]` (ragged decoding); one offset per batch row.
template <class T, Device D>
Var<T, D> rope(const Var<T, D>& x, std::span<const std::int64_t> batch_offsets,
               double theta = 10000.0) {
  const Shape& s = x.shape();
  if ((s.rank() == 3 || s.rank() == 4) && static_cast<std::int64_t>(batch_offsets.size()) != s[0]) {
    throw ShapeError("rope: " + std::to_string(batch_offsets.size()) + " batch offsets for x " +
                     s.str() + " (one per batch row, B = " + std::to_string(s[0]) + ")");
  }
  return detail::rope_impl(x, batch_offsets.data(), static_cast<std::int64_t>(batch_offsets.size()),
                           theta);
}

}  // namespace mla
