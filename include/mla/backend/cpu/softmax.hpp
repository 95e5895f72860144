// mla/backend/cpu/softmax.hpp — softmax over the last axis, and cross-entropy from logits
// (fused: no probabilities are stored). Forward and backward side by side.
//
// Legend: R rows (every axis but the last, e.g. B*T), C channels (the last axis), V vocab
// (the last axis of logits), N targets (= R for cross-entropy).
//
//   softmax:       y[r, c] = exp(x[r, c] - max_r) / sum_c exp(x[r, c] - max_r)
//                  dx = y * (dy - sum_c(dy * y))
//   cross-entropy: lse[r] = logsumexp_v logits[r, v]   (saved for the backward)
//                  loss   = mean_r (lse[r] - logits[r, target[r]])   (summed in double, in order)
//                  dlogits[r, v] = (exp(logits[r, v] - lse[r]) - [v == target[r]]) * dloss / N
#pragma once

#include <cmath>
#include <cstdint>

#include <Eigen/Core>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/exp.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {

// ---------------------------------------------------------------------------------------------
// Softmax

template <class T>
void softmax_forward(Cpu, const T* x,  // (R, C)
                     T* y,             // (R, C)
                     std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec xr(x + r * C, C);
    Vec yr(y + r * C, C);
    const T m = xr.maxCoeff();  // max-subtracted: exp never overflows
    if (detail::wide_exp<T>()) {
      yr *= T(1) / detail::exp_row(x + r * C, m, y + r * C, C);
      return;
    }
    yr = (xr - m).exp();
    yr *= T(1) / yr.sum();
  });
}

/// dx += y * (dy - sum_c(dy * y)), from the saved output y.
template <class T>
void softmax_backward(Cpu, const T* y,  // (R, C)
                      const T* dy,      // (R, C)
                      T* dx,            // (R, C)
                      std::int64_t R, std::int64_t C) {
  if (R == 0 || C == 0) return;
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  detail::parallel_for(R, R * C > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec yr(y + r * C, C), g(dy + r * C, C);
    const T dot = (g * yr).sum();
    Vec(dx + r * C, C) += yr * (g - dot);
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy from logits

/// Flat index of the first target outside [0, V), or -1 when every target is a valid id.
inline std::int64_t find_bad_target(Cpu, const std::int32_t* targets,  // (N)
                                    std::int64_t N, std::int64_t V) {
  for (std::int64_t i = 0; i < N; ++i) {
    if (targets[i] < 0 || targets[i] >= V) return i;
  }
  return -1;
}

/// Writes lse (R) and *sum = the sum over the rows of lse[r] - logits[r, target[r]], in double
/// and in row order. Targets must be valid ids (checked before).
template <class T>
void crossentropy_rows(Cpu, const T* logits,          // (R, V)
                       const std::int32_t* targets,   // (R)
                       T* lse,                        // (R)
                       std::int64_t R, std::int64_t V,
                       double* sum) {                 // (1)
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  detail::parallel_for(R, R * V > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec xr(logits + r * V, V);
    const T m = xr.maxCoeff();
    const T sum = detail::wide_exp<T>() ? detail::exp_row<T>(logits + r * V, m, nullptr, V) : (xr - m).exp().sum();
    lse[r] = m + std::log(sum);
  });
  double total = 0;  // fixed order, double: the loss does not depend on the thread count
  for (std::int64_t r = 0; r < R; ++r) {
    total += static_cast<double>(lse[r]) - static_cast<double>(logits[r * V + targets[r]]);
  }
  *sum = total;
}

/// out[0] = (the sums added in order) / N, rounded to T: the mean loss over N rows whose sums
/// were taken a chunk at a time.
template <class T>
void mean_of_sums(Cpu, const double* sums,  // (count)
                  std::int64_t count, std::int64_t N, T* out) {
  double total = 0;
  for (std::int64_t c = 0; c < count; ++c) total += sums[c];
  *out = static_cast<T>(total / static_cast<double>(N));
}

/// Writes lse (R) and the mean loss (one element). Targets must be valid ids (checked before).
template <class T>
void crossentropy_forward(Cpu cpu, const T* logits,      // (R, V)
                          const std::int32_t* targets,   // (R)
                          T* lse,                        // (R)
                          T* loss,                       // (1)
                          std::int64_t R, std::int64_t V) {
  double sum = 0;
  crossentropy_rows(cpu, logits, targets, lse, R, V, &sum);
  mean_of_sums(cpu, &sum, 1, R, loss);
}

/// dlogits (+)= (softmax(logits) - onehot(target)) * g, recomputing the softmax from the
/// logits and the saved lse; dlogits may be the logits themselves (overwritten in place).
template <class T>
void crossentropy_grad(Cpu, const T* logits,         // (R, V)
                       const std::int32_t* targets,  // (R)
                       const T* lse,                 // (R)
                       T g, T* dlogits,              // (R, V)
                       std::int64_t R, std::int64_t V, bool accumulate) {
  using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  detail::parallel_for(R, R * V > detail::kParallelGrain, [&](std::int64_t r) {
    const CVec xr(logits + r * V, V);
    if (detail::wide_exp<T>()) {
      detail::exp_row(logits + r * V, lse[r], dlogits + r * V, V, g, accumulate);
    } else if (accumulate) {
      Vec(dlogits + r * V, V) += (xr - lse[r]).exp() * g;
    } else {
      Vec(dlogits + r * V, V) = (xr - lse[r]).exp() * g;
    }
    dlogits[r * V + targets[r]] -= g;
  });
}

/// The loss's rows and their gradient in one pass over each row (the fused head-and-loss op's):
/// writes lse (R) and each row's target logit to `target_logits` (R), turns the logits (R, V)
/// in place into dlogits = (softmax(logits) - onehot(target)) * g, and writes *sum = the sum over
/// the rows of lse[r] - logits[r, target[r]] in double, in row order, as crossentropy_rows does.
/// The softmax is exp(logits - max) / sum, from the exponentials the row's sum was taken of:
/// one exponential per logit, where crossentropy_rows and crossentropy_grad take two, and one
/// trip of the row through memory. Targets must be valid ids (checked before).
template <class T>
void crossentropy_rows_grad(Cpu, T* logits,               // (R, V): in logits, out dlogits
                            const std::int32_t* targets,  // (R)
                            T* lse, T* target_logits,     // (R) each
                            T g, std::int64_t R, std::int64_t V,
                            double* sum) {                // (1)
  using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
  detail::parallel_for(R, R * V > detail::kParallelGrain, [&](std::int64_t r) {
    Vec xr(logits + r * V, V);
    const T m = xr.maxCoeff();
    target_logits[r] = xr[targets[r]];
    T sum;
    if (detail::wide_exp<T>()) {
      sum = detail::exp_row(logits + r * V, m, logits + r * V, V);
    } else {
      xr = (xr - m).exp();
      sum = xr.sum();
    }
    lse[r] = m + std::log(sum);
    xr *= g / sum;
    xr[targets[r]] -= g;
  });
  double total = 0;  // as crossentropy_rows: fixed order, in double
  for (std::int64_t r = 0; r < R; ++r) total += static_cast<double>(lse[r]) - static_cast<double>(target_logits[r]);
  *sum = total;
}

/// dlogits += (softmax(logits) - onehot(target)) * dloss[0] / R (= with accumulate false).
template <class T>
void crossentropy_backward(Cpu cpu, const T* logits,     // (R, V)
                           const std::int32_t* targets,  // (R)
                           const T* lse,                 // (R)
                           const T* dloss,               // (1)
                           T* dlogits,                   // (R, V)
                           std::int64_t R, std::int64_t V, bool accumulate = true) {
  if (R == 0) return;
  crossentropy_grad(cpu, logits, targets, lse, dloss[0] / static_cast<T>(R), dlogits, R, V, accumulate);
}

}  // namespace mla::kernels
