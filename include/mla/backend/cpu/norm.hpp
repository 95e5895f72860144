// mla/backend/cpu/norm.hpp — LayerNorm and RMSNorm over the last axis, forward and backward
// side by side (llm.c's layernorm_forward / layernorm_backward). The forward saves exactly
// what the backward needs: per row the mean and the reciprocal standard deviation `rstd`.
//
// Legend: R rows (every axis but the last, e.g. B*T), C channels (the last axis).
//
//   layernorm: y[r, c] = (x[r, c] - mean[r]) * rstd[r] * w[c] + b[c]
//              mean[r] = sum_c x[r, c] / C,  rstd[r] = 1 / sqrt(sum_c (x - mean)^2 / C + eps)
//   rmsnorm:   y[r, c] = x[r, c] * rstd[r] * w[c],  rstd[r] = 1 / sqrt(sum_c x^2 / C + eps)
//
// The weight and bias gradients are column sums over every row. They are computed without
// atomics and bit-reproducibly for any thread count: rows are cut into chunks of a fixed
// kNormChunkRows rows (independent of the thread count), each chunk sums into its own slice
// of a scratch buffer (chunks, P, C), and the slices are then added column by column in chunk
// order. When all rows fit in one chunk the sums go straight into dw / db and no scratch is
// needed (the caller asks `*_backward_scratch` how many elements to provide).
#pragma once

#include <cmath>
#include <cstdint>

#include <Eigen/Core>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace detail {

/// Columns per band in the final reduction of the chunk slices.
inline constexpr std::int64_t kNormColumnBand = 64;

/// acc[c] += sum over chunks k (in order) of parts[k * stride + c], for c < C, in column bands.
template <class T>
void add_chunk_slices(const T* parts, std::int64_t chunks, std::int64_t stride, T* acc,
                      std::int64_t C) {
  const std::int64_t bands = (C + kNormColumnBand - 1) / kNormColumnBand;
  parallel_for(bands, chunks * C > kParallelGrain, [&](std::int64_t band) {
    const std::int64_t c0 = band * kNormColumnBand;
    const std::int64_t c1 = c0 + kNormColumnBand < C ? c0 + kNormColumnBand : C;
    for (std::int64_t k = 0; k < chunks; ++k) {
      const T* p = parts + k * stride;
      for (std::int64_t c = c0; c < c1; ++c) acc[c] += p[c];
    }
  });
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// y = (x - mean) * rstd * w + b per row. `mean` and `rstd` (R) are written when non-null
/// (the op passes them only when it records a backward).
template <class T>
void layernorm_forward(Cpu, const T* x,  // (R, C)
                       const T* w,       // (C)
                       const T* b,       // (C)
                       T eps,
                       T* y,     // (R, C)
                       T* mean,  // (R) or null
                       T* rstd,  // (R) or null
                       std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  const CVec wv(w, C), bv(b, C);
  const T inv_c = T(1) / static_cast<T>(C);
  detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec xr(x + r * C, C);
    const T m = xr.sum() * inv_c;
    const T var = (xr - m).square().sum() * inv_c;  // biased, two-pass: stable
    const T s = T(1) / std::sqrt(var + eps);
    Vec(y + r * C, C) = (xr - m) * s * wv + bv;
    if (mean) mean[r] = m;
    if (rstd) rstd[r] = s;
  });
}

/// Scratch elements layernorm_backward needs for dw/db: (chunks, 2, C), or 0 for one chunk.
inline std::int64_t layernorm_backward_scratch(Cpu, std::int64_t R, std::int64_t C) {
  const std::int64_t chunks = norm_chunks(R);
  return chunks > 1 ? chunks * 2 * C : 0;
}

/// With xhat = (x - mean) * rstd and dn = dy * w:
///   dx += rstd * (dn - mean_c(dn) - xhat * mean_c(dn * xhat)),  dw += sum_r dy * xhat,
///   db += sum_r dy.
/// Any of dx, dw, db may be null (that input needs no gradient). `scratch` holds
/// layernorm_backward_scratch(R, C) elements when dw or db is non-null.
template <class T>
void layernorm_backward(Cpu, const T* dy,  // (R, C)
                        const T* x,        // (R, C)
                        const T* w,        // (C)
                        const T* mean,     // (R)
                        const T* rstd,     // (R)
                        T* dx,             // (R, C) or null
                        T* dw,             // (C) or null
                        T* db,             // (C) or null
                        T* scratch,        // (chunks, 2, C) or null
                        std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  const CVec wv(w, C);
  const T inv_c = T(1) / static_cast<T>(C);
  const std::int64_t chunks = norm_chunks(R);
  const bool direct = chunks == 1;  // one chunk: sum straight into dw / db
  const bool columns = dw != nullptr || db != nullptr;
  detail::parallel_for(chunks, R * C > detail::kParallelGrain, [&](std::int64_t k) {
    T* pw = direct || !columns ? dw : scratch + k * 2 * C;      // this chunk's dw (C)
    T* pb = direct || !columns ? db : scratch + k * 2 * C + C;  // this chunk's db (C)
    if (!direct && columns) Vec(pw, 2 * C).setZero();
    const std::int64_t r0 = k * kNormChunkRows;
    const std::int64_t r1 = r0 + kNormChunkRows < R ? r0 + kNormChunkRows : R;
    for (std::int64_t r = r0; r < r1; ++r) {
      const CVec g(dy + r * C, C), xr(x + r * C, C);
      const T m = mean[r], s = rstd[r];
      const auto xhat = (xr - m) * s;
      if (dw) Vec(pw, C) += g * xhat;
      if (db) Vec(pb, C) += g;
      if (dx) {
        const auto dn = g * wv;
        const T dn_mean = dn.sum() * inv_c;
        const T dn_xhat_mean = (dn * xhat).sum() * inv_c;
        Vec(dx + r * C, C) += (dn - dn_mean - xhat * dn_xhat_mean) * s;
      }
    }
  });
  if (direct || !columns) return;
  if (dw) detail::add_chunk_slices(scratch, chunks, 2 * C, dw, C);
  if (db) detail::add_chunk_slices(scratch + C, chunks, 2 * C, db, C);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// y = x * rstd * w per row; `rstd` (R) is written when non-null.
template <class T>
void rmsnorm_forward(Cpu, const T* x,  // (R, C)
                     const T* w,       // (C)
                     T eps,
                     T* y,     // (R, C)
                     T* rstd,  // (R) or null
                     std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  const CVec wv(w, C);
  const T inv_c = T(1) / static_cast<T>(C);
  detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec xr(x + r * C, C);
    const T s = T(1) / std::sqrt(xr.square().sum() * inv_c + eps);
    Vec(y + r * C, C) = xr * s * wv;
    if (rstd) rstd[r] = s;
  });
}

/// Scratch elements rmsnorm_backward needs for dw: (chunks, C), or 0 for one chunk.
inline std::int64_t rmsnorm_backward_scratch(Cpu, std::int64_t R, std::int64_t C) {
  const std::int64_t chunks = norm_chunks(R);
  return chunks > 1 ? chunks * C : 0;
}

/// With xhat = x * rstd and dn = dy * w:
///   dx += rstd * (dn - xhat * mean_c(dn * xhat)),  dw += sum_r dy * xhat.
/// dx or dw may be null. `scratch` holds rmsnorm_backward_scratch(R, C) elements when dw is set.
template <class T>
void rmsnorm_backward(Cpu, const T* dy,  // (R, C)
                      const T* x,        // (R, C)
                      const T* w,        // (C)
                      const T* rstd,     // (R)
                      T* dx,             // (R, C) or null
                      T* dw,             // (C) or null
                      T* scratch,        // (chunks, C) or null
                      std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  const CVec wv(w, C);
  const T inv_c = T(1) / static_cast<T>(C);
  const std::int64_t chunks = norm_chunks(R);
  const bool direct = chunks == 1;
  detail::parallel_for(chunks, R * C > detail::kParallelGrain, [&](std::int64_t k) {
    T* pw = direct || !dw ? dw : scratch + k * C;  // this chunk's dw (C)
    if (!direct && dw) Vec(pw, C).setZero();
    const std::int64_t r0 = k * kNormChunkRows;
    const std::int64_t r1 = r0 + kNormChunkRows < R ? r0 + kNormChunkRows : R;
    for (std::int64_t r = r0; r < r1; ++r) {
      const CVec g(dy + r * C, C), xr(x + r * C, C);
      const T s = rstd[r];
      const auto xhat = xr * s;
      if (dw) Vec(pw, C) += g * xhat;
      if (dx) {
        const auto dn = g * wv;
        const T dn_xhat_mean = (dn * xhat).sum() * inv_c;
        Vec(dx + r * C, C) += (dn - xhat * dn_xhat_mean) * s;
      }
    }
  });
  if (!direct && dw) detail::add_chunk_slices(scratch, chunks, C, dw, C);
}

}  // namespace mla::kernels
