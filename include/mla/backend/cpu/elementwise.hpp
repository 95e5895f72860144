// mla/backend/cpu/elementwise.hpp — element-wise kernels: arithmetic with a broadcast row,
// scaling, activations. Forward and backward side by side.
//
// Legend: R rows, C columns (the last axis); a "row" operand is one vector of C values
// broadcast over every row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

/// out[r, c] = a[r, c] (op) b[r, c], or b[c] when `b_row` (b broadcast over rows).
template <class T>
void binary_forward(Cpu, Binary op, const T* a, const T* b, bool b_row, T* out, std::int64_t R,
                    std::int64_t C) {
  detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
    const T* ar = a + r * C;
    const T* br = b_row ? b : b + r * C;
    T* o = out + r * C;
    switch (op) {
      case Binary::Add: for (std::int64_t c = 0; c < C; ++c) o[c] = ar[c] + br[c]; break;
      case Binary::Sub: for (std::int64_t c = 0; c < C; ++c) o[c] = ar[c] - br[c]; break;
      case Binary::Mul: for (std::int64_t c = 0; c < C; ++c) o[c] = ar[c] * br[c]; break;
    }
  });
}

/// sums[c] += dout[r, c] over the R rows, in row order, each term times w[r, c] when `w` is
/// given and times `sign` (1 or -1): each thread owns bands of kBand columns and sums them in
/// registers (a wide band reads each row in long contiguous runs).
template <class T>
void accumulate_column_sums(Cpu, const T* dout, T* sums, std::int64_t R, std::int64_t C, const T* w = nullptr,
                            T sign = T(1)) {
  constexpr std::int64_t kBand = 128;
  const bool parallel = R * C > detail::kParallelGrain && C > kBand;
  detail::parallel_for((C + kBand - 1) / kBand, parallel, [=](std::int64_t band) {
    const std::int64_t c0 = band * kBand, width = std::min(kBand, C - c0);
    T acc[kBand];
    std::copy(sums + c0, sums + c0 + width, acc);
    for (std::int64_t r = 0; r < R; ++r) {
      const T* g = dout + r * C + c0;
      if (w) {
        const T* wr = w + r * C + c0;
        for (std::int64_t c = 0; c < width; ++c) acc[c] += sign * g[c] * wr[c];
      } else {
        for (std::int64_t c = 0; c < width; ++c) acc[c] += sign * g[c];
      }
    }
    std::copy(acc, acc + width, sums + c0);
  });
}

/// da += dout (*b for Mul); db += dout (-dout for Sub, dout*a for Mul), summed over rows when
/// `b_row`. Either gradient pointer may be null (input needs no gradient).
template <class T>
void binary_backward(Cpu, Binary op, const T* a, const T* b, bool b_row, const T* dout, T* da,
                     T* db, std::int64_t R, std::int64_t C, bool da_accumulate = true,
                     bool db_accumulate = true) {
  if (da) {
    detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
      const T* g = dout + r * C;
      const T* br = b_row ? b : b + r * C;
      T* d = da + r * C;
      if (op == Binary::Mul) {
        for (std::int64_t c = 0; c < C; ++c) d[c] = (da_accumulate ? d[c] : T(0)) + g[c] * br[c];
      } else {
        for (std::int64_t c = 0; c < C; ++c) d[c] = (da_accumulate ? d[c] : T(0)) + g[c];
      }
    });
  }
  if (!db) return;
  const T sign = op == Binary::Sub ? T(-1) : T(1);
  if (!b_row) {
    detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
      const T* g = dout + r * C;
      const T* ar = a + r * C;
      T* d = db + r * C;
      if (op == Binary::Mul) {
        for (std::int64_t c = 0; c < C; ++c) d[c] = (db_accumulate ? d[c] : T(0)) + g[c] * ar[c];
      } else {
        for (std::int64_t c = 0; c < C; ++c) d[c] = (db_accumulate ? d[c] : T(0)) + sign * g[c];
      }
    });
    return;
  }
  // A broadcast row's gradient: column sums over the rows (db must accumulate).
  accumulate_column_sums(Cpu{}, dout, db, R, C, op == Binary::Mul ? a : nullptr, sign);
}

/// out[r, :] = row for each of the R rows.
template <class T>
void broadcast_rows(Cpu, const T* row, T* out, std::int64_t R, std::int64_t C) {
  detail::parallel_for(R, R * C > detail::kParallelGrain,
                       [&](std::int64_t r) { std::copy(row, row + C, out + r * C); });
}

// The loops below read every operand unconditionally and keep their pointers in locals
// offset to the range: that is what the compiler vectorizes (a conditional load, or a pointer
// re-read from the closure after every store, keeps a loop scalar).

/// out = s * x over n elements; backward: dx += s * dout.
template <class T>
void scale_forward(Cpu, const T* x, T s, T* out, std::int64_t n) {
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    const T* in = x + b;
    T* o = out + b;
    for (std::int64_t i = 0; i < e - b; ++i) o[i] = s * in[i];
  });
}
template <class T>
void scale_backward(Cpu, T s, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    const T* g = dout + b;
    T* d = dx + b;
    if (accumulate) {
      for (std::int64_t i = 0; i < e - b; ++i) d[i] += s * g[i];
    } else {
      for (std::int64_t i = 0; i < e - b; ++i) d[i] = s * g[i];
    }
  });
}

/// scale_backward with the factor in memory (s[0]): a backward whose scale is an upstream
/// gradient, read where it lives (on a GPU, without a copy to the host).
template <class T>
void scale_by_backward(Cpu cpu, const T* s, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  scale_backward(cpu, s[0], dout, dx, n, accumulate);
}

/// relu(x) = max(x, 0); backward passes dout where x > 0.
template <class T>
void relu_forward(Cpu, const T* x, T* out, std::int64_t n) {
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    const T* in = x + b;
    T* o = out + b;
    for (std::int64_t i = 0; i < e - b; ++i) {
      const T xi = in[i];
      o[i] = xi > T(0) ? xi : T(0);
    }
  });
}
template <class T>
void relu_backward(Cpu, const T* x, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    const T* in = x + b;
    const T* g = dout + b;
    T* d = dx + b;
    if (accumulate) {
      for (std::int64_t i = 0; i < e - b; ++i) {
        const T gi = g[i];
        d[i] += in[i] > T(0) ? gi : T(0);
      }
    } else {
      for (std::int64_t i = 0; i < e - b; ++i) {
        const T gi = g[i];
        d[i] = in[i] > T(0) ? gi : T(0);
      }
    }
  });
}

/// gelu(x) = x * Phi(x) with the exact normal CDF (PyTorch's default nn.GELU()).
template <class T>
void gelu_forward(Cpu, const T* x, T* out, std::int64_t n) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    out[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * inv_sqrt2));
  });
}
/// d gelu / dx = Phi(x) + x * phi(x).
template <class T>
void gelu_backward(Cpu, const T* x, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  const T inv_sqrt2pi = T(0.39894228040143267794);
  detail::parallel_for(n, n > detail::kParallelGrain, [&](std::int64_t i) {
    const T cdf = T(0.5) * (T(1) + std::erf(x[i] * inv_sqrt2));
    const T pdf = inv_sqrt2pi * std::exp(T(-0.5) * x[i] * x[i]);
    dx[i] = (accumulate ? dx[i] : T(0)) + dout[i] * (cdf + x[i] * pdf);
  });
}

/// Sum of n elements in index order, accumulated in double; out is one element.
template <class T>
void sum_forward(Cpu, const T* x, T* out, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += x[i];
  *out = static_cast<T>(s);
}
/// dx += s * dout[0] for every element (sum: s = 1, mean: s = 1/n).
template <class T>
void fill_backward(Cpu, const T* dout, T s, T* dx, std::int64_t n) {
  const T g = s * dout[0];
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    T* d = dx + b;
    for (std::int64_t i = 0; i < e - b; ++i) d[i] += g;
  });
}

/// dx += dout over n elements: the backward of every op that copies its input unchanged.
template <class T>
void accumulate(Cpu, const T* dout, T* dx, std::int64_t n) {
  detail::parallel_ranges(n, n > detail::kParallelGrain, [=](std::int64_t b, std::int64_t e) {
    const T* g = dout + b;
    T* d = dx + b;
    for (std::int64_t i = 0; i < e - b; ++i) d[i] += g[i];
  });
}

}  // namespace mla::kernels
