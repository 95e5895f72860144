// mla/backend/cuda/rope.hpp — rotary position embedding, rotate-half (GPT-NeoX) form, on the
// Thrust/CUDA device, with the CPU backend's semantics (mla/backend/cpu/rope.hpp). Forward and
// backward side by side.
//
//   inv_freq[i] = theta^(-2i/R) for i < R/2,  angle = pos * inv_freq[i]
//   out[i]       = x[i]       * cos - x[i+R/2] * sin
//   out[i+R/2]   = x[i+R/2]   * cos + x[i]     * sin
// The backward is the inverse rotation (angle -> -angle) of dout.
//
// Legend: B batch, T time, H heads (1 for a [B, T, R] input), R rotated size (even),
// P rows of start positions (1: every batch row starts at the same position; B: one each).
// The forward first builds a table of cos and sin for every (start row, t, i) in double and
// stores it in T; the rotation reads it, and the backward reuses it.
//
// One work item per (start row, t, i) of the table, and per (b, t, h, i) pair of rotated
// elements (i < R/2: the item reads and writes elements i and i + R/2 of its row).
#pragma once

#include <cmath>
#include <cstdint>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"

namespace mla::kernels {
namespace cuda_detail {

/// Item (p, t, i): table[p, t, i] = cos((start[p] + t) * theta^(-2i/R)), table[p, t, R/2 + i]
/// = sin(...), in double, rounded to T.
template <class T>
struct RopeTable {
  const std::int32_t* start;  // (P), or null: every row at `base`
  std::int64_t base, Tn, R;
  double theta;
  T* table;  // (P, T, R)
  MLA_HD void operator()(std::int64_t j) const {
    const std::int64_t half = R / 2;
    const std::int64_t pt = j / half, i = j % half;
    const std::int64_t row = start ? static_cast<std::int64_t>(start[pt / Tn]) : 0;
    const double pos = static_cast<double>(base + row + pt % Tn);
    const double angle = pos * ::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(R));
    table[pt * R + i] = static_cast<T>(::cos(angle));
    table[pt * R + half + i] = static_cast<T>(::sin(angle));
  }
};

/// Item (b, t, h, i): turns elements i and i + R/2 of x's row (b, t, h) by the angle of its
/// table row into out; `inverse` turns back (the transpose); `accumulate` adds into out.
template <class T>
struct RopeRotate {
  const T* x;      // (B, T, H, R)
  const T* table;  // (P, T, R)
  T* out;          // (B, T, H, R)
  std::int64_t Tn, H, R, P;
  bool inverse, accumulate;
  MLA_HD void operator()(std::int64_t j) const {
    const std::int64_t half = R / 2;
    const std::int64_t row = j / half, i = j % half;  // row = (b * T + t) * H + h
    const std::int64_t bt = row / H, b = bt / Tn, t = bt % Tn;
    const T* c = table + ((P == 1 ? 0 : b) * Tn + t) * R;
    const T* s = c + half;
    const T a = x[row * R + i], e = x[row * R + half + i];
    const T y1 = inverse ? a * c[i] + e * s[i] : a * c[i] - e * s[i];
    const T y2 = inverse ? e * c[i] - a * s[i] : e * c[i] + a * s[i];
    T* o = out + row * R;
    if (accumulate) {
      o[i] += y1;
      o[half + i] += y2;
    } else {
      o[i] = y1;
      o[half + i] = y2;
    }
  }
};

}  // namespace cuda_detail

/// table[p, t, i] = cos((base + start[p] + t) * inv_freq[i]), table[p, t, R/2 + i] = sin(...),
/// angles and their cos/sin computed in double, then rounded to T. `start` is device memory,
/// or null (every row starts at `base`).
template <class T>
void rope_table(Cuda, const std::int32_t* start /* (P) or null */, std::int64_t base, std::int64_t P,
                std::int64_t Tn, std::int64_t R, double theta, T* table /* (P, T, R) */) {
  cuda_detail::for_each_index("rope_table", P * Tn * (R / 2),
                              cuda_detail::RopeTable<T>{start, base, Tn, R, theta, table});
}

/// out = rotate(x) by the angles of `table`; batch row b uses table row (P == 1 ? 0 : b):
/// out[i] = x[i]*cos - x[i+R/2]*sin, out[i+R/2] = x[i+R/2]*cos + x[i]*sin. `out` may alias `x`.
template <class T>
void rope_forward(Cuda, const T* x /* (B, T, H, R) */, const T* table /* (P, T, R) */,
                  T* out /* (B, T, H, R) */, std::int64_t B, std::int64_t Tn, std::int64_t H,
                  std::int64_t R, std::int64_t P) {
  cuda_detail::for_each_index("rope_forward", B * Tn * H * (R / 2),
                              cuda_detail::RopeRotate<T>{x, table, out, Tn, H, R, P, false, false});
}

/// dx += rotate^-1(dout): dx[i] += dout[i]*cos + dout[i+R/2]*sin,
/// dx[i+R/2] += dout[i+R/2]*cos - dout[i]*sin (= with accumulate false).
template <class T>
void rope_backward(Cuda, const T* table /* (P, T, R) */, const T* dout /* (B, T, H, R) */,
                   T* dx /* (B, T, H, R) */, std::int64_t B, std::int64_t Tn, std::int64_t H,
                   std::int64_t R, std::int64_t P, bool accumulate = true) {
  cuda_detail::for_each_index(
      "rope_backward", B * Tn * H * (R / 2),
      cuda_detail::RopeRotate<T>{dout, table, dx, Tn, H, R, P, true, accumulate});
}

}  // namespace mla::kernels
