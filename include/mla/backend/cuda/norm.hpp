// mla/backend/cuda/norm.hpp — LayerNorm and RMSNorm over the last axis on the Thrust/CUDA
// device, forward and backward side by side, with the CPU backend's semantics
// (mla/backend/cpu/norm.hpp). The forward saves exactly what the backward needs: per row the
// mean and the reciprocal standard deviation `rstd`.
//
// Legend: R rows (every axis but the last, e.g. B*T), C channels (the last axis).
//
//   layernorm: y[r, c] = (x[r, c] - mean[r]) * rstd[r] * w[c] + b[c]
//              mean[r] = sum_c x[r, c] / C,  rstd[r] = 1 / sqrt(sum_c (x - mean)^2 / C + eps)
//   rmsnorm:   y[r, c] = x[r, c] * rstd[r] * w[c],  rstd[r] = 1 / sqrt(sum_c x^2 / C + eps)
//
// Row work (the forward, and dx of the backward): one work item per row, looping over its C
// channels. The weight and bias gradients are column sums over every row, computed without
// atomics and in a fixed order: rows are cut into chunks of kNormChunkRows rows, one work item
// per (chunk, column) sums its chunk's rows in order into its slice of a scratch buffer
// (chunks, P, C), then one work item per column adds the slices into dw / db in chunk order
// (the CPU backend's order, so both backends sum alike). When all rows fit in one chunk the
// sums go straight into dw / db and no scratch is needed (the caller asks `*_backward_scratch`
// how many elements to provide).
#pragma once

#include <cstdint>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_detail {

template <class T>
struct LayerNormForwardRow {
  const T *x, *w, *b;  // (R, C), (C), (C)
  T eps;
  T *y, *mean, *rstd;  // (R, C), (R) or null, (R) or null
  std::int64_t C;
  MLA_HD void operator()(std::int64_t r) const {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const T inv_c = T(1) / static_cast<T>(C);
    T sum = 0;
    for (std::int64_t c = 0; c < C; ++c) sum += xr[c];
    const T m = sum * inv_c;
    T sq = 0;  // biased variance, two passes: stable
    for (std::int64_t c = 0; c < C; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const T s = T(1) / sqrt_of(sq * inv_c + eps);
    for (std::int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
    if (mean) mean[r] = m;
    if (rstd) rstd[r] = s;
  }
};

/// dx[r, :] += rstd * (dn - mean_c(dn) - xhat * mean_c(dn * xhat)), dn = dy * w; for RMSNorm
/// (mean null) xhat = x * rstd and the mean_c(dn) term is left out.
template <class T>
struct NormBackwardRow {
  const T *dy, *x, *w, *mean, *rstd;  // (R, C), (R, C), (C), (R) or null, (R)
  T* dx;                              // (R, C)
  std::int64_t C;
  MLA_HD void operator()(std::int64_t r) const {
    const T* g = dy + r * C;
    const T* xr = x + r * C;
    T* d = dx + r * C;
    const T inv_c = T(1) / static_cast<T>(C);
    const T m = mean ? mean[r] : T(0), s = rstd[r];
    T dn_sum = 0, dn_xhat_sum = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const T dn = g[c] * w[c];
      dn_sum += dn;
      dn_xhat_sum += dn * ((xr[c] - m) * s);
    }
    const T dn_mean = mean ? dn_sum * inv_c : T(0);
    const T dn_xhat_mean = dn_xhat_sum * inv_c;
    for (std::int64_t c = 0; c < C; ++c) {
      const T xhat = (xr[c] - m) * s;
      d[c] += (g[c] * w[c] - dn_mean - xhat * dn_xhat_mean) * s;
    }
  }
};

/// Item (k, c): over chunk k's rows in order, pw[c] (+)= sum dy * xhat and pb[c] (+)= sum dy,
/// into slice k of the scratch (pw = out_w + k * stride), or straight into dw / db (one chunk,
/// accumulate). xhat = (x - mean) * rstd, or x * rstd when mean is null. out_w / out_b null:
/// that sum is not wanted.
template <class T>
struct NormColumnChunk {
  const T *dy, *x, *mean, *rstd;
  T *out_w, *out_b;
  std::int64_t stride, R, C;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const std::int64_t k = i / C, c = i % C;
    const std::int64_t r0 = k * kNormChunkRows;
    const std::int64_t r1 = r0 + kNormChunkRows < R ? r0 + kNormChunkRows : R;
    T* pw = out_w ? out_w + k * stride : nullptr;
    T* pb = out_b ? out_b + k * stride : nullptr;
    T aw = pw && accumulate ? pw[c] : T(0);
    T ab = pb && accumulate ? pb[c] : T(0);
    for (std::int64_t r = r0; r < r1; ++r) {
      const T g = dy[r * C + c];
      const T xhat = (x[r * C + c] - (mean ? mean[r] : T(0))) * rstd[r];
      aw += g * xhat;
      ab += g;
    }
    if (pw) pw[c] = aw;
    if (pb) pb[c] = ab;
  }
};

/// Column c: acc[c] += parts[k * stride + c] for chunks k in order.
template <class T>
struct AddChunkSlices {
  const T* parts;
  std::int64_t chunks, stride;
  T* acc;
  MLA_HD void operator()(std::int64_t c) const {
    T a = acc[c];
    for (std::int64_t k = 0; k < chunks; ++k) a += parts[k * stride + c];
    acc[c] = a;
  }
};

/// dw += sum_r dy * xhat and db += sum_r dy (either may be null), through `scratch`
/// (chunks, P, C) when there is more than one chunk (P = 2 with a bias, 1 without).
template <class T>
void norm_column_sums(const char* what, const T* dy, const T* x, const T* mean, const T* rstd,
                      T* dw, T* db, T* scratch, std::int64_t P, std::int64_t R, std::int64_t C) {
  if (!dw && !db) return;
  const std::int64_t chunks = norm_chunks(R);
  if (chunks == 1) {
    for_each_index(what, C, NormColumnChunk<T>{dy, x, mean, rstd, dw, db, 0, R, C, true});
    return;
  }
  T* sw = dw ? scratch : nullptr;
  T* sb = db ? scratch + C : nullptr;
  for_each_index(what, chunks * C,
                 NormColumnChunk<T>{dy, x, mean, rstd, sw, sb, P * C, R, C, false});
  if (dw) for_each_index(what, C, AddChunkSlices<T>{sw, chunks, P * C, dw});
  if (db) for_each_index(what, C, AddChunkSlices<T>{sb, chunks, P * C, db});
}

template <class T>
struct RmsNormForwardRow {
  const T *x, *w;  // (R, C), (C)
  T eps;
  T *y, *rstd;  // (R, C), (R) or null
  std::int64_t C;
  MLA_HD void operator()(std::int64_t r) const {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const T inv_c = T(1) / static_cast<T>(C);
    T sq = 0;
    for (std::int64_t c = 0; c < C; ++c) sq += xr[c] * xr[c];
    const T s = T(1) / sqrt_of(sq * inv_c + eps);
    for (std::int64_t c = 0; c < C; ++c) yr[c] = xr[c] * s * w[c];
    if (rstd) rstd[r] = s;
  }
};

}  // namespace cuda_detail

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// y = (x - mean) * rstd * w + b per row. `mean` and `rstd` (R) are written when non-null.
template <class T>
void layernorm_forward(Cuda, const T* x,  // (R, C)
                       const T* w,        // (C)
                       const T* b,        // (C)
                       T eps,
                       T* y,     // (R, C)
                       T* mean,  // (R) or null
                       T* rstd,  // (R) or null
                       std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  cuda_detail::for_each_index("layernorm_forward", R,
                              cuda_detail::LayerNormForwardRow<T>{x, w, b, eps, y, mean, rstd, C});
}

/// Scratch elements layernorm_backward needs for dw/db: (chunks, 2, C), or 0 for one chunk.
inline std::int64_t layernorm_backward_scratch(Cuda, std::int64_t R, std::int64_t C) {
  const std::int64_t chunks = norm_chunks(R);
  return chunks > 1 ? chunks * 2 * C : 0;
}

/// With xhat = (x - mean) * rstd and dn = dy * w:
///   dx += rstd * (dn - mean_c(dn) - xhat * mean_c(dn * xhat)),  dw += sum_r dy * xhat,
///   db += sum_r dy.
/// Any of dx, dw, db may be null (that input needs no gradient). `scratch` holds
/// layernorm_backward_scratch(R, C) elements when dw or db is non-null.
template <class T>
void layernorm_backward(Cuda, const T* dy,  // (R, C)
                        const T* x,         // (R, C)
                        const T* w,         // (C)
                        const T* mean,      // (R)
                        const T* rstd,      // (R)
                        T* dx,              // (R, C) or null
                        T* dw,              // (C) or null
                        T* db,              // (C) or null
                        T* scratch,         // (chunks, 2, C) or null
                        std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  if (dx) {
    cuda_detail::for_each_index("layernorm_backward", R,
                                cuda_detail::NormBackwardRow<T>{dy, x, w, mean, rstd, dx, C});
  }
  cuda_detail::norm_column_sums("layernorm_backward", dy, x, mean, rstd, dw, db, scratch, 2, R, C);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// y = x * rstd * w per row; `rstd` (R) is written when non-null.
template <class T>
void rmsnorm_forward(Cuda, const T* x,  // (R, C)
                     const T* w,        // (C)
                     T eps,
                     T* y,     // (R, C)
                     T* rstd,  // (R) or null
                     std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  cuda_detail::for_each_index("rmsnorm_forward", R,
                              cuda_detail::RmsNormForwardRow<T>{x, w, eps, y, rstd, C});
}

/// Scratch elements rmsnorm_backward needs for dw: (chunks, C), or 0 for one chunk.
inline std::int64_t rmsnorm_backward_scratch(Cuda, std::int64_t R, std::int64_t C) {
  const std::int64_t chunks = norm_chunks(R);
  return chunks > 1 ? chunks * C : 0;
}

/// With xhat = x * rstd and dn = dy * w:
///   dx += rstd * (dn - xhat * mean_c(dn * xhat)),  dw += sum_r dy * xhat.
/// dx or dw may be null. `scratch` holds rmsnorm_backward_scratch(R, C) elements when dw is set.
template <class T>
void rmsnorm_backward(Cuda, const T* dy,  // (R, C)
                      const T* x,         // (R, C)
                      const T* w,         // (C)
                      const T* rstd,      // (R)
                      T* dx,              // (R, C) or null
                      T* dw,              // (C) or null
                      T* scratch,         // (chunks, C) or null
                      std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  if (dx) {
    cuda_detail::for_each_index("rmsnorm_backward", R,
                                cuda_detail::NormBackwardRow<T>{dy, x, w, nullptr, rstd, dx, C});
  }
  cuda_detail::norm_column_sums<T>("rmsnorm_backward", dy, x, nullptr, rstd, dw, nullptr, scratch, 1,
                                   R, C);
}

}  // namespace mla::kernels
