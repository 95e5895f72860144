// benchmarks/support/machine.hpp — the machine's limits, measured the same way wherever a
// benchmark needs them: bench_machine reports them as rows, bench_decode holds every row
// against them (a roofline).
//
//   fma_loop      kFmaLoops rounds of one FMA per accumulator, 12 independent accumulators of
//                 the widest float vector the build targets (AVX-512, AVX2 + FMA, or scalar):
//                 2 x kLanes FLOP per FMA
//   read_sum      sums a thread's share of a float array in 64 independent partial sums
//   measure()     the FMA peak over all OpenMP threads and the read bandwidth of a 256 MiB array
//                 (far larger than the caches), each the best of a few timed passes
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace bench {

inline int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline constexpr int kAccumulators = 12;  // enough independent chains to hide the FMA latency
inline constexpr std::int64_t kFmaLoops = 1 << 20;
inline constexpr int kLanes =
#if defined(__AVX512F__)
    16;
#elif defined(__FMA__)
    8;
#else
    1;
#endif

/// kFmaLoops rounds of one FMA per accumulator; returns a value the compiler must keep.
inline float fma_loop(float seed) {
#if defined(__AVX512F__)
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_set1_ps(seed + static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t n = 0; n < kFmaLoops; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  float out = 0;
  for (int i = 0; i < kAccumulators; ++i) out += _mm512_reduce_add_ps(acc[i]);
#elif defined(__FMA__)
  __m256 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_set1_ps(seed + static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (std::int64_t n = 0; n < kFmaLoops; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  float lane[8], out = 0;
  for (int i = 0; i < kAccumulators; ++i) {
    _mm256_storeu_ps(lane, acc[i]);
    for (float x : lane) out += x;
  }
#else
  float acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = seed + static_cast<float>(i);
  for (std::int64_t n = 0; n < kFmaLoops; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float out = 0;
  for (float x : acc) out += x;
#endif
  return out;
}

/// FLOPs of one fma_loop.
inline constexpr double kFmaLoopFlops = 2.0 * kFmaLoops * kAccumulators * kLanes;

/// The sum of `data` on all threads, each its share in 64 independent partial sums; returns the
/// bytes read.
inline std::int64_t read_sum(const std::vector<float>& data, float& sum) {
  constexpr std::int64_t kWidth = 64;  // independent partial sums: whole vectors, no add chain
  const std::int64_t blocks = static_cast<std::int64_t>(data.size()) / kWidth;
  float total = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : total)
#endif
  {
#ifdef _OPENMP
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const std::int64_t t = 0, nt = 1;
#endif
    float acc[kWidth] = {};
    const float* p = data.data();
    for (std::int64_t k = blocks * t / nt; k < blocks * (t + 1) / nt; ++k)
      for (std::int64_t j = 0; j < kWidth; ++j) acc[j] += p[k * kWidth + j];
    for (float x : acc) total += x;
  }
  sum = total;
  return blocks * kWidth * static_cast<std::int64_t>(sizeof(float));
}

struct Limits {
  double flops_per_s = 0;  // FMA peak, all threads
  double bytes_per_s = 0;  // read bandwidth from memory, all threads
};

/// Both limits, the best of `passes` timed passes each (about a second in all).
inline Limits measure(int passes = 3) {
  using clock = std::chrono::steady_clock;
  Limits l;
  volatile float sink = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = clock::now();
    float sum = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : sum)
#endif
    sum += fma_loop(1.0f);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    sink = sink + sum;
    l.flops_per_s = std::max(l.flops_per_s, kFmaLoopFlops * threads() / s);
  }
  std::vector<float> data(std::size_t{256} << 20 >> 2, 1.0f);
  for (int p = 0; p < passes; ++p) {
    const auto t0 = clock::now();
    float sum = 0;
    const std::int64_t bytes = read_sum(data, sum);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    sink = sink + sum;
    l.bytes_per_s = std::max(l.bytes_per_s, static_cast<double>(bytes) / s);
  }
  return l;
}

}  // namespace bench
