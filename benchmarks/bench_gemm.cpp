// The GEMMs of a training step of the default model (batch 8 x seq 256 = 2048 rows, d_model
// 256, MLP 1024, vocab 8192), through mla's kernels::gemm on row-major float buffers.
//
//   gemm/M:2048/N:n/K:k         C[2048, n] = A[2048, k] @ B[n, k]^T      (a Linear's forward)
//   gemm_wgrad/M:m/N:n/K:2048   dW[m, n] = dY[2048, m]^T @ X[2048, n]    (its weight gradient)
//
//   eigen/...                   the same products as plain Eigen expressions on the same
//                               buffers: what mla's GEMM driver is measured against
//
// items_per_second: floating-point operations (2*M*N*K) per second.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <Eigen/Core>

#include <mla/mla.hpp>

namespace {

std::vector<float> noise(std::int64_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

enum class Impl { Mla, Eigen };

template <Impl I>
void run(benchmark::State& state, mla::Transpose ta, mla::Transpose tb) {
  const std::int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const std::vector<float> a = noise(M * K), b = noise(N * K);
  std::vector<float> c(static_cast<std::size_t>(M * N));
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const bool a_t = ta == mla::Transpose::Yes, b_t = tb == mla::Transpose::Yes;
  const Eigen::Map<const Matrix> ea(a.data(), a_t ? K : M, a_t ? M : K), eb(b.data(), b_t ? N : K, b_t ? K : N);
  Eigen::Map<Matrix> ec(c.data(), M, N);
  for (auto _ : state) {
    if constexpr (I == Impl::Mla) {
      mla::kernels::gemm(mla::Cpu{}, ta, tb, M, N, K, 1.0f, a.data(), b.data(), 0.0f, c.data());
    } else if (a_t) {
      ec.noalias() = ea.transpose() * eb;
    } else {
      ec.noalias() = ea * eb.transpose();
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * 2 * M * N * K);
}

template <Impl I>
void BM_Linear(benchmark::State& state) {
  run<I>(state, mla::Transpose::No, mla::Transpose::Yes);
}
template <Impl I>
void BM_WeightGrad(benchmark::State& state) {
  run<I>(state, mla::Transpose::Yes, mla::Transpose::No);
}

void LinearShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({2048, 256, 256})->Args({2048, 1024, 256})->Args({2048, 256, 1024})
      ->Args({2048, 8192, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void WeightGradShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({256, 256, 2048})->Args({1024, 256, 2048})->Args({256, 1024, 2048})
      ->Args({8192, 256, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_TEMPLATE(BM_Linear, Impl::Mla)->Name("gemm")->Apply(LinearShapes);
BENCHMARK_TEMPLATE(BM_WeightGrad, Impl::Mla)->Name("gemm_wgrad")->Apply(WeightGradShapes);
BENCHMARK_TEMPLATE(BM_Linear, Impl::Eigen)->Name("eigen/gemm")->Apply(LinearShapes);
BENCHMARK_TEMPLATE(BM_WeightGrad, Impl::Eigen)->Name("eigen/gemm_wgrad")->Apply(WeightGradShapes);

}  // namespace

BENCHMARK_MAIN();
