// mla/backend/cuda/elementwise.hpp — element-wise kernels on the Thrust/CUDA device:
// arithmetic with a broadcast row, scaling, activations, sums. Forward and backward side by
// side, with the CPU backend's semantics (mla/backend/cpu/elementwise.hpp).
//
// Legend: R rows, C columns (the last axis); a "row" operand is one vector of C values
// broadcast over every row; n elements of a tensor seen flat.
//
// One work item per element, except the column sums of a broadcast row's gradient: one work
// item per column, adding the rows in order, so the result is deterministic (no atomics) and
// sums in the CPU backend's order.
#pragma once

#include <cstdint>

#include <thrust/functional.h>
#include <thrust/transform_reduce.h>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/launch.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_detail {

template <class T>
struct BinaryForward {
  Binary op;
  const T* a;  // (R, C)
  const T* b;  // (R, C), or (C) when b_row
  bool b_row;
  T* out;  // (R, C)
  std::int64_t C;
  MLA_HD void operator()(std::int64_t i) const {
    const T bi = b_row ? b[i % C] : b[i];
    switch (op) {
      case Binary::Add: out[i] = a[i] + bi; break;
      case Binary::Sub: out[i] = a[i] - bi; break;
      case Binary::Mul: out[i] = a[i] * bi; break;
    }
  }
};

/// da (+)= dout, times b for Mul.
template <class T>
struct BinaryGradA {
  bool mul;
  const T* b;  // (R, C), or (C) when b_row
  bool b_row;
  const T* dout;
  T* da;
  std::int64_t C;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const T g = mul ? dout[i] * (b_row ? b[i % C] : b[i]) : dout[i];
    da[i] = (accumulate ? da[i] : T(0)) + g;
  }
};

/// db (+)= sign * dout, or dout * a for Mul (b of a's shape).
template <class T>
struct BinaryGradB {
  bool mul;
  const T* a;
  const T* dout;
  T* db;
  T sign;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const T g = mul ? dout[i] * a[i] : sign * dout[i];
    db[i] = (accumulate ? db[i] : T(0)) + g;
  }
};

/// Column c: sums[c] (+)= sum over rows r in order of sign * dout[r, c] (* w[r, c]).
template <class T>
struct ColumnSums {
  const T* dout;  // (R, C)
  const T* w;     // (R, C) or null
  T* sums;        // (C)
  T sign;
  std::int64_t R, C;
  bool accumulate;
  MLA_HD void operator()(std::int64_t c) const {
    T acc = accumulate ? sums[c] : T(0);
    if (w) {
      for (std::int64_t r = 0; r < R; ++r) acc += sign * dout[r * C + c] * w[r * C + c];
    } else {
      for (std::int64_t r = 0; r < R; ++r) acc += sign * dout[r * C + c];
    }
    sums[c] = acc;
  }
};

template <class T>
struct BroadcastRows {
  const T* row;  // (C)
  T* out;        // (R, C)
  std::int64_t C;
  MLA_HD void operator()(std::int64_t i) const { out[i] = row[i % C]; }
};

template <class T>
struct ScaleForward {
  const T* x;
  T s;
  T* out;
  MLA_HD void operator()(std::int64_t i) const { out[i] = s * x[i]; }
};

/// dx (+)= s * dout, with s given, or read from device memory (s_at[0]) when s_at is set.
template <class T>
struct ScaleBackward {
  T s;
  const T* s_at;  // (1) or null
  const T* dout;
  T* dx;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const T f = s_at ? s_at[0] : s;
    if (accumulate) {
      dx[i] += f * dout[i];
    } else {
      dx[i] = f * dout[i];
    }
  }
};

template <class T>
struct ReluForward {
  const T* x;
  T* out;
  MLA_HD void operator()(std::int64_t i) const {
    const T xi = x[i];
    out[i] = xi > T(0) ? xi : T(0);
  }
};

template <class T>
struct ReluBackward {
  const T* x;
  const T* dout;
  T* dx;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const T g = x[i] > T(0) ? dout[i] : T(0);
    if (accumulate) {
      dx[i] += g;
    } else {
      dx[i] = g;
    }
  }
};

template <class T>
struct GeluForward {
  const T* x;
  T* out;
  MLA_HD void operator()(std::int64_t i) const {
    const T inv_sqrt2 = T(0.70710678118654752440);
    out[i] = T(0.5) * x[i] * (T(1) + erf_of(x[i] * inv_sqrt2));
  }
};

template <class T>
struct GeluBackward {
  const T* x;
  const T* dout;
  T* dx;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const T inv_sqrt2 = T(0.70710678118654752440);
    const T inv_sqrt2pi = T(0.39894228040143267794);
    const T cdf = T(0.5) * (T(1) + erf_of(x[i] * inv_sqrt2));
    const T pdf = inv_sqrt2pi * exp_of(T(-0.5) * x[i] * x[i]);
    dx[i] = (accumulate ? dx[i] : T(0)) + dout[i] * (cdf + x[i] * pdf);
  }
};

template <class T>
struct ToDouble {
  MLA_HD double operator()(T v) const { return static_cast<double>(v); }
};

/// dx[i] += s * dout[0], dout read in device memory.
template <class T>
struct FillBackward {
  const T* dout;  // (1)
  T s;
  T* dx;
  MLA_HD void operator()(std::int64_t i) const { dx[i] += s * dout[0]; }
};

template <class T>
struct Accumulate {
  const T* dout;
  T* dx;
  MLA_HD void operator()(std::int64_t i) const { dx[i] += dout[i]; }
};

}  // namespace cuda_detail

/// out[r, c] = a[r, c] (op) b[r, c], or b[c] when `b_row` (b broadcast over rows).
template <class T>
void binary_forward(Cuda, Binary op, const T* a, const T* b, bool b_row, T* out, std::int64_t R,
                    std::int64_t C) {
  cuda_detail::for_each_index("binary_forward", R * C,
                              cuda_detail::BinaryForward<T>{op, a, b, b_row, out, C});
}

/// sums[c] += dout[r, c] over the R rows, in row order, each term times w[r, c] when `w` is
/// given and times `sign` (1 or -1): one work item per column.
template <class T>
void accumulate_column_sums(Cuda, const T* dout, T* sums, std::int64_t R, std::int64_t C,
                            const T* w = nullptr, T sign = T(1)) {
  cuda_detail::for_each_index("accumulate_column_sums", C,
                              cuda_detail::ColumnSums<T>{dout, w, sums, sign, R, C, true});
}

/// da (+)= dout (*b for Mul); db (+)= dout (-dout for Sub, dout*a for Mul), summed over rows
/// when `b_row`. Either gradient pointer may be null (input needs no gradient). Each
/// `*_accumulate` false overwrites its gradient, the broadcast row's too (the op passes true
/// for it: a row's gradient sums over rows).
template <class T>
void binary_backward(Cuda, Binary op, const T* a, const T* b, bool b_row, const T* dout, T* da,
                     T* db, std::int64_t R, std::int64_t C, bool da_accumulate = true,
                     bool db_accumulate = true) {
  const bool mul = op == Binary::Mul;
  if (da) {
    cuda_detail::for_each_index("binary_backward", R * C,
                                cuda_detail::BinaryGradA<T>{mul, b, b_row, dout, da, C, da_accumulate});
  }
  if (!db) return;
  const T sign = op == Binary::Sub ? T(-1) : T(1);
  if (!b_row) {
    cuda_detail::for_each_index("binary_backward", R * C,
                                cuda_detail::BinaryGradB<T>{mul, a, dout, db, sign, db_accumulate});
    return;
  }
  cuda_detail::for_each_index(
      "binary_backward", C,
      cuda_detail::ColumnSums<T>{dout, mul ? a : nullptr, db, sign, R, C, db_accumulate});
}

/// out[r, :] = row for each of the R rows.
template <class T>
void broadcast_rows(Cuda, const T* row, T* out, std::int64_t R, std::int64_t C) {
  cuda_detail::for_each_index("broadcast_rows", R * C, cuda_detail::BroadcastRows<T>{row, out, C});
}

/// out = s * x over n elements; backward: dx += s * dout (= with accumulate false).
template <class T>
void scale_forward(Cuda, const T* x, T s, T* out, std::int64_t n) {
  cuda_detail::for_each_index("scale_forward", n, cuda_detail::ScaleForward<T>{x, s, out});
}
template <class T>
void scale_backward(Cuda, T s, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  cuda_detail::for_each_index("scale_backward", n,
                              cuda_detail::ScaleBackward<T>{s, nullptr, dout, dx, accumulate});
}
/// scale_backward with the factor in device memory, s[0], read by the kernel (no host sync).
template <class T>
void scale_by_backward(Cuda, const T* s /* (1) */, const T* dout, T* dx, std::int64_t n,
                       bool accumulate = true) {
  cuda_detail::for_each_index("scale_by_backward", n,
                              cuda_detail::ScaleBackward<T>{T(0), s, dout, dx, accumulate});
}

/// relu(x) = max(x, 0); backward passes dout where x > 0.
template <class T>
void relu_forward(Cuda, const T* x, T* out, std::int64_t n) {
  cuda_detail::for_each_index("relu_forward", n, cuda_detail::ReluForward<T>{x, out});
}
template <class T>
void relu_backward(Cuda, const T* x, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  cuda_detail::for_each_index("relu_backward", n,
                              cuda_detail::ReluBackward<T>{x, dout, dx, accumulate});
}

/// gelu(x) = x * Phi(x) with the exact normal CDF (PyTorch's default nn.GELU()).
template <class T>
void gelu_forward(Cuda, const T* x, T* out, std::int64_t n) {
  cuda_detail::for_each_index("gelu_forward", n, cuda_detail::GeluForward<T>{x, out});
}
/// d gelu / dx = Phi(x) + x * phi(x).
template <class T>
void gelu_backward(Cuda, const T* x, const T* dout, T* dx, std::int64_t n, bool accumulate = true) {
  cuda_detail::for_each_index("gelu_backward", n,
                              cuda_detail::GeluBackward<T>{x, dout, dx, accumulate});
}

/// Sum of n elements, accumulated in double (Thrust's reduction order, not index order; the
/// same on every run on one device), written to out (one element). Waits for the device: the
/// sum comes back to the host and goes out again.
template <class T>
void sum_forward(Cuda, const T* x, T* out, std::int64_t n) {
  double s = 0;
  gpu::launch("sum_forward", [&] {
    s = thrust::transform_reduce(gpu::policy(), x, x + n, cuda_detail::ToDouble<T>{}, 0.0,
                                 thrust::plus<double>());
  });
  const T v = static_cast<T>(s);
  Cuda::copy_from_host(out, &v, sizeof v);
}
/// dx += s * dout[0] for every element (sum: s = 1, mean: s = 1/n); dout[0] is read by the
/// kernel.
template <class T>
void fill_backward(Cuda, const T* dout, T s, T* dx, std::int64_t n) {
  cuda_detail::for_each_index("fill_backward", n, cuda_detail::FillBackward<T>{dout, s, dx});
}

/// dx += dout over n elements: the backward of every op that copies its input unchanged.
template <class T>
void accumulate(Cuda, const T* dout, T* dx, std::int64_t n) {
  cuda_detail::for_each_index("accumulate", n, cuda_detail::Accumulate<T>{dout, dx});
}

}  // namespace mla::kernels
