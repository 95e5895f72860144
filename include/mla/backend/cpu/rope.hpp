// mla/backend/cpu/rope.hpp — rotary position embedding, rotate-half (GPT-NeoX) form
// (docs/design.md §4). Forward and backward side by side.
//
//   inv_freq[i] = theta^(-2i/R) for i < R/2,  angle = pos * inv_freq[i]
//   out[i]       = x[i]       * cos - x[i+R/2] * sin
//   out[i+R/2]   = x[i+R/2]   * cos + x[i]     * sin
// The backward is the inverse rotation (angle -> -angle) of dout.
//
// Legend: B batch, T time, H heads (1 for a [B, T, R] input), R rotated size (even),
// P rows of start positions (1: every batch row starts at the same position; B: one each).
// The forward first builds a table of cos and sin for every (start row, t, i) in double and
// stores it in T; the rotation reads it, and the backward reuses it, so cos/sin are
// evaluated once per position and frequency, never per head.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {

/// table[p, t, i] = cos((base + start[p] + t) * inv_freq[i]), table[p, t, R/2 + i] = sin(...),
/// angles and their cos/sin computed in double, then rounded to T. `start` may be null (every
/// row starts at `base`).
template <class T>
void rope_table(Cpu, const std::int32_t* start /* (P) or null */, std::int64_t base, std::int64_t P, std::int64_t Tn,
                std::int64_t R, double theta, T* table /* (P, T, R) */) {
  const std::int64_t half = R / 2;
  // The frequencies in blocks that fit on the stack (one block unless R > 512).
  constexpr std::int64_t kBlock = 256;
  for (std::int64_t i0 = 0; i0 < half; i0 += kBlock) {
    const std::int64_t i1 = std::min(half, i0 + kBlock);
    double f[kBlock];  // inv_freq[i0, i1)
    for (std::int64_t i = i0; i < i1; ++i) {
      f[i - i0] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(R));
    }
    const bool parallel = P * Tn * (i1 - i0) * 16 > detail::kParallelGrain;
    detail::parallel_for(P * Tn, parallel, [&](std::int64_t pt) {
      const std::int64_t row = start ? static_cast<std::int64_t>(start[pt / Tn]) : 0;
      const double pos = static_cast<double>(base + row + pt % Tn);
      T* c = table + pt * R;  // cos (R/2)
      T* s = c + half;        // sin (R/2)
      for (std::int64_t i = i0; i < i1; ++i) {
        const double angle = pos * f[i - i0];
        c[i] = static_cast<T>(std::cos(angle));
        s[i] = static_cast<T>(std::sin(angle));
      }
    });
  }
}

namespace detail {

/// The one loop of both directions: each (b, t, h) row [x1 | x2] of R values is turned by the
/// angles of its table row; Inverse turns back (the transpose). Accumulate adds into out.
template <bool Inverse, bool Accumulate, class T>
void rope_rotate(const T* x /* (B, T, H, R) */, const T* table /* (P, T, R) */, T* out /* (B, T, H, R) */,
                 std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t R, std::int64_t P) {
  const std::int64_t half = R / 2;
  parallel_for(B * Tn, B * Tn * H * R > kParallelGrain, [&](std::int64_t bt) {
    const std::int64_t b = bt / Tn, t = bt % Tn;
    const T* c = table + ((P == 1 ? 0 : b) * Tn + t) * R;
    const T* s = c + half;
    for (std::int64_t h = 0; h < H; ++h) {
      const T* x1 = x + (bt * H + h) * R;
      const T* x2 = x1 + half;
      T* o1 = out + (bt * H + h) * R;
      T* o2 = o1 + half;
      for (std::int64_t i = 0; i < half; ++i) {
        const T a = x1[i], e = x2[i];
        const T y1 = Inverse ? a * c[i] + e * s[i] : a * c[i] - e * s[i];
        const T y2 = Inverse ? e * c[i] - a * s[i] : e * c[i] + a * s[i];
        if constexpr (Accumulate) {
          o1[i] += y1;
          o2[i] += y2;
        } else {
          o1[i] = y1;
          o2[i] = y2;
        }
      }
    }
  });
}

}  // namespace detail

/// out = rotate(x) by the angles of `table`; batch row b uses table row (P == 1 ? 0 : b):
/// out[i] = x[i]*cos - x[i+R/2]*sin, out[i+R/2] = x[i+R/2]*cos + x[i]*sin. `out` may alias `x`.
template <class T>
void rope_forward(Cpu, const T* x /* (B, T, H, R) */, const T* table /* (P, T, R) */,
                  T* out /* (B, T, H, R) */, std::int64_t B, std::int64_t Tn, std::int64_t H,
                  std::int64_t R, std::int64_t P) {
  detail::rope_rotate<false, false>(x, table, out, B, Tn, H, R, P);
}

/// dx += rotate^-1(dout): dx[i] += dout[i]*cos + dout[i+R/2]*sin,
/// dx[i+R/2] += dout[i+R/2]*cos - dout[i]*sin (= with accumulate false).
template <class T>
void rope_backward(Cpu, const T* table /* (P, T, R) */, const T* dout /* (B, T, H, R) */,
                   T* dx /* (B, T, H, R) */, std::int64_t B, std::int64_t Tn, std::int64_t H,
                   std::int64_t R, std::int64_t P, bool accumulate = true) {
  if (accumulate) return detail::rope_rotate<true, true>(dout, table, dx, B, Tn, H, R, P);
  detail::rope_rotate<true, false>(dout, table, dx, B, Tn, H, R, P);
}

}  // namespace mla::kernels
