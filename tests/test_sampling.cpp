// Sampling (greedy, temperature, top-k, top-p, stop token) and generation.
#include <doctest/doctest.h>

#include <map>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_throws_naming;

TEST_CASE("sampling: greedy picks the arg max, lowest id among ties") {
  Sampler s(SamplingOptions{.temperature = 0});
  const std::vector<float> logits{0.1f, 2.0f, -1.0f, 2.0f};
  CHECK(s(std::span<const float>(logits)) == 1);
}

TEST_CASE("sampling: temperature draws follow the softmax") {
  const std::vector<double> logits{std::log(1.0), std::log(2.0), std::log(7.0)};  // p = .1 .2 .7
  Sampler s(SamplingOptions{.temperature = 1.0, .seed = 3});
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s(std::span<const double>(logits))];
  CHECK(counts[0] / double(n) == doctest::Approx(0.1).epsilon(0.1));
  CHECK(counts[1] / double(n) == doctest::Approx(0.2).epsilon(0.1));
  CHECK(counts[2] / double(n) == doctest::Approx(0.7).epsilon(0.05));
  // Temperature 0.5 squares the odds: p ∝ 1, 4, 49.
  Sampler cold(SamplingOptions{.temperature = 0.5, .seed = 4});
  int twos = 0;
  for (int i = 0; i < n; ++i) twos += cold(std::span<const double>(logits)) == 2;
  CHECK(twos / double(n) == doctest::Approx(49.0 / 54.0).epsilon(0.02));
}

TEST_CASE("sampling: top-k and top-p restrict the candidates; a seed reproduces the draws") {
  const std::vector<float> logits{0.0f, 3.0f, 2.9f, 1.0f, 2.8f};
  Sampler top1(SamplingOptions{.temperature = 1.0, .top_k = 1, .seed = 1});
  Sampler top2(SamplingOptions{.temperature = 1.0, .top_k = 2, .seed = 1});
  Sampler nucleus(SamplingOptions{.temperature = 1.0, .top_p = 0.3, .seed = 1});
  std::map<int, int> k2;
  for (int i = 0; i < 2000; ++i) {
    CHECK(top1(std::span<const float>(logits)) == 1);
    CHECK(nucleus(std::span<const float>(logits)) == 1);  // p(1) ≈ 0.36 >= 0.3 alone
    ++k2[top2(std::span<const float>(logits))];
  }
  CHECK(k2.size() == 2);
  CHECK(k2.count(1) == 1);
  CHECK(k2.count(2) == 1);
  Sampler a(SamplingOptions{.seed = 9}), b(SamplingOptions{.seed = 9});
  for (int i = 0; i < 100; ++i) CHECK(a(std::span<const float>(logits)) == b(std::span<const float>(logits)));
  check_throws_naming<ArgumentError>([] { Sampler(SamplingOptions{.top_p = 0}); }, {"top_p"});
  check_throws_naming<ArgumentError>([] { Sampler(SamplingOptions{.temperature = -1}); }, {"temperature"});
}

TEST_CASE("generate: MLA greedy text is the same through the absorbed and decompressing paths") {
  ModelConfig cfg{.vocab_size = 64, .d_model = 48, .n_heads = 4, .n_layers = 2, .max_seq_len = 64};
  GPT<MLA<>> model(cfg, 21);
  // Sharper weights than the init, so the greedy path is not decided by rounding.
  auto v = model.parameters().values();
  for (std::int64_t i = 0; i < v.numel(); ++i) v[i] *= 8.0f;
  const std::vector<std::vector<std::int32_t>> prompts{{1, 2, 3, 4, 5}, {7, 8}};
  Sampler g1(SamplingOptions{.temperature = 0}), g2(SamplingOptions{.temperature = 0}), g3(SamplingOptions{.temperature = 0});
  const auto absorbed = generate(model, prompts, 32, g1, CacheMode::Latent, DecodePath::Absorbed);
  const auto materialized = generate(model, prompts, 32, g2, CacheMode::Latent, DecodePath::Materialized);
  const auto full = generate(model, prompts, 32, g3, CacheMode::Full);
  REQUIRE(absorbed[0].size() == 32);
  CHECK(absorbed == materialized);
  CHECK(absorbed == full);
  // Not a constant stream: the test would pass vacuously otherwise.
  CHECK(std::set<std::int32_t>(absorbed[0].begin(), absorbed[0].end()).size() > 1);
}

TEST_CASE("generate: the stop token ends a row, and too long a request is refused") {
  ModelConfig cfg{.vocab_size = 16, .d_model = 16, .n_heads = 2, .n_layers = 1, .max_seq_len = 32};
  GPT<MHA<>> model(cfg, 5);
  Sampler greedy(SamplingOptions{.temperature = 0});
  const auto free_run = generate(model, {{1, 2, 3}}, 10, greedy);
  REQUIRE(free_run[0].size() == 10);
  Sampler stopping(SamplingOptions{.temperature = 0, .stop_token = free_run[0][2]});
  const auto stopped = generate(model, {{1, 2, 3}}, 10, stopping);
  const auto first = std::find(free_run[0].begin(), free_run[0].end(), free_run[0][2]);
  CHECK(stopped[0] == std::vector<std::int32_t>(free_run[0].begin(), first + 1));
  check_throws_naming<ArgumentError>([&] { (void)generate(model, {{1, 2, 3}}, 40, greedy); }, {"max_seq_len = 32"});
}
