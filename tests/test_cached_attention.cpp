// The decode kernels against the direct reference attention: cached_attention (MHA family)
// and latent_cached_attention (MLA, absorbed), at lengths that split the keys across threads.
#include <doctest/doctest.h>

#include <algorithm>

#include <utility>

#include <mla/backend/cpu/attention_reference.hpp>
#include <mla/backend/cpu/cached_attention.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::cast;
using mla::test::random_tensor;

namespace {

std::int64_t max_length(const std::vector<std::int32_t>& lengths) {
  return *std::max_element(lengths.begin(), lengths.end());
}

/// Reference for row b: copies its L cached keys/values into contiguous [1, G, L, D] tensors and
/// runs the direct attention with Tq queries at the end of the L.
template <class T>
Tensor<T> reference_row(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, std::int64_t b, std::int64_t L,
                        T scale) {
  const std::int64_t H = q.dim(1), Tq = q.dim(2), Dk = q.dim(3), G = k.dim(1), Dv = v.dim(3);
  auto kb = Tensor<T>::empty({1, G, L, Dk}), vb = Tensor<T>::empty({1, G, L, Dv});
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t j = 0; j < L; ++j) {
      for (std::int64_t d = 0; d < Dk; ++d) kb.at(0, g, j, d) = k.at(b, g, j, d);
      for (std::int64_t d = 0; d < Dv; ++d) vb.at(0, g, j, d) = v.at(b, g, j, d);
    }
  auto qb = q.slice(b, b + 1).clone();
  auto out = Tensor<T>::empty({1, H, Tq, Dv});
  kernels::attention_reference_forward(Cpu{}, kernels::AttentionShape{1, H, G, Tq, L, Dk, Dv}, scale, qb.data(),
                                       kb.data(), vb.data(), out.data(), static_cast<T*>(nullptr));
  return out;
}

/// The latent cache [B, S, Dc + Dr] seen as multi-query attention: keys are whole cached rows
/// [B, 1, S, Dc + Dr], values their first Dc columns [B, 1, S, Dc].
template <class T>
std::pair<Tensor<T>, Tensor<T>> latents_as_mqa(const Tensor<T>& cache, std::int64_t Dc) {
  const std::int64_t B = cache.shape()[0], S = cache.shape()[1], W = cache.shape()[2];
  auto k = Tensor<T>::empty({B, 1, S, W}), v = Tensor<T>::empty({B, 1, S, Dc});
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < S; ++j)
      for (std::int64_t d = 0; d < W; ++d) {
        k.at(b, 0, j, d) = cache.at(b, j, d);
        if (d < Dc) v.at(b, 0, j, d) = cache.at(b, j, d);
      }
  return {k, v};
}

}  // namespace

TEST_CASE_TEMPLATE("cached_attention equals the reference, split or not, ragged rows", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  struct Case {
    std::int64_t B, H, G, Tq, Dk, Dv;
    std::vector<std::int32_t> lengths;
  };
  const Case cases[] = {{1, 4, 1, 1, 16, 8, {1500}},       // MQA decode: keys split across threads
                        {1, 8, 8, 1, 8, 8, {700}},         // MHA decode
                        {3, 4, 2, 3, 8, 12, {5, 1030, 3}},  // GQA, three queries, ragged
                        {2, 2, 1, 70, 4, 4, {70, 600}}};    // a prefill chunk over a long row
  for (int threads : {1, 2, 4}) {
    const test::ThreadsGuard guard(threads);
    for (const Case& c : cases) {
      CAPTURE(threads);
      CAPTURE(c.lengths[0]);
      const std::int64_t S = 1600;
      auto q = cast<T>(random_tensor({c.B, c.H, c.Tq, c.Dk}, 1, -2, 2));
      auto k = cast<T>(random_tensor({c.B, c.G, S, c.Dk}, 2, -2, 2));
      auto v = cast<T>(random_tensor({c.B, c.G, S, c.Dv}, 3));
      auto out = Tensor<T>::empty({c.B, c.H, c.Tq, c.Dv});
      const T scale = T(0.4);
      kernels::cached_attention(Cpu{}, kernels::CachedAttentionShape{c.B, c.H, c.G, c.Tq, S, c.Dk, c.Dv}, scale,
                                q.data(), k.data(), v.data(), c.lengths.data(), max_length(c.lengths), out.data());
      for (std::int64_t b = 0; b < c.B; ++b) {
        const auto ref = reference_row(q, k, v, b, c.lengths[static_cast<std::size_t>(b)], scale);
        CHECK(test::max_abs_diff(out.slice(b, b + 1).clone(), ref) <= tol);
      }
    }
  }
}

TEST_CASE_TEMPLATE("latent_cached_attention equals attention over the latents as keys and values", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const std::int64_t B = 2, H = 4, Tq = 2, S = 1300, Dc = 12, Dr = 4, W = Dc + Dr;
  const std::vector<std::int32_t> lengths{1290, 9};
  auto q = cast<T>(random_tensor({B, H, Tq, W}, 4, -2, 2));
  auto cache = cast<T>(random_tensor({B, S, W}, 5));
  for (int threads : {1, 2, 3}) {
    const test::ThreadsGuard guard(threads);
    auto out = Tensor<T>::empty({B, H, Tq, Dc});
    kernels::latent_cached_attention(Cpu{}, B, H, Tq, S, Dc, Dr, T(0.3), q.data(), cache.data(), lengths.data(),
                                     max_length(lengths), out.data());
    // The same as multi-query attention with keys = cached rows, values = their first Dc.
    const auto [k, v] = latents_as_mqa(cache, Dc);
    for (std::int64_t b = 0; b < B; ++b) {
      const auto ref = reference_row(q, k, v, b, lengths[static_cast<std::size_t>(b)], T(0.3));
      CHECK(test::max_abs_diff(out.slice(b, b + 1).clone(), ref) <= tol);
    }
  }
}

TEST_CASE_TEMPLATE("cached kernels at model sizes: SIMD tails, every row tile, bit-identical across thread counts", T,
                   float, double) {
  // Head dims that are whole SIMD packets (32) and ones that end in a partial packet (37, 19,
  // the latent 170 + 16), query row counts that use every row tile (1, 4, 8, 8 + 4 + 2 + 1), and
  // lengths that split into key ranges unevenly; on every ISA's tiles this CPU runs (float).
  // Whole packets with 4 or more rows per kv head take the transposed score tiles on AVX-512, and
  // lengths that are no whole number of vectors of keys their per-key tail.
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  // Double always runs on Eigen's packets: once is enough.
  const auto isas = std::is_same_v<T, float> ? test::available_kernels() : std::vector{kernels::gemm_kernel()};
  SUBCASE("cached_attention") {
    for (const kernels::GemmKernel kernel : isas) {
      CAPTURE(kernels::name(kernel));
      const test::KernelGuard use(kernel);
      struct Case {
        std::int64_t B, H, G, Tq, Dk, Dv;
        std::vector<std::int32_t> lengths;
      };
      const Case cases[] = {{2, 8, 8, 1, 32, 32, {1100, 513}},  // MHA decode
                            {1, 8, 1, 1, 37, 19, {2049}},       // MQA, partial packets
                            {2, 8, 1, 1, 32, 32, {1500, 37}},   // MQA decode, transposed scores
                            {2, 8, 2, 3, 32, 32, {700, 5}},     // GQA, 12 rows per kv head
                            {1, 15, 1, 1, 19, 37, {600}},       // 15 rows: tiles of 8, 4, 2, 1
                            {1, 4, 1, 20, 32, 32, {1500}}};     // two blocks of rows, keys split
      for (const Case& c : cases) {
        CAPTURE(c.Dk);
        const std::int64_t S = 2100;
        auto q = cast<T>(random_tensor({c.B, c.H, c.Tq, c.Dk}, 11, -2, 2));
        auto k = cast<T>(random_tensor({c.B, c.G, S, c.Dk}, 12, -2, 2));
        auto v = cast<T>(random_tensor({c.B, c.G, S, c.Dv}, 13));
        const T scale = T(0.3);
        Tensor<T> first;
        for (int threads : {1, 2, 3, 4}) {
          CAPTURE(threads);
          const test::ThreadsGuard guard(threads);
          auto out = Tensor<T>::empty({c.B, c.H, c.Tq, c.Dv});
          kernels::cached_attention(Cpu{}, kernels::CachedAttentionShape{c.B, c.H, c.G, c.Tq, S, c.Dk, c.Dv}, scale,
                                    q.data(), k.data(), v.data(), c.lengths.data(), max_length(c.lengths), out.data());
          if (threads == 1) {
            for (std::int64_t b = 0; b < c.B; ++b) {
              const auto ref = reference_row(q, k, v, b, c.lengths[static_cast<std::size_t>(b)], scale);
              CHECK(test::max_abs_diff(out.slice(b, b + 1).clone(), ref) <= tol);
            }
            first = out;
          } else {
            CHECK(test::bit_identical(out, first));
          }
        }
      }
    }
  }
  SUBCASE("latent_cached_attention") {
    for (const kernels::GemmKernel kernel : isas) {
      CAPTURE(kernels::name(kernel));
      const test::KernelGuard use(kernel);
      const std::int64_t B = 3, H = 8, S = 2200, Dc = 170, Dr = 16, W = Dc + Dr;
      const std::vector<std::int32_t> lengths{2100, 700, 3};
      for (std::int64_t Tq : {1, 3}) {
        CAPTURE(Tq);
        auto q = cast<T>(random_tensor({B, H, Tq, W}, 14, -1, 1));
        auto cache = cast<T>(random_tensor({B, S, W}, 15));
        const auto [k, v] = latents_as_mqa(cache, Dc);
        Tensor<T> first;
        for (int threads : {1, 2, 3, 4}) {
          CAPTURE(threads);
          const test::ThreadsGuard guard(threads);
          auto out = Tensor<T>::empty({B, H, Tq, Dc});
          kernels::latent_cached_attention(Cpu{}, B, H, Tq, S, Dc, Dr, T(0.1), q.data(), cache.data(), lengths.data(),
                                           max_length(lengths), out.data());
          if (threads == 1) {
            for (std::int64_t b = 0; b < B; ++b) {
              const auto ref = reference_row(q, k, v, b, lengths[static_cast<std::size_t>(b)], T(0.1));
              CHECK(test::max_abs_diff(out.slice(b, b + 1).clone(), ref) <= tol);
            }
            first = out;
          } else {
            CHECK(test::bit_identical(out, first));
          }
        }
      }
    }
  }
}
