// Quantized KV caches (CacheDtype bf16 and int8): the stored forms round-trip within their
// bounds; the decode kernels reading them equal the float kernels over the dequantized cache;
// against the float cache they stay within the bound the quantization implies; a model decodes
// with every dtype, and its cache bytes per token are exactly what is stored.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <mla/backend/cpu/cached_attention.hpp>
#include <mla/mla.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::random_tensor;

namespace {

constexpr CacheDtype kQuantized[] = {CacheDtype::BF16, CacheDtype::Int8};

/// A plane [rows, W] of dtype holding x [rows, W], and its values read back.
struct Stored {
  CachePlane<float, Cpu> plane;
  Tensor<float> back;
};

Stored store(const Tensor<float>& x, CacheDtype dtype) {
  const std::int64_t W = x.shape()[-1], rows = x.numel() / W;
  Stored s{CachePlane<float, Cpu>::zeros(x.shape(), dtype), Tensor<float>::empty(x.shape())};
  for (std::int64_t r = 0; r < rows; ++r) kernels::store_row(Cpu{}, s.plane.rows_out(), r, x.data() + r * W, W);
  for (std::int64_t r = 0; r < rows; ++r) kernels::load_row(Cpu{}, s.plane.rows(), r, 0, W, s.back.data() + r * W);
  return s;
}

/// Values from 1e-3 to 1e2 in magnitude, both signs, some exact zeros.
Tensor<float> spread(Shape shape, std::uint64_t seed) {
  auto t = random_tensor<float>(shape, seed, -1.0, 1.0);
  auto e = random_tensor<float>(shape, seed + 1, -3.0, 2.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = i % 29 == 0 ? 0.0f : t[i] * std::pow(10.0f, e[i]);
  return t;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.bytes())) == 0;
}

}  // namespace

TEST_CASE("int8 rows: within scale/2 of every value, one scale per group of 64, the largest stored as 127") {
  for (std::int64_t W : {1, 17, 64, 65, 170, 186}) {
    CAPTURE(W);
    const auto x = spread({5, W}, static_cast<std::uint64_t>(W));
    const Stored s = store(x, CacheDtype::Int8);
    const std::int64_t groups = quant_groups(W);
    CHECK(s.plane.scales.shape() == Shape{5, groups});
    for (std::int64_t r = 0; r < 5; ++r) {
      for (std::int64_t g = 0; g < groups; ++g) {
        const float scale = s.plane.scales.at(r, g);
        float top = 0;
        int top_q = 0;
        for (std::int64_t d = g * kQuantGroup; d < std::min(W, (g + 1) * kQuantGroup); ++d) {
          top = std::max(top, std::fabs(x.at(r, d)));
          top_q = std::max(top_q, std::abs(static_cast<int>(s.plane.int8.at(r, d))));
          // q * scale rounds once more, by at most half an ulp of the value.
          CHECK(std::fabs(s.back.at(r, d) - x.at(r, d)) <= scale / 2 + std::fabs(x.at(r, d)) * 0x1p-24f);
        }
        CHECK(scale == top / 127.0f);
        CHECK(top_q == (top > 0 ? 127 : 0));
      }
    }
  }
  // A group of zeros: scale 0, values 0.
  const Stored z = store(Tensor<float>::zeros({1, 70}), CacheDtype::Int8);
  CHECK(z.plane.scales.at(0, 0) == 0.0f);
  CHECK(same_bits(z.back, Tensor<float>::zeros({1, 70})));
}

TEST_CASE("bf16 rows: round to nearest even, within 2^-8 relative; NaN stays NaN") {
  const auto x = spread({3, 100}, 7);
  const Stored s = store(x, CacheDtype::BF16);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    CHECK(std::fabs(s.back[i] - x[i]) <= std::fabs(x[i]) * 0x1p-8f);
    CHECK((std::bit_cast<std::uint32_t>(s.back[i]) & 0xffffu) == 0u);  // what bf16 holds
  }
  // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  CHECK(kernels::detail::from_bf16(kernels::detail::to_bf16(1.0f + 0x1p-8f)) == 1.0f);
  CHECK(kernels::detail::from_bf16(kernels::detail::to_bf16(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f);
  CHECK(std::isnan(kernels::detail::from_bf16(kernels::detail::to_bf16(std::nanf("")))));
}

TEST_CASE("cached_attention over a quantized cache == the float kernel over its dequantized values") {
  // Dh = 70: the last vector of a row, [Dh - lanes, Dh), straddles the first two int8 groups on
  // AVX-512 (16 lanes) and AVX2 (8) alike, so it widens with two scales.
  for (const kernels::GemmKernel kernel : test::available_kernels()) {
    const test::KernelGuard use(kernel);
    for (const std::int64_t Dh : {40, 70}) {
      const std::int64_t B = 3, H = 4, G = 2, Tq = 1, S = 700;
      const std::vector<std::int32_t> lengths{700, 1, 333};
      const auto q = random_tensor<float>({B, H, Tq, Dh}, 1);
      const auto k = random_tensor<float>({B, G, S, Dh}, 2), v = random_tensor<float>({B, G, S, Dh}, 3);
      const kernels::CachedAttentionShape shape{B, H, G, Tq, S, Dh, Dh};
      const float scale = 1 / std::sqrt(static_cast<float>(Dh));
      for (CacheDtype dtype : kQuantized) {
        CAPTURE(kernels::name(kernel));
        CAPTURE(Dh);
        CAPTURE(std::string(to_string(dtype)));
        const Stored ks = store(k, dtype), vs = store(v, dtype);
        auto out = Tensor<float>::empty({B, H, Tq, Dh}), expected = Tensor<float>::empty({B, H, Tq, Dh});
        kernels::cached_attention(Cpu{}, shape, scale, q.data(), ks.plane.rows(), vs.plane.rows(), lengths.data(), 700,
                                  out.data());
        kernels::cached_attention(Cpu{}, shape, scale, q.data(), ks.back.data(), vs.back.data(), lengths.data(), 700,
                                  expected.data());
        // The same products in the same order: widening in registers gives the very same values.
        CHECK(same_bits(out, expected));
      }
    }
  }
}

TEST_CASE("latent_cached_attention over a quantized cache == the float kernel over its dequantized rows") {
  const std::int64_t B = 2, H = 8, Tq = 2, S = 600, Dc = 170, Dr = 16, W = Dc + Dr;
  const std::vector<std::int32_t> lengths{600, 257};
  const auto q = random_tensor<float>({B, H, Tq, W}, 4);
  const auto rows = random_tensor<float>({B, S, W}, 5);
  const float scale = 0.125f;
  for (const kernels::GemmKernel kernel : test::available_kernels())
  for (CacheDtype dtype : kQuantized) {
    const test::KernelGuard use(kernel);
    CAPTURE(kernels::name(kernel));
    CAPTURE(std::string(to_string(dtype)));
    auto cache = CachePlane<float, Cpu>::zeros({B, S, dtype == CacheDtype::Int8 ? Dc : W}, dtype);
    auto rope = dtype == CacheDtype::Int8 ? CachePlane<float, Cpu>::zeros({B, S, Dr}, CacheDtype::BF16)
                                          : CachePlane<float, Cpu>{};
    const std::vector<std::int32_t> starts{0, 0};
    kernels::append_latent(Cpu{}, B, S, S, Dc, Dr, rows.data(), starts.data(), cache.rows_out(), rope.rows_out());
    auto back = Tensor<float>::empty({B, S, W});  // the dequantized rows
    for (std::int64_t r = 0; r < B * S; ++r) {
      if (dtype == CacheDtype::Int8) {
        kernels::load_row(Cpu{}, cache.rows(), r, 0, Dc, back.data() + r * W);
        kernels::load_row(Cpu{}, rope.rows(), r, 0, Dr, back.data() + r * W + Dc);
      } else {
        kernels::load_row(Cpu{}, cache.rows(), r, 0, W, back.data() + r * W);
      }
    }
    auto out = Tensor<float>::empty({B, H, Tq, Dc}), expected = Tensor<float>::empty({B, H, Tq, Dc});
    kernels::latent_cached_attention(Cpu{}, B, H, Tq, S, Dc, Dr, scale, q.data(), cache.rows(), rope.rows(),
                                     lengths.data(), 600, out.data());
    kernels::latent_cached_attention(Cpu{}, B, H, Tq, S, Dc, Dr, scale, q.data(), back.data(), lengths.data(), 600,
                                     expected.data());
    // bf16: one segment, the same sums. int8: the scores sum c_kv and k_pe apart, so float rounding.
    if (dtype == CacheDtype::BF16) CHECK(same_bits(out, expected));
    CHECK(test::max_abs_diff(out, expected) <= 1e-5);
  }
}

// The bound: with scores s_j = scale q.k_j, the quantized cache's scores move by at most
// delta = max_j |s^_j - s_j|, so every softmax weight by a factor within e^(+-2 delta) and
// sum_j |p^_j - p_j| <= e^(2 delta) - 1. Then
//   |o^ - o| = |sum p^_j v^_j - sum p_j v_j| <= max_j |v^_j - v_j| + (e^(2 delta) - 1) max_j |v_j|,
// per query row, with delta and the value errors measured on the cache itself.
TEST_CASE("decode over a quantized cache stays within the bound its quantization implies") {
  const std::int64_t B = 2, H = 4, G = 1, Tq = 1, S = 512, Dh = 64;
  const std::vector<std::int32_t> lengths{512, 200};
  const auto q = random_tensor<float>({B, H, Tq, Dh}, 11, -2.0, 2.0);
  const auto k = random_tensor<float>({B, G, S, Dh}, 12, -2.0, 2.0), v = random_tensor<float>({B, G, S, Dh}, 13);
  const kernels::CachedAttentionShape shape{B, H, G, Tq, S, Dh, Dh};
  const float scale = 1 / std::sqrt(static_cast<float>(Dh));
  auto exact = Tensor<float>::empty({B, H, Tq, Dh});
  kernels::cached_attention(Cpu{}, shape, scale, q.data(), k.data(), v.data(), lengths.data(), 512, exact.data());
  for (CacheDtype dtype : kQuantized) {
    CAPTURE(std::string(to_string(dtype)));
    const Stored ks = store(k, dtype), vs = store(v, dtype);
    auto out = Tensor<float>::empty({B, H, Tq, Dh});
    kernels::cached_attention(Cpu{}, shape, scale, q.data(), ks.plane.rows(), vs.plane.rows(), lengths.data(), 512,
                              out.data());
    double worst_ratio = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t h = 0; h < H; ++h) {
        double delta = 0, dv = 0, vmax = 0;
        for (std::int64_t j = 0; j < lengths[static_cast<std::size_t>(b)]; ++j) {
          double s = 0, s_hat = 0;
          for (std::int64_t d = 0; d < Dh; ++d) {
            s += static_cast<double>(q.at(b, h, 0, d)) * k.at(b, 0, j, d);
            s_hat += static_cast<double>(q.at(b, h, 0, d)) * ks.back.at(b, 0, j, d);
            dv = std::max(dv, std::fabs(static_cast<double>(vs.back.at(b, 0, j, d)) - v.at(b, 0, j, d)));
            vmax = std::max(vmax, std::fabs(static_cast<double>(v.at(b, 0, j, d))));
          }
          delta = std::max(delta, scale * std::fabs(s_hat - s));
        }
        const double bound = dv + std::expm1(2 * delta) * vmax + 1e-6;  // + the float kernels' rounding
        double err = 0;
        for (std::int64_t d = 0; d < Dh; ++d) err = std::max(err, std::fabs(double(out.at(b, h, 0, d)) - exact.at(b, h, 0, d)));
        CHECK(err <= bound);
        worst_ratio = std::max(worst_ratio, err / bound);
      }
    }
    CHECK(worst_ratio > 0);  // the quantization did change the output: the bound was tested
    MESSAGE(std::string(to_string(dtype)) << ": the largest error is " << worst_ratio << " of its bound");
  }
}

namespace {

ModelConfig tiny(std::int64_t max_seq_len = 48) {
  return ModelConfig{.vocab_size = 50, .d_model = 64, .n_heads = 4, .n_layers = 2, .max_seq_len = max_seq_len};
}

/// Prefills ragged prompts and decodes a few greedy steps; returns every step's logits.
template <class P>
std::vector<Tensor<float>> decode_run(const GPT<P>& model, CacheMode mode, CacheDtype dtype, DecodePath path) {
  auto cache = model.make_cache(3, 40, mode, dtype);
  const std::vector<std::vector<std::int32_t>> prompts{{1, 2, 3, 4, 5, 6, 7}, {9}, {3, 1, 4, 1, 5}};
  std::vector<Tensor<float>> out{model.prefill(prompts, cache, path)};
  for (int step = 0; step < 6; ++step) {
    std::vector<std::int32_t> next;
    for (std::int64_t b = 0; b < 3; ++b) next.push_back(static_cast<std::int32_t>((7 * step + 3 * b) % 50));
    out.push_back(model.decode(std::span<const std::int32_t>(next), cache, path));
  }
  return out;
}

/// Decoding with dtype's cache against the float cache: close (a loose sanity bound; the
/// kernel-level tests above hold the tight ones), and not the same (the cache was quantized).
template <class P>
void check_decodes(const GPT<P>& model, CacheMode mode, DecodePath path) {
  const auto reference = decode_run(model, mode, CacheDtype::F32, path);
  for (CacheDtype dtype : kQuantized) {
    CAPTURE(std::string(to_string(dtype)));
    const auto got = decode_run(model, mode, dtype, path);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, test::max_abs_diff(got[i], reference[i]));
    CHECK(worst > 0);
    CHECK(worst < (dtype == CacheDtype::BF16 ? 2e-2 : 5e-2));
  }
}

}  // namespace

TEST_CASE_TEMPLATE("a model decodes ragged rows through bf16 and int8 caches", P, MHA<>, GQA<2>, MQA<>,
                   MHA<Rope::Decoupled>, MLA<>, MLA<Dynamic, 0>) {
  const GPT<P> model(tiny(), 3);
  if constexpr (LatentPolicy<P>) {
    check_decodes(model, CacheMode::Latent, DecodePath::Absorbed);
    check_decodes(model, CacheMode::Latent, DecodePath::Materialized);
  }
  check_decodes(model, CacheMode::Full, DecodePath::Auto);
}

TEST_CASE("cache bytes per token: exactly what every variant and dtype stores") {
  const ModelConfig cfg{.vocab_size = 50, .d_model = 256, .n_heads = 8, .n_layers = 3, .max_seq_len = 16};
  const std::int64_t L = 3, dh = 32;
  // Per token and layer: K and V of each kv head (rows of 32: int8 32 + one 4-byte scale).
  auto kv = [&](std::int64_t G, CacheDtype dtype) {
    const std::int64_t row = dtype == CacheDtype::F32 ? 4 * dh : dtype == CacheDtype::BF16 ? 2 * dh : dh + 4;
    return L * 2 * G * row;
  };
  for (CacheDtype dtype : {CacheDtype::F32, CacheDtype::BF16, CacheDtype::Int8}) {
    CAPTURE(std::string(to_string(dtype)));
    CHECK(GPT<MHA<>>(cfg, 1).cache_bytes_per_token(CacheMode::Full, dtype) == kv(8, dtype));
    CHECK(GPT<GQA<2>>(cfg, 1).cache_bytes_per_token(CacheMode::Full, dtype) == kv(2, dtype));
    CHECK(GPT<MQA<>>(cfg, 1).cache_bytes_per_token(CacheMode::Full, dtype) == kv(1, dtype));
  }
  // MLA (kv_rank 170, rope 16): f32 186 x 4; bf16 186 x 2; int8 170 + 3 scales x 4 + 16 x 2 (bf16 k_pe).
  const GPT<MLA<>> mla(cfg, 1);
  CHECK(mla.cache_bytes_per_token(CacheMode::Latent, CacheDtype::F32) == L * 186 * 4);
  CHECK(mla.cache_bytes_per_token(CacheMode::Latent, CacheDtype::BF16) == L * 186 * 2);
  CHECK(mla.cache_bytes_per_token(CacheMode::Latent, CacheDtype::Int8) == L * (170 + 3 * 4 + 16 * 2));
  // Its full cache: per head K of 16 + 16 and V of 32 (one int8 group each).
  CHECK(mla.cache_bytes_per_token(CacheMode::Full, CacheDtype::Int8) == L * 8 * ((32 + 4) + (32 + 4)));
  // The ropeless MLA's int8 latent has no bf16 part.
  const GPT<MLA<Dynamic, 0>> nope(cfg, 1);
  CHECK(nope.cache_bytes_per_token(CacheMode::Latent, CacheDtype::Int8) == L * (170 + 3 * 4));
  // What make_cache allocates is bytes_per_token per slot.
  for (CacheDtype dtype : {CacheDtype::F32, CacheDtype::BF16, CacheDtype::Int8}) {
    auto cache = mla.make_cache(2, 16, CacheMode::Latent, dtype);
    std::int64_t allocated = 0;
    cache.for_each_plane([&](CachePlane<float, Cpu>& p) {
      allocated += p.wide.defined() ? p.wide.bytes() : 0;
      allocated += p.bf16.defined() ? p.bf16.bytes() : 0;
      allocated += p.int8.defined() ? p.int8.bytes() + p.scales.bytes() : 0;
    });
    CHECK(cache.bytes_per_token == mla.cache_bytes_per_token(CacheMode::Latent, dtype));
    CHECK(allocated == 2 * 16 * cache.bytes_per_token);
  }
}

TEST_CASE("quantized caches are refused where they do not exist: double models") {
  const GPT<MHA<>, double> model(tiny(), 1);
  test::check_throws_naming<ArgumentError>([&] { (void)model.make_cache(1, 8, CacheMode::Full, CacheDtype::Int8); },
                                           {"int8", "f32"});
  CHECK_NOTHROW((void)model.make_cache(1, 8, CacheMode::Full, CacheDtype::F32));
}
