// The GEMM kernels (gemm_kernel.hpp): which one runs where, and each of them against a double
// reference over odd shapes, transposes, alpha and beta, with the same bits on 1 to 4
// threads; the Linear kernels' fused bias and bias gradient against separate passes, on each.
//
// This program is built twice: for x86-64-v3 (AVX2) as every test is, and for the baseline
// x86-64 (test_gemm_kernels_baseline): the register-tile kernels are compiled by target
// attributes, so both builds carry them all and run the AVX-512 one where the CPU has it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::random_tensor;
using kernels::GemmKernel;
using mla::test::available_kernels;
using mla::test::KernelGuard;

namespace {

/// The CPU's feature flags as the kernel reports them (/proc/cpuinfo): an oracle apart from
/// the compiler's cpuid reading.
std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

}  // namespace

TEST_CASE("gemm kernels: the CPU's ISA decides which run, and the best is the default") {
  const std::set<std::string> flags = cpu_flags();
  REQUIRE_MESSAGE(!flags.empty(), "no flags line in /proc/cpuinfo");
  const bool avx512 = flags.count("avx512f") && flags.count("fma"), avx2 = flags.count("avx2") && flags.count("fma");
  CHECK(kernels::available(GemmKernel::Avx512) == avx512);
  CHECK(kernels::available(GemmKernel::Avx2) == avx2);
  CHECK(kernels::available(GemmKernel::Eigen));
  const GemmKernel best = avx512 ? GemmKernel::Avx512 : avx2 ? GemmKernel::Avx2 : GemmKernel::Eigen;
  CHECK(kernels::best_gemm_kernel() == best);
  // MLA_GEMM_KERNEL, when set (ctest runs this case under each kernel's name, and a wrong one),
  // chooses the kernel; a name that is unknown, or of a kernel this CPU cannot run, is refused.
  const char* forced = std::getenv("MLA_GEMM_KERNEL");
  if (forced && *forced) {
    const std::string text = forced;
    const bool runnable = std::any_of(kernels::kGemmKernels.begin(), kernels::kGemmKernels.end(),
                                      [&](GemmKernel k) { return kernels::name(k) == text && kernels::available(k); });
    CAPTURE(text);
    if (!runnable) {
      CHECK_THROWS_WITH_AS((void)kernels::gemm_kernel(), doctest::Contains(("MLA_GEMM_KERNEL=" + text + ": ").c_str()),
                           std::invalid_argument);
      return;
    }
    CHECK(kernels::name(kernels::gemm_kernel()) == text);
  } else {
    CHECK(kernels::gemm_kernel() == best);
  }
  // A kernel this CPU cannot run is refused, and the one in use stays.
  const GemmKernel before = kernels::gemm_kernel();
  for (const GemmKernel k : kernels::kGemmKernels) {
    if (kernels::available(k)) continue;
    CAPTURE(kernels::name(k));
    CHECK_THROWS_WITH_AS(kernels::set_gemm_kernel(k), doctest::Contains("this CPU cannot run"), std::invalid_argument);
    CHECK_THROWS_AS((void)kernels::gemm_kernel_named(kernels::name(k)), std::invalid_argument);
    CHECK(kernels::gemm_kernel() == before);
  }
  CHECK_THROWS_WITH_AS((void)kernels::gemm_kernel_named("sse"), doctest::Contains("not a GEMM kernel"),
                       std::invalid_argument);
  for (const GemmKernel k : available_kernels()) CHECK(kernels::gemm_kernel_named(kernels::name(k)) == k);
}

TEST_CASE("gemm kernels: each against a double reference, the same bits on 1, 2, 3 and 4 threads") {
  // Shapes past the blocked threshold (for the register tiles: more than one block of k, units
  // of several row groups and column chunks, chunks cut at kNC columns, one thread's group cut
  // at kMC rows, edges of every width; Eigen's slabs split by rows or by columns) and beside it
  // (Eigen's expression path, split in column bands when long; for 1 to kFewRows rows against
  // B^T, the dot products of gemm_few_rows; for few rows and columns over many steps of k,
  // slices of k summed afterwards, one per thread or, on 4 threads, one after another on all),
  // with alpha and beta.
  struct Case {
    std::int64_t M, N, K;
  };
  const Case cases[] = {{130, 70, 90},  {9, 300, 41},  {64, 64, 16},   {300, 9, 41},   {200, 150, 260},
                        {40, 400, 64},  {7, 5, 3},     {70, 60, 800},  {2100, 20, 50}, {16, 1000, 40},
                        {1, 1000, 200}, {3, 700, 100}, {40, 1400, 64}, {5000, 30, 30}, {13, 33, 17},
                        {8, 300, 70},   {6, 1000, 40}, {2, 9, 20},     {40, 30, 2500}, {20, 50, 4200}};
  for (const GemmKernel kernel : available_kernels()) {
    const KernelGuard use(kernel);
    for (const Case& c : cases) {
      for (const float beta : {0.5f, 0.0f}) {
        for (const Transpose ta : {Transpose::No, Transpose::Yes}) {
          for (const Transpose tb : {Transpose::No, Transpose::Yes}) {
            CAPTURE(kernels::name(kernel));
            CAPTURE(c.M);
            CAPTURE(c.N);
            CAPTURE(c.K);
            CAPTURE(beta);
            CAPTURE(static_cast<int>(ta));
            CAPTURE(static_cast<int>(tb));
            const auto a = random_tensor<float>({c.M * c.K}, 1), b = random_tensor<float>({c.K * c.N}, 2);
            auto c0 = random_tensor<float>({c.M * c.N}, 3);
            // beta = 0 ignores what C held, NaN included.
            if (beta == 0.0f) {
              for (std::int64_t i = 0; i < c.M * c.N; ++i) c0[i] = std::numeric_limits<float>::quiet_NaN();
            }
            const float alpha = 0.75f;
            std::vector<std::vector<float>> results;
            for (const int threads : {1, 2, 3, 4}) {
              const test::ThreadsGuard guard(threads);
              Tensor<float> out = c0.clone();
              kernels::gemm(Cpu{}, ta, tb, c.M, c.N, c.K, alpha, a.data(), b.data(), beta, out.data());
              results.push_back(out.to_vector());
            }
            CHECK(results[0] == results[1]);
            CHECK(results[0] == results[2]);
            CHECK(results[0] == results[3]);
            // Each product rounds to float once per multiply-add at most: K + 2 roundings of
            // terms no larger than the sum of |alpha x y| (and |beta c|).
            double worst = 0;
            for (std::int64_t i = 0; i < c.M; ++i) {
              for (std::int64_t j = 0; j < c.N; ++j) {
                double ref = beta == 0.0f ? 0.0 : beta * static_cast<double>(c0[i * c.N + j]);
                double magnitude = std::abs(ref);
                for (std::int64_t k = 0; k < c.K; ++k) {
                  const double x = ta == Transpose::No ? a[i * c.K + k] : a[k * c.M + i];
                  const double y = tb == Transpose::No ? b[k * c.N + j] : b[j * c.K + k];
                  ref += alpha * x * y;
                  magnitude += std::abs(alpha * x * y);
                }
                const double got = results[0][static_cast<std::size_t>(i * c.N + j)];
                const double bound = static_cast<double>(c.K + 2) * std::numeric_limits<float>::epsilon() * magnitude;
                worst = std::max(worst, std::isnan(got) ? 1e30 : std::abs(ref - got) / bound);
              }
            }
            CHECK(worst <= 1.0);
          }
        }
      }
    }
  }
}

TEST_CASE("gemm kernels: Eigen's blocked driver against the double reference too") {
  // The fallback for double and for float on GemmKernel::Eigen, called directly.
  const auto a = random_tensor<float>({70 * 800}, 1), b = random_tensor<float>({800 * 60}, 2);
  std::vector<float> c(70 * 60), ref(70 * 60, 0.0f);
  kernels::detail::gemm_eigen_blocked(Transpose::No, Transpose::No, 70, 60, 800, 1.0f, a.data(), b.data(), 0.0f,
                                      c.data());
  double worst = 0;
  for (int i = 0; i < 70; ++i) {
    for (int j = 0; j < 60; ++j) {
      double r = 0;
      for (int k = 0; k < 800; ++k) r += static_cast<double>(a[i * 800 + k]) * b[k * 60 + j];
      worst = std::max(worst, std::abs(r - c[static_cast<std::size_t>(i * 60 + j)]));
    }
  }
  CHECK(worst < 1e-3);
}

TEST_CASE("gemm schedule: units cover C once, within the blocking, from groups of rows before chunks of columns") {
  using kernels::detail::packed::schedule;
  using kernels::detail::packed::kUnitsPerThread;
  constexpr std::int64_t mr = 12, nr = 32, nc = 1024;
  for (const std::int64_t threads : {1, 2, 3, 8}) {
    for (const std::int64_t M : {1, 11, 100, 256, 1024, 2048, 8192, 50000}) {
      for (const std::int64_t N : {1, 40, 256, 1024, 8192}) {
        CAPTURE(threads);
        CAPTURE(M);
        CAPTURE(N);
        const auto plan = schedule(M, N, threads, mr, nr, nc);
        const std::int64_t row_panels = (M + mr - 1) / mr, col_panels = (N + nr - 1) / nr;
        // Whole panels, every row and column in exactly one group and one chunk.
        CHECK(plan.group_rows % mr == 0);
        CHECK(plan.chunk_cols % nr == 0);
        CHECK(plan.groups == (M + plan.group_rows - 1) / plan.group_rows);
        CHECK(plan.chunks == (N + plan.chunk_cols - 1) / plan.chunk_cols);
        CHECK((plan.groups - 1) * plan.group_rows < M);
        CHECK((plan.chunks - 1) * plan.chunk_cols < N);
        CHECK(plan.chunk_cols <= std::max(nc, nr));
        CHECK(plan.group_rows <= kernels::detail::packed::kMC);
        const std::int64_t wanted = threads == 1 ? 1 : kUnitsPerThread * threads;
        if (threads == 1 && M <= kernels::detail::packed::kMC && N <= nc) CHECK(plan.units() == 1);
        // A second chunk of columns packs its rows of A again: only where the row panels are
        // fewer than the units wanted, or the columns exceed one chunk.
        if (plan.chunks > 1) CHECK((row_panels < wanted || col_panels * nr > nc));
        if (row_panels >= wanted && M <= kernels::detail::packed::kMC * wanted) CHECK(plan.groups >= wanted);
      }
    }
  }
}

TEST_CASE("gemm k slices: only few rows and columns over many steps of k, at least 1024 steps each") {
  using kernels::detail::packed::k_slices;
  CHECK(k_slices(256, 256, 2048) == 2);   // the attention projections' weight gradients
  CHECK(k_slices(1024, 256, 2048) == 2);  // the MLP's shapes (which slice only without a fused bias gradient)
  CHECK(k_slices(256, 1024, 2048) == 2);
  CHECK(k_slices(40, 30, 2500) == 2);
  CHECK(k_slices(20, 50, 4200) == 4);
  CHECK(k_slices(64, 64, 100000) == 4);
  CHECK(k_slices(8192, 256, 2048) == 1);  // the logits' weight gradient: C too large
  CHECK(k_slices(2048, 256, 1024) == 1);  // forward products: k too short
  CHECK(k_slices(2048, 2048, 4096) == 1);
  CHECK(k_slices(1500, 100, 2048) == 1);  // k not twice C's longer side
}

TEST_CASE("linear kernels: the bias folded into the products gives the bits of separate passes, on each kernel") {
  // y = x w^T + bias and dw += dout^T x, db += column sums of dout, against broadcast + gemm and
  // gemm + accumulate_column_sums: rows and columns split between threads (dw [20, 500]: each
  // group of dout's rows in several column chunks, one of which sums them), more than one
  // block of k, and a product small enough for Eigen's expression path.
  struct Case {
    std::int64_t R, Out, In;
  };
  for (const GemmKernel kernel : available_kernels()) {
    const KernelGuard use(kernel);
    for (const Case& c : {Case{300, 70, 90}, Case{256, 200, 40}, Case{1000, 33, 700}, Case{300, 20, 500},
                          Case{5, 9, 3}, Case{8, 500, 70}}) {
      for (const int threads : {1, 2, 3}) {
        CAPTURE(kernels::name(kernel));
        CAPTURE(c.R);
        CAPTURE(c.Out);
        CAPTURE(c.In);
        CAPTURE(threads);
        const test::ThreadsGuard guard(threads);
        const auto x = random_tensor<float>({c.R, c.In}, 1), w = random_tensor<float>({c.Out, c.In}, 2);
        const auto bias = random_tensor<float>({c.Out}, 3), dout = random_tensor<float>({c.R, c.Out}, 4);
        auto y = Tensor<float>::empty({c.R, c.Out}), y_ref = Tensor<float>::empty({c.R, c.Out});
        kernels::linear_forward(Cpu{}, c.R, c.Out, c.In, x.data(), w.data(), bias.data(), y.data());
        kernels::broadcast_rows(Cpu{}, bias.data(), y_ref.data(), c.R, c.Out);
        kernels::gemm(Cpu{}, Transpose::No, Transpose::Yes, c.R, c.Out, c.In, 1.0f, x.data(), w.data(), 1.0f,
                      y_ref.data());
        CHECK(y.to_vector() == y_ref.to_vector());

        const auto dw0 = random_tensor<float>({c.Out, c.In}, 5), db0 = random_tensor<float>({c.Out}, 6);
        auto dw = dw0.clone(), db = db0.clone(), dw_ref = dw0.clone(), db_ref = db0.clone();
        kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), dw.data(), db.data());
        kernels::gemm(Cpu{}, Transpose::Yes, Transpose::No, c.Out, c.In, c.R, 1.0f, dout.data(), x.data(), 1.0f,
                      dw_ref.data());
        kernels::accumulate_column_sums(Cpu{}, dout.data(), db_ref.data(), c.R, c.Out);
        CHECK(dw.to_vector() == dw_ref.to_vector());
        CHECK(db.to_vector() == db_ref.to_vector());
        // Either gradient alone.
        auto db_only = db0.clone(), dw_only = dw0.clone();
        kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), static_cast<float*>(nullptr),
                                    db_only.data());
        kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), dw_only.data(),
                                    static_cast<float*>(nullptr));
        CHECK(db_only.to_vector() == db_ref.to_vector());
        CHECK(dw_only.to_vector() == dw_ref.to_vector());
      }
    }
  }
}
