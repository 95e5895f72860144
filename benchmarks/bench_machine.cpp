// The machine's own limits, measured in the same run as the other rows so that their rates
// can be read against them (tools/bench.sh puts both in docs/benchmarks.md's machine section).
//
//   machine/fma_peak         every OpenMP thread runs independent fused multiply-adds on
//                            registers only (12 accumulators of the widest float vector the
//                            CPU runs, whatever the build targets: AVX-512, AVX2 + FMA, or
//                            scalar)
//   machine/fma_peak_avx2    the same on AVX2's vectors, on a CPU with AVX-512 (the roof of
//                            the AVX2 GEMM kernel there)
//   machine/read_bandwidth   every thread sums its share of a 256 MiB float array (much larger
//                            than the caches), so that the sum streams from memory
//
// items_per_second: floating-point operations (fma_peak: 2 per lane per FMA) or bytes read
// (read_bandwidth) per second, over all threads.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "support/machine.hpp"

namespace {

void BM_FmaPeak(benchmark::State& state, bench::FmaIsa isa) {
  const int n = bench::threads();
  for (auto _ : state) {
    float sum = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n) reduction(+ : sum)
#endif
    sum += bench::fma_loop(1.0f, isa);
    benchmark::DoNotOptimize(sum);
  }
  state.counters["threads"] = n;
  state.SetItemsProcessed(state.iterations() * n * static_cast<std::int64_t>(bench::fma_loop_flops(isa)));
}

void BM_ReadBandwidth(benchmark::State& state) {
  const std::vector<float> data(std::size_t{256} << 20 >> 2, 1.0f);  // 256 MiB of floats
  std::int64_t bytes = 0;
  for (auto _ : state) {
    float sum = 0;
    bytes = bench::read_sum(data, sum);
    benchmark::DoNotOptimize(sum);
  }
  state.counters["threads"] = bench::threads();
  state.SetItemsProcessed(state.iterations() * bytes);
  state.SetBytesProcessed(state.iterations() * bytes);
}

}  // namespace

BENCHMARK_CAPTURE(BM_FmaPeak, widest, bench::fma_isa())
    ->Name("machine/fma_peak")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// On an AVX-512 machine, the roof of the AVX2 kernel too.
const bool kAvx2Row = bench::fma_isa() == bench::FmaIsa::Avx512 &&
                      benchmark::RegisterBenchmark("machine/fma_peak_avx2", BM_FmaPeak, bench::FmaIsa::Avx2)
                          ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ReadBandwidth)->Name("machine/read_bandwidth")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
