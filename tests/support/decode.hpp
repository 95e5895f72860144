// tests/support/decode.hpp — cached decoding checked against one full forward pass, for any
// policy on any device: the model tests' decode cases, the converted models' (test_convert) and
// the Thrust/CUDA backend's (tests/device/test_thrust_model.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "support/check.hpp"

namespace mla::test {

/// Max |logit| difference between one full forward over each row's tokens and prefill of a
/// ragged prompt (row b: prompt + b tokens, at most total - 1) followed by one-token decode
/// steps, over every position after the prompt, until the longest row holds `total` tokens.
/// The logits are compared on the host.
template <class P, Device D>
double decode_vs_forward(const GPT<P, float, D>& model, std::int64_t B, std::int64_t prompt, std::int64_t total,
                         CacheMode mode, DecodePath path, std::uint64_t seed) {
  const std::int64_t V = model.config().vocab_size;
  const auto ids = random_ids({B, total}, V, seed);  // on the host
  std::vector<float> full;                             // [B, total, V]
  {
    NoGradGuard no_grad;
    Tape<float, D> tape;
    const auto on_device = Tensor<std::int32_t, D>::from(ids.shape(), std::span<const std::int32_t>(ids.data(), ids.numel()));
    full = model.forward(tape, on_device).value().to_vector();
  }
  auto cache = model.make_cache(B, total, mode);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = std::min(prompt + b, total - 1);
    prompts.emplace_back(&ids.at(b, 0), &ids.at(b, 0) + len);
  }
  double worst = 0;
  auto compare = [&](const std::vector<float>& logits) {
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t pos = cache.lengths[static_cast<std::size_t>(b)] - 1;
      for (std::int64_t v = 0; v < V; ++v) {
        const float want = full[static_cast<std::size_t>((b * total + pos) * V + v)];
        worst = std::max(worst, static_cast<double>(std::abs(logits[static_cast<std::size_t>(b * V + v)] - want)));
      }
    }
  };
  compare(model.prefill(prompts, cache, path).to_vector());
  while (*std::max_element(cache.lengths.begin(), cache.lengths.end()) < total) {
    std::vector<std::int32_t> next;
    for (std::int64_t b = 0; b < B; ++b) next.push_back(ids.at(b, cache.lengths[static_cast<std::size_t>(b)]));
    compare(model.decode(next, cache, path).to_vector());
  }
  return worst;
}

}  // namespace mla::test
