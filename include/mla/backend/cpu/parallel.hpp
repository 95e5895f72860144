// mla/backend/cpu/parallel.hpp — the one threading layer: OpenMP, shared with Eigen's GEMM.
//
// Element-wise loops split their outer (row) loop with OpenMP when there is enough work to
// pay for the fork; Eigen's GEMM parallelizes itself with OpenMP too and does not nest inside
// an already parallel region, so nothing oversubscribes. Every reduction runs in a fixed order
// that does not depend on the thread count, so results are bit-reproducible.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

namespace mla {

/// Threads used by the CPU backend (OpenMP and Eigen alike).
inline void set_num_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace kernels::detail {
/// Below this many scalar operations a loop runs on one thread.
inline constexpr std::int64_t kParallelGrain = 1 << 15;
}  // namespace kernels::detail

}  // namespace mla
