// mla/backend/cuda/optimizer.hpp — the optimizer's kernels on the Thrust/CUDA device: one
// AdamW step over a parameter tensor, and the sum of squares a gradient-norm clip needs.
//
// Legend: n elements of one parameter tensor (seen flat); p parameters, g gradients, m and v
// AdamW's first and second moments (each (n)); k the step's constants (AdamWStep, in
// mla/backend/types.hpp), keep the weight-decay factor of this tensor (1 - lr * wd, or 1).
//
// One work item per element; the sum of squares is a Thrust reduction in double.
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
struct AdamWUpdate {
  AdamWStep<T> k;
  T *p;
  const T* g;
  T *m, *v;
  T keep;
  MLA_HD void operator()(std::int64_t i) const {
    const T gi = g[i] * k.grad_scale;
    m[i] = k.b1 * m[i] + (T(1) - k.b1) * gi;
    v[i] = k.b2 * v[i] + (T(1) - k.b2) * gi * gi;
    p[i] *= keep;
    p[i] -= k.step_size * m[i] / (sqrt_of(v[i]) / k.sqrt_bc2 + k.eps);
  }
};

template <class T>
struct SquareInDouble {
  MLA_HD double operator()(T x) const { return static_cast<double>(x) * static_cast<double>(x); }
};

}  // namespace cuda_detail

/// One AdamW step, per element i:
///   g' = g[i] * grad_scale;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
///   p = p * keep;  p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps)
template <class T>
void adamw_update(Cuda, const AdamWStep<T>& k, T* p, const T* g, T* m, T* v, std::int64_t n, T keep) {
  cuda_detail::for_each_index("adamw_update", n, cuda_detail::AdamWUpdate<T>{k, p, g, m, v, keep});
}

/// sum_i double(x[i])^2, returned to the host (waits for the device). Thrust's reduction
/// order, the same on every run on one device.
template <class T>
double sum_of_squares(Cuda, const T* x, std::int64_t n) {
  if (n <= 0) return 0.0;
  double s = 0;
  gpu::launch("sum_of_squares", [&] {
    s = thrust::transform_reduce(gpu::policy(), x, x + n, cuda_detail::SquareInDouble<T>{}, 0.0,
                                 thrust::plus<double>());
  });
  return s;
}

}  // namespace mla::kernels
