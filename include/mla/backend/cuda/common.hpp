// mla/backend/cuda/common.hpp — what the Thrust kernels of the element-wise, layout, norm,
// softmax, embedding, rope, dropout and optimizer headers share: the math functions of the
// operand's own precision callable in device code, the range check of ids, and the one way a
// kernel is started (one work item per index, through gpu::launch). Internal: included by
// those headers only.
#pragma once

#include <cmath>
#include <cstdint>

#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/launch.hpp"

namespace mla::kernels::cuda_detail {

// exp, log, sqrt and erf in float for float and in double for double, on host and device
// (the global C functions: in device code nvcc provides them, on the host the C library).
MLA_HD inline float exp_of(float x) { return ::expf(x); }
MLA_HD inline double exp_of(double x) { return ::exp(x); }
MLA_HD inline float log_of(float x) { return ::logf(x); }
MLA_HD inline double log_of(double x) { return ::log(x); }
MLA_HD inline float sqrt_of(float x) { return ::sqrtf(x); }
MLA_HD inline double sqrt_of(double x) { return ::sqrt(x); }
MLA_HD inline float erf_of(float x) { return ::erff(x); }
MLA_HD inline double erf_of(double x) { return ::erf(x); }

/// Whether an id (a token id, a target) lies outside [0, V).
struct IdOutOfRange {
  std::int64_t V;
  MLA_HD bool operator()(std::int32_t id) const { return id < 0 || id >= V; }
};

/// Runs f(i) for every i in [0, n) as one Thrust for_each on the library's stream (no
/// synchronization); a failure is a DeviceError "cuda <what>: <reason>". n <= 0 runs nothing.
template <class F>
void for_each_index(const char* what, std::int64_t n, const F& f) {
  if (n <= 0) return;
  gpu::launch(what, [&] {
    thrust::for_each_n(gpu::policy(), thrust::counting_iterator<std::int64_t>(0), n, f);
  });
}

}  // namespace mla::kernels::cuda_detail
