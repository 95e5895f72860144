// The GPT model over every attention policy: parameters as docs/design.md §5, a gradient check of
// the whole model, config validation, KV-cache sizes, and cached decoding against one full
// forward pass.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "support/check.hpp"
#include "support/decode.hpp"
#include "support/policies.hpp"

using namespace mla;        // NOLINT: test file
using namespace mla::test;  // NOLINT: the policies and small_config
using mla::test::check_throws_naming;
using mla::test::decode_vs_forward;

#define ALL_POLICIES MLA_TEST_ALL_POLICIES

TEST_CASE_TEMPLATE("model: parameters carry the docs/design.md §5 names and shapes", P, ALL_POLICIES) {
  GPT<P> model(small_config(), 1);
  const ModelConfig& c = model.config();
  const auto& ps = model.parameters();
  auto shape_of = [&](const std::string& name) {
    const std::int32_t i = ps.find(name);
    REQUIRE_MESSAGE(i >= 0, name);
    return ps.entries()[static_cast<std::size_t>(i)].shape;
  };
  CHECK(shape_of("wte.weight") == Shape{37, 32});
  CHECK((ps.find("wpe.weight") >= 0) == (c.rope == Rope::None));
  CHECK(shape_of("lm_head.weight") == Shape{37, 32});
  CHECK(shape_of("lm_head.bias") == Shape{37});
  CHECK(shape_of("ln_f.weight") == Shape{32});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    CHECK(shape_of(p + "mlp.fc1.weight") == Shape{128, 32});
    CHECK(shape_of(p + "mlp.fc2.weight") == Shape{32, 128});
    CHECK(shape_of(p + "ln1.bias") == Shape{32});
    if constexpr (LatentPolicy<P>) {
      const std::int64_t N = c.qk_nope_dim, R = c.qk_rope_dim;
      if (c.q_rank > 0) {
        CHECK(shape_of(p + "attn.q_a_proj.weight") == Shape{c.q_rank, 32});
        CHECK(shape_of(p + "attn.q_a_layernorm.weight") == Shape{c.q_rank});
        CHECK(shape_of(p + "attn.q_b_proj.weight") == Shape{4 * (N + R), c.q_rank});
      } else {
        CHECK(shape_of(p + "attn.q_proj.weight") == Shape{4 * (N + R), 32});
      }
      CHECK(shape_of(p + "attn.kv_a_proj_with_mqa.weight") == Shape{c.kv_rank + R, 32});
      CHECK(shape_of(p + "attn.kv_a_layernorm.bias") == Shape{c.kv_rank});
      CHECK(shape_of(p + "attn.kv_b_proj.weight") == Shape{4 * (N + c.v_head_dim), c.kv_rank});
      CHECK(shape_of(p + "attn.o_proj.weight") == Shape{32, 4 * c.v_head_dim});
    } else {
      const std::int64_t G = c.n_kv_heads;
      const std::int64_t k_out = c.rope == Rope::Decoupled ? G * c.qk_nope_dim + c.qk_rope_dim : G * 8;
      CHECK(shape_of(p + "attn.q_proj.weight") == Shape{32, 32});
      CHECK(shape_of(p + "attn.k_proj.weight") == Shape{k_out, 32});
      CHECK(shape_of(p + "attn.v_proj.weight") == Shape{G * 8, 32});
      CHECK(shape_of(p + "attn.o_proj.weight") == Shape{32, 32});
    }
  }
}

TEST_CASE("model: the reference experiments' MLA defaults (q_rank D/2, kv_rank 2D/3, rope dh/2)") {
  ModelConfig cfg{.vocab_size = 8192, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = 256};
  const ModelConfig c = resolve<MLA<>>(cfg);
  CHECK(c.q_rank == 128);
  CHECK(c.kv_rank == 170);
  CHECK(c.qk_rope_dim == 16);
  CHECK(c.qk_nope_dim == 16);
  CHECK(c.v_head_dim == 32);
  CHECK(c.rope == Rope::Decoupled);
  CHECK(resolve<MLA<Dynamic, 0>>(cfg).rope == Rope::None);
}

TEST_CASE_TEMPLATE("model: gradient check of the loss over every parameter, in double", P, ALL_POLICIES) {
  ModelConfig cfg{.vocab_size = 5, .d_model = 16, .n_heads = 2, .n_layers = 1, .max_seq_len = 4};
  GPT<P, double> model(cfg, 3);
  // Larger weights than the init, so every path carries a gradient well above rounding.
  auto values = model.parameters().values();
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  for (std::int64_t i = 0; i < values.numel(); ++i) values[i] += u(rng);
  const auto ids = test::random_ids({2, 3}, 5, 7);
  const auto targets = test::random_ids({2, 3}, 5, 8);
  const std::int64_t n = values.numel();

  Tape<double> tape;
  model.parameters().zero_grad();
  model.loss(tape, ids, targets).backward();
  const auto grads = model.parameters().grads().clone();

  double diff2 = 0, norm2 = 0;
  const double h = 1e-6;
  for (std::int64_t i = 0; i < n; ++i) {
    const double saved = values[i];
    Tape<double> t;
    values[i] = saved + h;
    const double plus = model.loss(t, ids, targets).value()[0];
    t.clear();
    values[i] = saved - h;
    const double minus = model.loss(t, ids, targets).value()[0];
    values[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    diff2 += (numeric - grads[i]) * (numeric - grads[i]);
    norm2 += numeric * numeric;
  }
  REQUIRE(norm2 > 0);
  CHECK(std::sqrt(diff2 / norm2) <= 1e-6);
}

TEST_CASE("model: loss() equals cross_entropy(forward()) in value and every gradient") {
  // 4 x 300 rows: the fused loss takes them in two chunks, of 1024 and 176 rows.
  ModelConfig cfg = small_config();
  cfg.max_seq_len = 300;
  GPT<MlaRope> model(cfg, 4);
  const auto ids = test::random_ids({4, 300}, cfg.vocab_size, 9);
  const auto targets = test::random_ids({4, 300}, cfg.vocab_size, 10);
  const auto loss_and_grads = [&](bool fused) {
    Tape<float> tape;
    model.parameters().zero_grad();
    const auto loss = fused ? model.loss(tape, ids, targets) : cross_entropy(model.forward(tape, ids), targets);
    loss.backward();
    return std::pair{static_cast<double>(loss.value()[0]), model.parameters().grads().clone()};
  };
  const auto [fused, fused_grads] = loss_and_grads(true);
  const auto [plain, plain_grads] = loss_and_grads(false);
  CHECK(fused == doctest::Approx(plain).epsilon(1e-6));
  REQUIRE(mla::test::max_abs_diff(plain_grads, Tensor<float>::zeros(plain_grads.shape())) > 0);
  CHECK(mla::test::rel_diff(fused_grads, plain_grads) <= 1e-5);
}

TEST_CASE("model: invalid configurations name the field and the values") {
  ModelConfig c = small_config();
  check_throws_naming<ConfigError>([&] { GPT<GQA<3>> m(c, 1); }, {"n_heads = 4", "n_kv_heads = 3"});
  ModelConfig odd = c;
  odd.d_model = 30;
  check_throws_naming<ConfigError>([&] { GPT<MHA<>> m(odd, 1); }, {"d_model = 30", "n_heads = 4"});
  check_throws_naming<ConfigError>([&] { GPT<MLA<40>> m(c, 1); }, {"kv_rank = 40", "d_model = 32"});
  check_throws_naming<ConfigError>([&] { GPT<MLA<Dynamic, 10>> m(c, 1); }, {"qk_rope_dim = 10", "head_dim = 8"});
  ModelConfig fixed = c;
  fixed.kv_rank = 16;
  check_throws_naming<ConfigError>([&] { GPT<MLA<12>> m(fixed, 1); }, {"kv_rank = 16", "fixes it to 12"});
  ModelConfig dyn = c;
  check_throws_naming<ConfigError>([&] { GPT<GQA<Dynamic>> m(dyn, 1); }, {"n_kv_heads"});
  dyn.n_kv_heads = 2;
  GPT<GQA<Dynamic>> ok(dyn, 1);
  CHECK(ok.config().n_kv_heads == 2);
  ModelConfig zero = c;
  zero.n_layers = 0;
  check_throws_naming<ConfigError>([&] { GPT<MHA<>> m(zero, 1); }, {"n_layers = 0"});
}

TEST_CASE("model: KV-cache bytes per token follow each variant's formula") {
  // d_model 256, 8 heads, 4 layers; float.
  ModelConfig cfg{.vocab_size = 100, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = 64};
  const std::int64_t L = 4, f = 4, dh = 32;
  CHECK(GPT<MHA<>>(cfg, 1).cache_bytes_per_token() == L * 2 * 8 * dh * f);
  CHECK(GPT<GQA<2>>(cfg, 1).cache_bytes_per_token() == L * 2 * 2 * dh * f);
  CHECK(GPT<MQA<>>(cfg, 1).cache_bytes_per_token() == L * 2 * 1 * dh * f);
  GPT<MLA<>> mla(cfg, 1);
  CHECK(mla.cache_bytes_per_token() == L * (170 + 16) * f);
  CHECK(mla.cache_bytes_per_token(CacheMode::Full) == L * 8 * (16 + 16 + 32) * f);
  auto cache = mla.make_cache(2, 64);
  CHECK(cache.layers[0].latent.shape() == Shape{2, 64, 186});
  CHECK(cache.bytes_per_token == L * 186 * f);
  check_throws_naming<ConfigError>([&] { (void)GPT<MHA<>>(cfg, 1).make_cache(1, 8, CacheMode::Latent); },
                                   {"latent"});
}

TEST_CASE_TEMPLATE("decode: prefill + token-by-token decode equals one full forward", P, ALL_POLICIES) {
  ModelConfig cfg = small_config();
  GPT<P> model(cfg, 11);
  for (std::int64_t B : {1, 3}) {
    for (std::int64_t prompt : {1, 5, 17}) {
      CAPTURE(B);
      CAPTURE(prompt);
      CHECK(decode_vs_forward(model, B, prompt, 24, GPT<P>::kDefaultCacheMode, DecodePath::Auto, 100 + prompt) <= 1e-4);
    }
  }
}

TEST_CASE_TEMPLATE("decode: MLA absorbed, materialized and full-cache paths agree with the forward", P, MlaRope, MlaNoRope, MlaNoQ) {
  GPT<P> model(small_config(), 12);
  for (std::int64_t B : {1, 3}) {
    CAPTURE(B);
    CHECK(decode_vs_forward(model, B, 6, 30, CacheMode::Latent, DecodePath::Absorbed, 1) <= 1e-4);
    CHECK(decode_vs_forward(model, B, 6, 30, CacheMode::Latent, DecodePath::Materialized, 2) <= 1e-4);
    CHECK(decode_vs_forward(model, B, 6, 30, CacheMode::Full, DecodePath::Auto, 3) <= 1e-4);
  }
}

TEST_CASE("latent norm: rmsnorm has weights only, none has no tensors; the defaults are layernorm's") {
  auto names = [](LatentNorm norm) {
    ModelConfig cfg = small_config();
    cfg.latent_norm = norm;
    GPT<MlaRope> model(cfg, 1);
    std::set<std::string> out;
    for (const auto& e : model.parameters().entries())
      if (e.name.find("_layernorm") != std::string::npos) out.insert(e.name);
    return out;
  };
  CHECK(names(LatentNorm::LayerNorm) ==
        std::set<std::string>{"layers.0.attn.q_a_layernorm.weight", "layers.0.attn.q_a_layernorm.bias",
                              "layers.0.attn.kv_a_layernorm.weight", "layers.0.attn.kv_a_layernorm.bias",
                              "layers.1.attn.q_a_layernorm.weight", "layers.1.attn.q_a_layernorm.bias",
                              "layers.1.attn.kv_a_layernorm.weight", "layers.1.attn.kv_a_layernorm.bias"});
  CHECK(names(LatentNorm::RmsNorm) ==
        std::set<std::string>{"layers.0.attn.q_a_layernorm.weight", "layers.0.attn.kv_a_layernorm.weight",
                              "layers.1.attn.q_a_layernorm.weight", "layers.1.attn.kv_a_layernorm.weight"});
  CHECK(names(LatentNorm::None).empty());
  ModelConfig gqa = small_config();
  gqa.latent_norm = LatentNorm::RmsNorm;
  check_throws_naming<ConfigError>([&] { GPT<Gqa> m(gqa, 1); }, {"latent_norm = rmsnorm", "MLA only"});
}

TEST_CASE_TEMPLATE("latent norm: rmsnorm and none, gradient-checked in double and decoded on every path", P, MlaRope,
                   MlaNoQ) {
  for (LatentNorm norm : {LatentNorm::RmsNorm, LatentNorm::None}) {
    CAPTURE(to_string(norm));
    ModelConfig cfg{.vocab_size = 5, .d_model = 16, .n_heads = 2, .n_layers = 1, .max_seq_len = 4};
    cfg.latent_norm = norm;
    GPT<P, double> model(cfg, 3);
    auto values = model.parameters().values();
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    for (std::int64_t i = 0; i < values.numel(); ++i) values[i] += u(rng);
    const auto ids = test::random_ids({2, 3}, 5, 7), targets = test::random_ids({2, 3}, 5, 8);
    Tape<double> tape;
    model.parameters().zero_grad();
    model.loss(tape, ids, targets).backward();
    const auto grads = model.parameters().grads().clone();
    double diff2 = 0, norm2 = 0;
    for (std::int64_t i = 0; i < values.numel(); ++i) {
      const double saved = values[i];
      Tape<double> t;
      values[i] = saved + 1e-6;
      const double plus = model.loss(t, ids, targets).value()[0];
      t.clear();
      values[i] = saved - 1e-6;
      const double minus = model.loss(t, ids, targets).value()[0];
      values[i] = saved;
      const double numeric = (plus - minus) / 2e-6;
      diff2 += (numeric - grads[i]) * (numeric - grads[i]);
      norm2 += numeric * numeric;
    }
    REQUIRE(norm2 > 0);
    CHECK(std::sqrt(diff2 / norm2) <= 1e-6);

    ModelConfig big = small_config();
    big.latent_norm = norm;
    GPT<P> decoder(big, 12);
    CHECK(decode_vs_forward(decoder, 3, 6, 30, CacheMode::Latent, DecodePath::Absorbed, 1) <= 1e-4);
    CHECK(decode_vs_forward(decoder, 3, 6, 30, CacheMode::Latent, DecodePath::Materialized, 2) <= 1e-4);
    CHECK(decode_vs_forward(decoder, 3, 6, 30, CacheMode::Full, DecodePath::Auto, 3) <= 1e-4);
  }
}
