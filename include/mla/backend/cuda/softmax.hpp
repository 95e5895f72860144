// mla/backend/cuda/softmax.hpp — softmax over the last axis, and cross-entropy from logits
// (fused: no probabilities are stored), on the Thrust/CUDA device, with the CPU backend's
// semantics (mla/backend/cpu/softmax.hpp). Forward and backward side by side.
//
// Legend: R rows (every axis but the last, e.g. B*T), C channels (the last axis), V vocab
// (the last axis of logits), N targets (= R for cross-entropy).
//
//   softmax:       y[r, c] = exp(x[r, c] - max_r) / sum_c exp(x[r, c] - max_r)
//                  dx = y * (dy - sum_c(dy * y))
//   cross-entropy: lse[r] = logsumexp_v logits[r, v]   (saved for the backward)
//                  loss   = mean_r (lse[r] - logits[r, target[r]])   (summed in double, in order)
//                  dlogits[r, v] = (exp(logits[r, v] - lse[r]) - [v == target[r]]) * dloss / N
//
// Row work: one work item per row, looping over the row. The loss's sum over rows is one work
// item adding the R terms in row order in double, as the CPU backend does: deterministic, and
// the result stays in device memory (no host sync). The loop is serial: short next to the row
// work for the fused loss's chunks (about a thousand rows), a cost to revisit (a tree of
// partial sums) for crossentropy_forward over every row of a large batch.
#pragma once

#include <cstdint>

#include <thrust/find.h>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/launch.hpp"

namespace mla::kernels {
namespace cuda_detail {

template <class T>
MLA_HD T row_max(const T* x, std::int64_t n) {
  T m = x[0];
  for (std::int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <class T>
struct SoftmaxForwardRow {
  const T* x;  // (R, C)
  T* y;        // (R, C)
  std::int64_t C;
  MLA_HD void operator()(std::int64_t r) const {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const T m = row_max(xr, C);  // max-subtracted: exp never overflows
    T sum = 0;
    for (std::int64_t c = 0; c < C; ++c) sum += (yr[c] = exp_of(xr[c] - m));
    const T inv = T(1) / sum;
    for (std::int64_t c = 0; c < C; ++c) yr[c] *= inv;
  }
};

template <class T>
struct SoftmaxBackwardRow {
  const T *y, *dy;  // (R, C) each
  T* dx;            // (R, C)
  std::int64_t C;
  bool accumulate;
  MLA_HD void operator()(std::int64_t r) const {
    const T* yr = y + r * C;
    const T* g = dy + r * C;
    T* d = dx + r * C;
    T dot = 0;
    for (std::int64_t c = 0; c < C; ++c) dot += g[c] * yr[c];
    for (std::int64_t c = 0; c < C; ++c) {
      const T v = yr[c] * (g[c] - dot);
      d[c] = accumulate ? d[c] + v : v;
    }
  }
};

/// lse[r] = logsumexp of row r of the logits.
template <class T>
struct LogSumExpRow {
  const T* logits;  // (R, V)
  T* lse;           // (R)
  std::int64_t V;
  MLA_HD void operator()(std::int64_t r) const {
    const T* xr = logits + r * V;
    const T m = row_max(xr, V);
    T sum = 0;
    for (std::int64_t v = 0; v < V; ++v) sum += exp_of(xr[v] - m);
    lse[r] = m + log_of(sum);
  }
};

/// One work item: s = sum over rows r in order of double(lse[r]) - double(logits[r, target[r]])
/// (the target logit read from `target_logits` (R) when set, from the logits (R, V) otherwise);
/// writes s to `sum` when set, and T(s / R) to `mean` when set.
template <class T>
struct LossSum {
  const T* lse;
  const T* logits;
  const std::int32_t* targets;
  const T* target_logits;
  std::int64_t R, V;
  double* sum;
  T* mean;
  MLA_HD void operator()(std::int64_t) const {
    double s = 0;
    for (std::int64_t r = 0; r < R; ++r) {
      const T t = target_logits ? target_logits[r] : logits[r * V + targets[r]];
      s += static_cast<double>(lse[r]) - static_cast<double>(t);
    }
    if (sum) *sum = s;
    if (mean) *mean = static_cast<T>(s / static_cast<double>(R));
  }
};

/// dlogits[r, :] (+)= exp(logits - lse[r]) * g, then dlogits[r, target] -= g; g is `g`, or
/// g_at[0] / R when g_at is set (read on the device). dlogits may be the logits.
template <class T>
struct CrossEntropyGradRow {
  const T* logits;
  const std::int32_t* targets;
  const T* lse;
  T g;
  const T* g_at;  // (1) or null
  T* dlogits;
  std::int64_t R, V;
  bool accumulate;
  MLA_HD void operator()(std::int64_t r) const {
    const T gr = g_at ? g_at[0] / static_cast<T>(R) : g;
    const T* xr = logits + r * V;
    T* d = dlogits + r * V;
    const T l = lse[r];
    for (std::int64_t v = 0; v < V; ++v) {
      const T p = exp_of(xr[v] - l) * gr;
      d[v] = accumulate ? d[v] + p : p;
    }
    d[targets[r]] -= gr;
  }
};

/// Row r of the fused loss rows and gradient: lse, the target logit, and dlogits in place.
template <class T>
struct CrossEntropyRowGrad {
  T* logits;  // (R, V): in logits, out dlogits
  const std::int32_t* targets;
  T *lse, *target_logits;
  T g;
  std::int64_t V;
  MLA_HD void operator()(std::int64_t r) const {
    T* xr = logits + r * V;
    const std::int32_t t = targets[r];
    const T m = row_max(xr, V);
    target_logits[r] = xr[t];
    T sum = 0;
    for (std::int64_t v = 0; v < V; ++v) sum += (xr[v] = exp_of(xr[v] - m));
    lse[r] = m + log_of(sum);
    const T f = g / sum;
    for (std::int64_t v = 0; v < V; ++v) xr[v] *= f;
    xr[t] -= g;
  }
};

/// One work item: out[0] = T(sum of sums[c] in order / N).
template <class T>
struct MeanOfSums {
  const double* sums;
  std::int64_t count, N;
  T* out;
  MLA_HD void operator()(std::int64_t) const {
    double s = 0;
    for (std::int64_t c = 0; c < count; ++c) s += sums[c];
    out[0] = static_cast<T>(s / static_cast<double>(N));
  }
};

}  // namespace cuda_detail

// ---------------------------------------------------------------------------------------------
// Softmax

template <class T>
void softmax_forward(Cuda, const T* x,  // (R, C)
                     T* y,              // (R, C)
                     std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  cuda_detail::for_each_index("softmax_forward", R, cuda_detail::SoftmaxForwardRow<T>{x, y, C});
}

/// dx += y * (dy - sum_c(dy * y)), from the saved output y (= with accumulate false).
template <class T>
void softmax_backward(Cuda, const T* y,  // (R, C)
                      const T* dy,       // (R, C)
                      T* dx,             // (R, C)
                      std::int64_t R, std::int64_t C, bool accumulate = true) {
  if (R == 0 || C == 0) return;
  cuda_detail::for_each_index("softmax_backward", R,
                              cuda_detail::SoftmaxBackwardRow<T>{y, dy, dx, C, accumulate});
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy from logits

/// Flat index of the first target outside [0, V), or -1 when every target is a valid id.
/// Waits for the device (the index comes back to the host).
inline std::int64_t find_bad_target(Cuda, const std::int32_t* targets,  // (N)
                                    std::int64_t N, std::int64_t V) {
  if (N <= 0) return -1;
  std::int64_t at = N;
  gpu::launch("find_bad_target", [&] {
    at = thrust::find_if(gpu::policy(), targets, targets + N, cuda_detail::IdOutOfRange{V}) - targets;
  });
  return at == N ? -1 : at;
}

/// Writes lse (R) and *sum (device memory) = the sum over the rows of
/// lse[r] - logits[r, target[r]], in double and in row order. Targets must be valid ids.
template <class T>
void crossentropy_rows(Cuda, const T* logits,         // (R, V)
                       const std::int32_t* targets,   // (R)
                       T* lse,                        // (R)
                       std::int64_t R, std::int64_t V,
                       double* sum) {                 // (1)
  cuda_detail::for_each_index("crossentropy_rows", R, cuda_detail::LogSumExpRow<T>{logits, lse, V});
  cuda_detail::for_each_index(
      "crossentropy_rows", 1,
      cuda_detail::LossSum<T>{lse, logits, targets, nullptr, R, V, sum, nullptr});
}

/// Writes lse (R) and the mean loss (one element, device memory). Targets must be valid ids.
template <class T>
void crossentropy_forward(Cuda, const T* logits,       // (R, V)
                          const std::int32_t* targets,  // (R)
                          T* lse,                       // (R)
                          T* loss,                      // (1)
                          std::int64_t R, std::int64_t V) {
  cuda_detail::for_each_index("crossentropy_forward", R,
                              cuda_detail::LogSumExpRow<T>{logits, lse, V});
  cuda_detail::for_each_index(
      "crossentropy_forward", 1,
      cuda_detail::LossSum<T>{lse, logits, targets, nullptr, R, V, nullptr, loss});
}

/// dlogits (+)= (softmax(logits) - onehot(target)) * g, recomputing the softmax from the
/// logits and the saved lse; dlogits may be the logits themselves (overwritten in place).
template <class T>
void crossentropy_grad(Cuda, const T* logits,         // (R, V)
                       const std::int32_t* targets,   // (R)
                       const T* lse,                  // (R)
                       T g, T* dlogits,               // (R, V)
                       std::int64_t R, std::int64_t V, bool accumulate) {
  cuda_detail::for_each_index(
      "crossentropy_grad", R,
      cuda_detail::CrossEntropyGradRow<T>{logits, targets, lse, g, nullptr, dlogits, R, V, accumulate});
}

/// The loss's rows and their gradient in one pass over each row: writes lse (R) and each
/// row's target logit to `target_logits` (R), turns the logits (R, V) in place into
/// dlogits = (softmax(logits) - onehot(target)) * g, and writes *sum (device memory) = the sum
/// over the rows of lse[r] - logits[r, target[r]] in double, in row order. The softmax is
/// exp(logits - max) / sum from the exponentials the row's sum was taken of: one exponential
/// per logit. Targets must be valid ids.
template <class T>
void crossentropy_rows_grad(Cuda, T* logits,                // (R, V): in logits, out dlogits
                            const std::int32_t* targets,    // (R)
                            T* lse, T* target_logits,       // (R) each
                            T g, std::int64_t R, std::int64_t V,
                            double* sum) {                  // (1)
  cuda_detail::for_each_index(
      "crossentropy_rows_grad", R,
      cuda_detail::CrossEntropyRowGrad<T>{logits, targets, lse, target_logits, g, V});
  cuda_detail::for_each_index(
      "crossentropy_rows_grad", 1,
      cuda_detail::LossSum<T>{lse, nullptr, targets, target_logits, R, V, sum, nullptr});
}

/// out[0] = T((sum of sums[c] for c in order) / N): the mean loss from the per-chunk sums of
/// crossentropy_rows / crossentropy_rows_grad, all in device memory.
template <class T>
void mean_of_sums(Cuda, const double* sums,  // (count)
                  std::int64_t count, std::int64_t N,
                  T* out) {                  // (1)
  cuda_detail::for_each_index("mean_of_sums", 1, cuda_detail::MeanOfSums<T>{sums, count, N, out});
}

/// dlogits += (softmax(logits) - onehot(target)) * dloss[0] / R (= with accumulate false);
/// dloss[0] is read on the device.
template <class T>
void crossentropy_backward(Cuda, const T* logits,      // (R, V)
                           const std::int32_t* targets,  // (R)
                           const T* lse,                 // (R)
                           const T* dloss,               // (1)
                           T* dlogits,                   // (R, V)
                           std::int64_t R, std::int64_t V, bool accumulate = true) {
  if (R == 0) return;
  cuda_detail::for_each_index(
      "crossentropy_backward", R,
      cuda_detail::CrossEntropyGradRow<T>{logits, targets, lse, T(0), dloss, dlogits, R, V, accumulate});
}

}  // namespace mla::kernels
