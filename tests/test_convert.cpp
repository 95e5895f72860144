// Converting MHA, GQA and MQA models into MLA (mla/convert/to_mla.hpp): exact at full rank where
// the algebra allows (logits, the absorbed decode, a checkpoint round trip), the full-rope
// frequency choice and its rope_theta, a loss that rises as the rank falls, and refused input.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include <mla/convert/to_mla.hpp>

#include "support/check.hpp"
#include "support/decode.hpp"
#include "support/policies.hpp"

using namespace mla;        // NOLINT: test file
using namespace mla::test;  // NOLINT: the policies and small_config
using convert::Method;

namespace {

/// Weights far from the init's N(0, 0.02), so that attention is sharp and every path counts.
template <class P, class T>
void roughen(GPT<P, T>& model, std::uint64_t seed, double scale = 0.3) {
  auto values = model.parameters().values();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, scale);
  for (std::int64_t i = 0; i < values.numel(); ++i) values[i] += static_cast<T>(n(rng));
}

template <class P, class T>
Tensor<T> logits(const GPT<P, T>& model, const Tensor<std::int32_t>& ids) {
  NoGradGuard no_grad;
  Tape<T> tape;
  return model.forward(tape, ids).value().clone();
}

template <class P, class T>
double loss(const GPT<P, T>& model, const Tensor<std::int32_t>& ids, const Tensor<std::int32_t>& targets) {
  NoGradGuard no_grad;
  Tape<T> tape;
  return static_cast<double>(model.loss(tape, ids, targets).value()[0]);
}

/// The parameter `name` of `model` as a [rows, cols] view to write into.
template <class P, class T>
Tensor<T> param(GPT<P, T>& model, const std::string& name) {
  const std::int32_t i = model.parameters().find(name);
  REQUIRE_MESSAGE(i >= 0, name);
  return model.parameters().value(i);
}

}  // namespace

TEST_CASE_TEMPLATE("convert: at full rank, no-rope and decoupled-rope models convert exactly, in double and float", P,
                   MhaNoRope, MqaNoRope, GQA<2, Rope::None>, MhaDecoupled, GqaDecoupled) {
  const ModelConfig cfg = small_config();
  const auto ids = random_ids({2, 20}, cfg.vocab_size, 3);
  for (Method method : {Method::Svd, Method::Pca}) {
    const std::string name = convert::to_string(method);
    CAPTURE(name);
    GPT<P, double> exact(cfg, 1);
    roughen(exact, 2);
    const std::int64_t R = convert::max_kv_rank(exact.config());
    // Varied windows: the second moment must have full rank for Pca to span M's rows.
    std::vector<std::uint16_t> stream(400);
    for (std::size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<std::uint16_t>((i * 7 + i / 3) % 37);
    const auto sigma = convert::calibrate(exact, stream, 24, 12);
    const auto converted = convert::to_mla(exact, {.kv_rank = R, .method = method}, &sigma);
    const ModelConfig& c = converted.model->config();
    CHECK(c.attention == AttentionKind::MLA);
    CHECK(c.q_rank == 0);
    CHECK(c.kv_rank == R);
    CHECK(c.latent_norm == LatentNorm::None);
    CHECK(c.rope == (exact.config().rope == Rope::None ? Rope::None : Rope::Decoupled));
    CHECK(c.rope_theta == exact.config().rope_theta);
    for (double kept : converted.report.kv_energy_kept) CHECK(kept == doctest::Approx(1.0).epsilon(1e-12));
    CHECK(max_abs_diff(logits(*converted.model, ids), logits(exact, ids)) <= 1e-10);
  }
  // In float, from a float model, and through every decode path of the converted model.
  GPT<P> model(cfg, 1);
  roughen(model, 2);
  const auto converted = convert::to_mla(model, {.kv_rank = convert::max_kv_rank(model.config())});
  CHECK(max_abs_diff(logits(*converted.model, ids), logits(model, ids)) <= 1e-4);
  const auto& mla_model = *converted.model;
  CHECK(decode_vs_forward(mla_model, 3, 5, 24, CacheMode::Latent, DecodePath::Absorbed, 4) <= 1e-4);
  CHECK(decode_vs_forward(mla_model, 3, 5, 24, CacheMode::Latent, DecodePath::Materialized, 5) <= 1e-4);
  CHECK(decode_vs_forward(mla_model, 2, 5, 24, CacheMode::Full, DecodePath::Auto, 6) <= 1e-4);
}

TEST_CASE("convert: the converted model's checkpoint loads back with its config, rope_theta included") {
  ModelConfig cfg = small_config();
  GPT<MqaRope> model(cfg, 7);
  roughen(model, 8);
  const auto converted = convert::to_mla(model, {.kv_rank = 12, .rope_dim = 4});
  const auto dir = std::filesystem::temp_directory_path() / ("mla_test_convert_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  save_model(dir / "converted.safetensors", *converted.model);
  const auto loaded = load_model<MLA<>>(dir / "converted.safetensors");
  std::filesystem::remove_all(dir);
  CHECK(loaded->config() == converted.model->config());
  const auto ids = random_ids({1, 16}, cfg.vocab_size, 9);
  CHECK(bit_identical(logits(*loaded, ids), logits(*converted.model, ids)));
}

TEST_CASE("convert: full rope keeps every s-th frequency with rope_theta^(s*r/head_dim), chosen by importance") {
  // One kv head (MQA): the rotated keys of the kept frequencies are exact. Frequencies the
  // source does not use (their q and k rows zero) cost nothing to drop, so the conversion is
  // exact when the stride keeps all the used ones — and it must find that stride.
  ModelConfig cfg = small_config();  // head_dim 8: frequencies 0..3; rope_dim 4 keeps two
  struct Case {
    std::vector<int> unused;
    std::int64_t stride;
  };
  for (const Case& k : {Case{{1, 3}, 2}, Case{{1, 2}, 3}, Case{{2, 3}, 1}}) {
    CAPTURE(k.stride);
    GPT<MqaRope, double> model(cfg, 10);
    roughen(model, 11);
    for (int layer = 0; layer < 2; ++layer) {
      const std::string p = "layers." + std::to_string(layer) + ".attn.";
      auto q = param(model, p + "q_proj.weight"), kw = param(model, p + "k_proj.weight");
      for (int i : k.unused) {
        for (std::int64_t row : {std::int64_t{i}, std::int64_t{i + 4}}) {
          for (std::int64_t h = 0; h < 4; ++h)
            for (std::int64_t d = 0; d < 32; ++d) q.at(h * 8 + row, d) = 0;
          for (std::int64_t d = 0; d < 32; ++d) kw.at(row, d) = 0;
        }
      }
    }
    const auto converted = convert::to_mla(model, {.kv_rank = convert::max_kv_rank(model.config(), 4), .rope_dim = 4});
    CHECK(converted.report.rope_stride == k.stride);
    CHECK(converted.report.rope_importance_kept == doctest::Approx(1.0));
    CHECK(converted.model->config().rope_theta ==
          doctest::Approx(std::pow(10000.0, static_cast<double>(k.stride) * 4.0 / 8.0)));
    const auto ids = random_ids({2, 30}, cfg.vocab_size, 12);
    CHECK(max_abs_diff(logits(*converted.model, ids), logits(model, ids)) <= 1e-10);
  }
}

TEST_CASE("convert: full rope across heads — keys that differ by a factor per head fold into one shared key") {
  // RoRoPE's rotation across heads gathers the kv heads' keys of a frequency into one: when
  // every head's key is a multiple of one key, the shared rotated key carries all of it and the
  // conversion with every frequency kept is exact. Perturbed, it is not.
  const ModelConfig cfg = small_config();
  for (bool proportional : {true, false}) {
    CAPTURE(proportional);
    GPT<MhaRope, double> model(cfg, 13);
    roughen(model, 14);
    for (int layer = 0; layer < 2; ++layer) {
      auto kw = param(model, "layers." + std::to_string(layer) + ".attn.k_proj.weight");
      for (std::int64_t h = 1; h < 4; ++h)
        for (std::int64_t r = 0; r < 8; ++r)
          for (std::int64_t d = 0; d < 32; ++d)
            kw.at(h * 8 + r, d) = (proportional ? 0.0 : 0.05 * static_cast<double>((r * 3 + d) % 5 - 2)) +
                                  (0.5 - 0.4 * static_cast<double>(h)) * kw.at(r, d);
    }
    const auto converted = convert::to_mla(model, {.kv_rank = 32, .rope_dim = 8});
    CHECK(converted.report.rope_stride == 1);
    CHECK(converted.model->config().qk_nope_dim == 0);  // every dim rotated
    const auto ids = random_ids({2, 30}, cfg.vocab_size, 15);
    const double diff = max_abs_diff(logits(*converted.model, ids), logits(model, ids));
    if (proportional) CHECK(diff <= 1e-10);
    else CHECK(diff > 1e-6);
  }
  // An MLA model without nope dims decodes on every path like any other.
  GPT<MhaRope> model(cfg, 13);
  roughen(model, 14);
  const auto converted = convert::to_mla(model, {.kv_rank = 24, .rope_dim = 8});
  REQUIRE(converted.model->config().qk_nope_dim == 0);
  CHECK(decode_vs_forward(*converted.model, 3, 5, 24, CacheMode::Latent, DecodePath::Absorbed, 16) <= 1e-4);
  CHECK(decode_vs_forward(*converted.model, 3, 5, 24, CacheMode::Latent, DecodePath::Materialized, 17) <= 1e-4);
  CHECK(decode_vs_forward(*converted.model, 2, 5, 24, CacheMode::Full, DecodePath::Auto, 18) <= 1e-4);
}

TEST_CASE("convert: on a trained model the loss rises as the latent rank falls (Pca: strictly where it cuts energy)") {
  // A copy task (the stream is blocks of 6 tokens of 8 symbols, each block written twice) makes
  // the model lean on attention; 1000 AdamW steps teach it enough (a held-out loss of about 1.3,
  // against 2.08 for the symbols' frequencies) that a smaller latent costs loss.
  ModelConfig cfg = small_config();
  GPT<MhaDecoupled> model(cfg, 16);
  std::mt19937_64 rng(17);
  std::vector<std::uint16_t> stream;
  for (int w = 0; w < 800; ++w) {
    std::vector<std::uint16_t> half(6);
    for (auto& t : half) t = static_cast<std::uint16_t>(rng() % 8);
    stream.insert(stream.end(), half.begin(), half.end());
    stream.insert(stream.end(), half.begin(), half.end());
  }
  AdamW<float> opt(model.parameters(), AdamWOptions{.weight_decay = 0.0});
  Tensor<std::int32_t> ids = Tensor<std::int32_t>::empty({8, 24}), targets = Tensor<std::int32_t>::empty({8, 24});
  for (std::int64_t step = 0; step < 1000; ++step) {
    fill_train_batch(stream, 18, step, 0, ids, targets);
    Tape<float> tape;
    model.parameters().zero_grad();
    model.loss(tape, ids, targets).backward();
    opt.step(model.parameters(), 5e-3, 1.0);
  }
  // Evaluation windows aligned to the blocks, from the last quarter of the stream.
  fill_eval_batch(std::span<const std::uint16_t>(stream).subspan(24 * 300), 0, 24, ids, targets);
  const double original = loss(model, ids, targets);
  const auto sigma = convert::calibrate(model, stream, 24, 64);
  for (Method method : {Method::Svd, Method::Pca}) {
    const std::string name = convert::to_string(method);
    CAPTURE(name);
    std::vector<double> losses, kept;
    for (std::int64_t R : {32, 16, 8, 4, 2}) {
      const auto converted = convert::to_mla(model, {.kv_rank = R, .method = method}, &sigma);
      losses.push_back(loss(*converted.model, ids, targets));
      kept.push_back(converted.report.kv_energy_kept[0]);
    }
    std::string listed;
    for (std::size_t i = 0; i < losses.size(); ++i) {
      listed += (i ? ", " : "") + std::to_string(losses[i]) + " (kept " + std::to_string(kept[i]) + ")";
    }
    CAPTURE(listed);
    CHECK(losses.front() == doctest::Approx(original).epsilon(1e-5));
    // The energy each factorization keeps falls with the rank (Pca's barely above rank 8: the
    // calibration's activations span few dimensions)...
    for (std::size_t i = 1; i < kept.size(); ++i) CHECK(kept[i] <= kept[i - 1] + 1e-12);
    CHECK(kept.back() < 0.95);
    // ... and the loss with it. Where a lower rank loses no energy that matters (Pca's top
    // ranks, Svd's redundant weight directions) the loss may move either way by rounding or by
    // noise the model ignores: no step of Pca's may lower it by more than 0.1%. Svd's top ranks
    // drop weight directions the data hardly uses, which moves the loss by more (from rank 16
    // to 8, with 7% of the weights' energy: -0.18% on one build, within 0.1% on another): none of
    // those steps may lower it by more than 0.5%. Where Pca's rank cuts into the calibration's
    // keys and values (1% of their energy or more), the loss must rise. Svd does not know which
    // directions the data uses: from rank 4 it loses the copying head (a loss near the
    // symbols' 2.08), and ranks 4 and 2 come in either order with the build.
    for (std::size_t i = 1; i < losses.size(); ++i) {
      CAPTURE(i);
      if (method == Method::Pca) CHECK(losses[i] > losses[i - 1] * (1 - 1e-3));
      if (method == Method::Svd && i <= 2) CHECK(losses[i] > losses[i - 1] * (1 - 5e-3));
      if (method == Method::Pca && kept[i] < kept[i - 1] - 1e-2) CHECK(losses[i] > losses[i - 1]);
    }
    CHECK(losses.back() > original + 0.1);
  }
}

TEST_CASE("convert: refuses what it cannot convert, naming the problem") {
  const ModelConfig cfg = small_config();
  GPT<MhaRope> rope(cfg, 1);
  GPT<MhaNoRope> none(cfg, 1);
  GPT<MhaDecoupled> decoupled(cfg, 1);
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(none, {.kv_rank = 0}); }, {"cannot convert to MLA", "kv_rank 0", "between 1 and 32"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(none, {.kv_rank = 33}); }, {"kv_rank 33"});
  GPT<MqaNoRope> mqa(cfg, 1);
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(mqa, {.kv_rank = 17}); }, {"kv_rank 17", "and 16"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(rope, {.kv_rank = 8, .rope_dim = 3}); },
                                     {"rope_dim 3", "even"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(rope, {.kv_rank = 8, .rope_dim = 10}); },
                                     {"rope_dim 10", "head_dim = 8"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(none, {.kv_rank = 8, .rope_dim = 4}); },
                                     {"rope_dim 4", "no rope"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(decoupled, {.kv_rank = 8, .rope_dim = 2}); },
                                     {"rope_dim 2", "decoupled rope has 4"});
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(rope, {.kv_rank = 8, .method = Method::Pca}); },
                                     {"method pca", "calibration"});
  ModelConfig wide = cfg;
  wide.n_layers = 3;
  GPT<MhaRope> other(wide, 1);
  std::vector<std::uint16_t> stream(200, 3);
  const auto sigma = convert::calibrate(other, stream, 16, 4);
  check_throws_naming<ArgumentError>([&] { (void)convert::to_mla(rope, {.kv_rank = 8}, &sigma); },
                                     {"calibration has 3 layers", "model 2"});
}
