// benchmarks/support/machine.hpp — the machine's limits, measured the same way wherever a
// benchmark needs them: bench_machine reports them as rows, bench_decode holds every row
// against them (a roofline).
//
//   fma_loop      kFmaLoops rounds of one FMA per accumulator, 12 independent accumulators of
//                 the widest float vector the CPU runs (AVX-512, AVX2 + FMA, or scalar),
//                 whatever the build targets: 2 x lanes FLOP per FMA
//   read_sum      sums a thread's share of a float array in 64 independent partial sums
//   measure()     the FMA peak over all OpenMP threads and the read bandwidth of a 256 MiB array
//                 (far larger than the caches), each the best of a few timed passes
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <mla/backend/cpu/gemm_kernel.hpp>
#if defined(MLA_GEMM_X86)
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
/// The widest float FMA this CPU runs (cpuid, whatever the build's -march: the GEMM kernels
/// are chosen the same way, gemm_kernel.hpp), and its lanes: AVX-512 16, AVX2 + FMA 8, else 1.
enum class FmaIsa { Avx512, Avx2, Scalar };
inline FmaIsa fma_isa() {
#if defined(MLA_GEMM_X86)
  if (__builtin_cpu_supports("avx512f")) return FmaIsa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FmaIsa::Avx2;
#endif
  return FmaIsa::Scalar;
}
inline const char* name(FmaIsa isa) {
  return isa == FmaIsa::Avx512 ? "avx512" : isa == FmaIsa::Avx2 ? "avx2" : "scalar";
}
inline int lanes(FmaIsa isa) { return isa == FmaIsa::Avx512 ? 16 : isa == FmaIsa::Avx2 ? 8 : 1; }

// kFmaLoops rounds of one FMA per accumulator; each returns a value the compiler must keep.
#if defined(MLA_GEMM_X86)
__attribute__((target("avx512f"))) inline float fma_loop_avx512(float seed) {
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_set1_ps(seed + static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t n = 0; n < kFmaLoops; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  float out = 0;
  for (int i = 0; i < kAccumulators; ++i) out += _mm512_reduce_add_ps(acc[i]);
  return out;
}

__attribute__((target("avx2,fma"))) inline float fma_loop_avx2(float seed) {
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
  return out;
}
#endif

inline float fma_loop_scalar(float seed) {
  float acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = seed + static_cast<float>(i);
  for (std::int64_t n = 0; n < kFmaLoops; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float out = 0;
  for (float x : acc) out += x;
  return out;
}

/// kFmaLoops rounds of one FMA per accumulator on `isa`'s vectors (one this CPU runs).
inline float fma_loop(float seed, FmaIsa isa = fma_isa()) {
  switch (isa) {
#if defined(MLA_GEMM_X86)
    case FmaIsa::Avx512: return fma_loop_avx512(seed);
    case FmaIsa::Avx2: return fma_loop_avx2(seed);
#endif
    default: return fma_loop_scalar(seed);
  }
}

/// FLOPs of one fma_loop.
inline double fma_loop_flops(FmaIsa isa = fma_isa()) { return 2.0 * kFmaLoops * kAccumulators * lanes(isa); }

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
  double flops_per_s = 0;       // FMA peak, all threads
  double bytes_per_s = 0;       // read bandwidth from memory, all threads
  double avx2_flops_per_s = 0;  // FMA peak on AVX2's vectors (the AVX2 kernel's roof), all threads
};

/// The FMA peak on `isa`'s vectors over all threads: the best of timed passes, at least
/// `passes` and a quarter of a second of them (the cores take a while to reach the clock they
/// hold under this load: the first few milliseconds ran at half of it).
inline double fma_peak(FmaIsa isa, int passes) {
  using clock = std::chrono::steady_clock;
  double best = 0;
  volatile float sink = 0;
  const auto begin = clock::now();
  for (int p = 0; p < passes || clock::now() - begin < std::chrono::milliseconds(250); ++p) {
    const auto t0 = clock::now();
    float sum = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : sum)
#endif
    sum += fma_loop(1.0f, isa);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    sink = sink + sum;
    best = std::max(best, fma_loop_flops(isa) * threads() / s);
  }
  return best;
}

/// The limits, the best of `passes` timed passes each (about a second in all).
inline Limits measure(int passes = 3) {
  using clock = std::chrono::steady_clock;
  Limits l;
  volatile float sink = 0;
  l.flops_per_s = fma_peak(fma_isa(), passes);
  l.avx2_flops_per_s = fma_isa() == FmaIsa::Avx512 ? fma_peak(FmaIsa::Avx2, passes) : l.flops_per_s;
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

/// The CPU's FMA ISA and the GEMM kernel mla chose, in every benchmark program's context (the
/// JSON's "context", and the console header).
/// A kernel MLA_GEMM_KERNEL names that this CPU cannot run stops the program here.
inline const bool kMachineContext = [] {
  benchmark::AddCustomContext("fma_isa", name(fma_isa()));
  try {
    benchmark::AddCustomContext("gemm_kernel", std::string(mla::kernels::name(mla::kernels::gemm_kernel())));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(2);
  }
  return true;
}();

}  // namespace bench
