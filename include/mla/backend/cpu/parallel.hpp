// mla/backend/cpu/parallel.hpp — the one threading layer: OpenMP, shared with Eigen's GEMM.
//
// Element-wise loops split their outer (row) loop with OpenMP when there is enough work to
// pay for the fork (kernels::detail::parallel_for, parallel_ranges); the GEMM drivers run one
// team (parallel_team: the AVX-512 driver, whose threads meet at barriers and take units of
// work from a counter) or one slab per thread (Eigen's), and nothing forks inside a parallel
// region, so nothing oversubscribes.
// Every reduction runs in a fixed order that does not depend on the thread count, so results
// are bit-reproducible.
#pragma once

#include <algorithm>
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

/// Whether a parallel region started here would run on more than one thread: several threads
/// are set and we are not already inside a parallel region. A region that would run on one
/// thread is never entered, because libgomp allocates (and frees) a team for every region
/// that runs on one thread — an `if` clause that is false, one thread set, or a region nested
/// in another — while it keeps a team of several threads for the next region. Checking first
/// keeps a steady-state step free of heap allocations.
inline bool can_fork() {
#if defined(_OPENMP)
  return omp_get_max_threads() > 1 && !omp_in_parallel();
#else
  return false;
#endif
}

/// body(i) for every i in [0, n): shared out with a static schedule when `parallel` and
/// can_fork(), which gives each thread the indices `#pragma omp parallel for schedule(static)`
/// would; in order on this thread otherwise.
template <class F>
void parallel_for(std::int64_t n, bool parallel, F&& body) {
#if defined(_OPENMP)
  if (parallel && can_fork()) {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#endif
  for (std::int64_t i = 0; i < n; ++i) body(i);
}
/// body(thread, threads) once on every thread of a team when `parallel` and can_fork(), the
/// threads meeting at team_barrier(threads) as the body says; body(0, 1) on this thread
/// otherwise.
template <class F>
void parallel_team(bool parallel, F&& body) {
#if defined(_OPENMP)
  if (parallel && can_fork()) {
#pragma omp parallel
    body(std::int64_t{omp_get_thread_num()}, std::int64_t{omp_get_num_threads()});
    return;
  }
#endif
  body(std::int64_t{0}, std::int64_t{1});
}
/// In parallel_team's body: waits until all `threads` threads of the team have reached it.
inline void team_barrier([[maybe_unused]] std::int64_t threads) {
#if defined(_OPENMP)
  if (threads > 1) {
#pragma omp barrier
  }
#endif
}
/// body(begin, end) over [0, n) cut into one contiguous range per thread, at multiples of 16
/// elements, when `parallel` and can_fork(); body(0, n) on this thread otherwise. For
/// element-wise loops: a plain loop over a range, with the pointers in locals, is what the
/// compiler vectorizes.
template <class F>
void parallel_ranges(std::int64_t n, bool parallel, F&& body) {
  if (n <= 0) return;
#if defined(_OPENMP)
  if (parallel && can_fork()) {
#pragma omp parallel
    {
      const std::int64_t t = omp_get_thread_num(), threads = omp_get_num_threads(), units = (n + 15) / 16;
      const std::int64_t begin = std::min(n, units * t / threads * 16);
      const std::int64_t end = std::min(n, units * (t + 1) / threads * 16);
      if (begin < end) body(begin, end);
    }
    return;
  }
#endif
  body(std::int64_t{0}, n);
}
}  // namespace kernels::detail

}  // namespace mla
