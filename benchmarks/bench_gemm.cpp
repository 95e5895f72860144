// The GEMMs of a training step of the default model (batch 8 x seq 256 = 2048 rows, d_model
// 256, MLP 1024, vocab 8192), on row-major float buffers.
//
//   gemm/M:2048/N:n/K:k         C[2048, n] = A[2048, k] @ B[n, k]^T      (a Linear's forward)
//   gemm_wgrad/M:m/N:n/K:2048   dW[m, n] = dY[2048, m]^T @ X[2048, n]    (its weight gradient)
//                               through mla's kernels::gemm on the kernel it chose for this CPU
//   candidates/<kernel>/...     the same products on each kernel that could do the work, for
//                               choosing among them: mla's avx512 and avx2 register tiles and
//                               its driver of Eigen's GEBP kernels (those this CPU runs), and
//                               BLIS (bli_sgemm, general strides) and OpenBLAS (cblas_sgemm)
//                               when their Debian libraries are installed (loaded at run time:
//                               both export cblas_sgemm, so neither is linked)
//   eigen/...                   the same products as plain Eigen expressions: PyTorch's peer
//
// items_per_second: floating-point operations (2*M*N*K) per second; of_peak: that over the FMA
// peak measured before the first row (benchmarks/support/machine.hpp), with the same threads;
// of_avx2_peak (the avx2 kernel on an AVX-512 machine): over the peak on AVX2's vectors.
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <mla/mla.hpp>

#include "support/machine.hpp"

namespace {

std::vector<float> noise(std::int64_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

const bench::Limits& limits() {
  static const bench::Limits l = bench::measure();
  return l;
}

/// A BLAS library's sgemm, loaded from its shared object; absent (nullptr) when not installed.
struct Blis {
  // BLIS's typed API with general strides: op(A)(i, k) at a[i * rsa + k * csa], no transposes.
  using Gemm = void (*)(int, int, std::int64_t, std::int64_t, std::int64_t, const float*, const float*, std::int64_t,
                        std::int64_t, const float*, std::int64_t, std::int64_t, const float*, float*, std::int64_t,
                        std::int64_t);
  Gemm gemm = nullptr;
  void (*set_threads)(std::int64_t) = nullptr;
  const char* (*arch)(int) = nullptr;
  int (*arch_id)() = nullptr;
  static const Blis& get() {
    static const Blis blis = [] {
      Blis b;
      void* h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
      if (!h) return b;
      auto int_size = reinterpret_cast<std::int64_t (*)()>(dlsym(h, "bli_info_get_int_type_size"));
      if (!int_size || int_size() != 64) return b;  // the declarations above take 64-bit dim_t
      b.gemm = reinterpret_cast<Gemm>(dlsym(h, "bli_sgemm"));
      b.set_threads = reinterpret_cast<void (*)(std::int64_t)>(dlsym(h, "bli_thread_set_num_threads"));
      b.arch = reinterpret_cast<const char* (*)(int)>(dlsym(h, "bli_arch_string"));
      b.arch_id = reinterpret_cast<int (*)()>(dlsym(h, "bli_arch_query_id"));
      if (!b.set_threads) b.gemm = nullptr;
      return b;
    }();
    return blis;
  }
};

struct OpenBlas {
  using Gemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
  Gemm gemm = nullptr;
  void (*set_threads)(int) = nullptr;
  char* (*core)() = nullptr;
  static const OpenBlas& get() {
    static const OpenBlas openblas = [] {
      OpenBlas o;
      void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
      if (!h) return o;
      o.gemm = reinterpret_cast<Gemm>(dlsym(h, "cblas_sgemm"));
      o.set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
      o.core = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
      if (!o.set_threads) o.gemm = nullptr;
      return o;
    }();
    return openblas;
  }
};

enum class Impl { Mla, Kernel, Blis, OpenBlas, Eigen };

template <Impl I>
void run(benchmark::State& state, mla::Transpose ta, mla::Transpose tb, mla::kernels::GemmKernel kernel = {}) {
  const std::int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const std::vector<float> a = noise(M * K), b = noise(N * K);
  std::vector<float> c(static_cast<std::size_t>(M * N));
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const bool a_t = ta == mla::Transpose::Yes, b_t = tb == mla::Transpose::Yes;
  const Eigen::Map<const Matrix> ea(a.data(), a_t ? K : M, a_t ? M : K), eb(b.data(), b_t ? N : K, b_t ? K : N);
  Eigen::Map<Matrix> ec(c.data(), M, N);
  const double peak = limits().flops_per_s;  // before the timing starts
  const mla::kernels::GemmKernel chosen = mla::kernels::gemm_kernel();
  const float one = 1.0f, zero = 0.0f;
  if constexpr (I == Impl::Kernel) mla::kernels::set_gemm_kernel(kernel);
  if constexpr (I == Impl::Blis) Blis::get().set_threads(bench::threads());
  if constexpr (I == Impl::OpenBlas) OpenBlas::get().set_threads(bench::threads());
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if constexpr (I == Impl::Mla || I == Impl::Kernel) {
      mla::kernels::gemm(mla::Cpu{}, ta, tb, M, N, K, 1.0f, a.data(), b.data(), 0.0f, c.data());
    } else if constexpr (I == Impl::Blis) {
      Blis::get().gemm(0, 0, M, N, K, &one, a.data(), a_t ? 1 : K, a_t ? M : 1, b.data(), b_t ? 1 : N, b_t ? K : 1,
                       &zero, c.data(), N, 1);
    } else if constexpr (I == Impl::OpenBlas) {
      constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
      const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
      OpenBlas::get().gemm(kRowMajor, a_t ? kTrans : kNoTrans, b_t ? kTrans : kNoTrans, m, n, k, 1.0f, a.data(),
                           a_t ? m : k, b.data(), b_t ? k : n, 0.0f, c.data(), n);
    } else if (a_t) {
      ec.noalias() = ea.transpose() * eb;
    } else {
      ec.noalias() = ea * eb.transpose();
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  // Plain numbers, not rate counters: Google Benchmark's aggregates of those (with
  // --benchmark_repetitions) are not the rate of the aggregate.
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if constexpr (I == Impl::Kernel) mla::kernels::set_gemm_kernel(chosen);
  const double flops = 2.0 * static_cast<double>(M * N * K) * static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(flops));
  state.counters["of_peak"] = flops / seconds / peak;
  if (I == Impl::Kernel && kernel == mla::kernels::GemmKernel::Avx2 && limits().avx2_flops_per_s < peak) {
    state.counters["of_avx2_peak"] = flops / seconds / limits().avx2_flops_per_s;
  }
}

void LinearShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({2048, 256, 256})->Args({2048, 1024, 256})->Args({2048, 256, 1024})
      ->Args({2048, 8192, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void WeightGradShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({256, 256, 2048})->Args({1024, 256, 2048})->Args({256, 1024, 2048})
      ->Args({8192, 256, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
}

/// The forward and weight-gradient rows of one implementation, named prefix + gemm[_wgrad].
template <Impl I>
void add_rows(const std::string& prefix, mla::kernels::GemmKernel kernel = {}) {
  using mla::Transpose;
  benchmark::RegisterBenchmark((prefix + "gemm").c_str(), [=](benchmark::State& s) {
    run<I>(s, Transpose::No, Transpose::Yes, kernel);
  })->Apply(LinearShapes);
  benchmark::RegisterBenchmark((prefix + "gemm_wgrad").c_str(), [=](benchmark::State& s) {
    run<I>(s, Transpose::Yes, Transpose::No, kernel);
  })->Apply(WeightGradShapes);
}

const bool kRegistered = [] {
  add_rows<Impl::Mla>("");
  for (const mla::kernels::GemmKernel k : mla::kernels::kGemmKernels) {
    if (mla::kernels::available(k)) add_rows<Impl::Kernel>("candidates/" + std::string(mla::kernels::name(k)) + "/", k);
  }
  if (Blis::get().gemm) {
    add_rows<Impl::Blis>("candidates/blis/");
    benchmark::AddCustomContext("blis_arch", Blis::get().arch(Blis::get().arch_id()));
  }
  if (OpenBlas::get().gemm) {
    add_rows<Impl::OpenBlas>("candidates/openblas/");
    if (OpenBlas::get().core) benchmark::AddCustomContext("openblas_core", OpenBlas::get().core());
  }
  add_rows<Impl::Eigen>("eigen/");
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
