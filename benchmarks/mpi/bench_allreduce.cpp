// bench_allreduce — the all-reduce of data-parallel training (mla/parallel/mpi.hpp), under
// mpirun, over the gradient buffer of the default model (train_model's defaults) and of two
// larger ones:
//   allreduce/rank_order/elements:n   Communicator::sum_in_rank_order: deterministic, what
//                                     train_model runs
//   allreduce/mpi_sum/elements:n      MPI_Allreduce(MPI_SUM) in place: Open MPI's own
//                                     algorithm and order, the baseline it gives up
// Collectives must match across ranks, so every rank runs the same fixed number of iterations
// (--iterations K, default 30); each starts after a barrier, and its time is the slowest rank's
// (manual time). bytes_per_second: the buffer's bytes; the bus_bytes_per_second counter: the
// 2 (N-1)/N x bytes each rank sends and receives in a ring all-reduce, per second — the figure
// to hold against the link's bandwidth. Rank 0 alone reports.
//
//   mpirun -np 2 bench_allreduce [--iterations K] [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <mla/mla.hpp>
#include <mla/parallel/mpi.hpp>

namespace {

int g_iterations = 30;

/// The flat parameter buffer's length (padding included) of train_model's default model.
std::int64_t default_model_elements() {
  const mla::ModelConfig config{.vocab_size = 10000, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = 256};
  return mla::GPT<mla::MLA<>>(config, 1).parameters().values().numel();
}

template <class Reduce>
void run(benchmark::State& state, Reduce reduce) {
  mla::mpi::Communicator world;
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> data(n, 1.0f / static_cast<float>(world.rank() + 1));
  reduce(world, data);  // warm-up: buffers, connections
  for (auto _ : state) {
    world.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    reduce(world, data);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    state.SetIterationTime(seconds);
  }
  const double bytes = static_cast<double>(n * sizeof(float)), ranks = world.size();
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.counters["ranks"] = ranks;
  state.counters["bus_bytes_per_second"] =
      benchmark::Counter(2 * (ranks - 1) / ranks * bytes * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void rank_order(benchmark::State& state) {
  run(state, [](mla::mpi::Communicator& world, std::vector<float>& x) { world.sum_in_rank_order(std::span<float>(x)); });
}

void mpi_sum(benchmark::State& state) {
  run(state, [](mla::mpi::Communicator&, std::vector<float>& x) {
    MPI_Allreduce(MPI_IN_PLACE, x.data(), static_cast<int>(x.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  });
}

/// Prints nothing: the reporter of every rank but the first.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  mla::mpi::Environment mpi(argc, argv);
  mla::mpi::Communicator world;
  std::vector<char*> args;  // --iterations K is ours; the rest goes to Google Benchmark
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) g_iterations = std::atoi(argv[++i]);
    else if (arg.starts_with("--iterations=")) g_iterations = std::atoi(arg.c_str() + 13);
    else if (world.rank() == 0 || !arg.starts_with("--benchmark_out")) args.push_back(argv[i]);  // one file: rank 0's
  }
  if (g_iterations < 1) {
    if (world.rank() == 0) std::fprintf(stderr, "bench_allreduce: --iterations must be at least 1\n");
    return 2;
  }
  for (const std::int64_t n : {default_model_elements(), std::int64_t{16} << 20, std::int64_t{64} << 20}) {
    for (auto [name, fn] : {std::pair{"allreduce/rank_order", &rank_order}, std::pair{"allreduce/mpi_sum", &mpi_sum}}) {
      benchmark::RegisterBenchmark(name, fn)
          ->ArgName("elements")
          ->Arg(n)
          ->Iterations(g_iterations)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (world.rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    Silent silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  return 0;
}
