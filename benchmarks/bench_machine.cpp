// The machine's own limits, measured in the same run as the other rows so that their rates
// can be read against them (tools/bench.sh puts both in docs/benchmarks.md's machine section).
//
//   machine/fma_peak         every OpenMP thread runs independent fused multiply-adds on
//                            registers only (12 accumulators of the widest float vector the
//                            build targets: AVX-512, AVX2 + FMA, or scalar)
//   machine/read_bandwidth   every thread sums its share of a 256 MiB float array (much larger
//                            than the caches), so that the sum streams from memory
//
// items_per_second: floating-point operations (fma_peak: 2 per lane per FMA) or bytes read
// (read_bandwidth) per second, over all threads.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

constexpr int kAccumulators = 12;      // enough independent chains to hide the FMA latency
constexpr std::int64_t kFmaLoops = 1 << 20;

/// kFmaLoops rounds of one FMA per accumulator; returns a value the compiler must keep.
float fma_loop(float seed) {
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

constexpr int kLanes =
#if defined(__AVX512F__)
    16;
#elif defined(__FMA__)
    8;
#else
    1;
#endif

void BM_FmaPeak(benchmark::State& state) {
  const int n = threads();
  for (auto _ : state) {
    float sum = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n) reduction(+ : sum)
#endif
    sum += fma_loop(1.0f);
    benchmark::DoNotOptimize(sum);
  }
  state.counters["threads"] = n;
  state.SetItemsProcessed(state.iterations() * n * kFmaLoops * kAccumulators * kLanes * 2);
}

void BM_ReadBandwidth(benchmark::State& state) {
  const std::size_t count = std::size_t{256} << 20 >> 2;  // 256 MiB of floats
  std::vector<float> data(count, 1.0f);
  const int n = threads();
  const auto len = static_cast<std::int64_t>(count);
  constexpr std::int64_t kWidth = 64;  // independent partial sums: whole vectors, no add chain
  const std::int64_t blocks = len / kWidth;
  for (auto _ : state) {
    float sum = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n) reduction(+ : sum)
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
      for (float x : acc) sum += x;
    }
    benchmark::DoNotOptimize(sum);
  }
  state.counters["threads"] = n;
  const std::int64_t bytes = blocks * kWidth * static_cast<std::int64_t>(sizeof(float));
  state.SetItemsProcessed(state.iterations() * bytes);
  state.SetBytesProcessed(state.iterations() * bytes);
}

}  // namespace

BENCHMARK(BM_FmaPeak)->Name("machine/fma_peak")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ReadBandwidth)->Name("machine/read_bandwidth")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
