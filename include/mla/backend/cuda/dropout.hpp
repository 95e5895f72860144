// mla/backend/cuda/dropout.hpp — inverted dropout with a counter-based mask on the
// Thrust/CUDA device, forward and backward side by side, with the CPU backend's semantics
// (mla/backend/cpu/dropout.hpp).
//
// Legend: n elements (the tensor seen flat), p drop probability in [0, 1).
//
// Element i is kept when kernels::dropout_hash::keep(key(seed), i, threshold(p)): a pure
// function of (seed, i), so the mask is bit-identical to the CPU backend's, and the backward
// recomputes it rather than storing it. Kept elements are scaled by 1 / (1 - p). One work item
// per element.
#pragma once

#include <cstdint>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_detail {

/// out[i] = keep(i) ? in[i] * scale : 0, or out[i] += in[i] * scale where kept when
/// `accumulate`.
template <class T>
struct DropoutApply {
  const T* in;
  T* out;
  T scale;
  std::uint64_t key, threshold;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const bool keep = dropout_hash::keep(key, static_cast<std::uint64_t>(i), threshold);
    if (accumulate) {
      if (keep) out[i] += in[i] * scale;
    } else {
      out[i] = keep ? in[i] * scale : T(0);
    }
  }
};

}  // namespace cuda_detail

/// y[i] = keep(i) ? x[i] / (1 - p) : 0.
template <class T>
void dropout_forward(Cuda, const T* x,  // (n)
                     T* y,              // (n)
                     std::int64_t n, T p, std::uint64_t seed) {
  cuda_detail::for_each_index(
      "dropout_forward", n,
      cuda_detail::DropoutApply<T>{x, y, T(1) / (T(1) - p), dropout_hash::key(seed),
                                   dropout_hash::threshold(static_cast<double>(p)), false});
}

/// dx[i] += keep(i) ? dy[i] / (1 - p) : 0, with the mask recomputed from (seed, i).
template <class T>
void dropout_backward(Cuda, const T* dy,  // (n)
                      T* dx,              // (n)
                      std::int64_t n, T p, std::uint64_t seed) {
  cuda_detail::for_each_index(
      "dropout_backward", n,
      cuda_detail::DropoutApply<T>{dy, dx, T(1) / (T(1) - p), dropout_hash::key(seed),
                                   dropout_hash::threshold(static_cast<double>(p)), true});
}

}  // namespace mla::kernels
