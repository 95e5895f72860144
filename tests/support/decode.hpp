// tests/support/decode.hpp — cached decoding checked against one full forward pass, for any
// policy on the CPU: the model tests' decode cases and the converted models' (test_convert).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support/check.hpp"

namespace mla::test {

/// Max |logit| difference between a full forward over each prompt+continuation and prefill of
/// the prompt followed by one-token decode steps, over every position after the prompt.
template <class P>
double decode_vs_forward(const GPT<P>& model, std::int64_t B, std::int64_t prompt, std::int64_t total,
                         CacheMode mode, DecodePath path, std::uint64_t seed) {
  const auto ids = random_ids({B, total}, model.config().vocab_size, seed);
  Tape<float> tape;
  Tensor<float> full;
  {
    NoGradGuard no_grad;
    full = model.forward(tape, ids).value();
  }
  const std::int64_t V = model.config().vocab_size;
  auto cache = model.make_cache(B, total, mode);
  // Ragged prompts: row b gets prompt + b tokens (capped), then decodes the rest.
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = std::min(prompt + b, total - 1);
    prompts.emplace_back(&ids.at(b, 0), &ids.at(b, 0) + len);
  }
  double worst = 0;
  auto compare = [&](const Tensor<float>& logits, std::int64_t b, std::int64_t pos) {
    for (std::int64_t v = 0; v < V; ++v)
      worst = std::max(worst, static_cast<double>(std::abs(logits[b * V + v] - full.at(b, pos, v))));
  };
  Tensor<float> logits = model.prefill(prompts, cache, path);
  for (std::int64_t b = 0; b < B; ++b) compare(logits, b, cache.lengths[b] - 1);
  // Decode until the shortest row reaches the end; rows that are done repeat their last token
  // only while others still run, so decode each step for the rows that have room.
  while (true) {
    std::int64_t min_len = total;
    for (auto l : cache.lengths) min_len = std::min(min_len, l);
    if (min_len >= total) break;
    std::vector<std::int32_t> next;
    bool all_room = true;
    for (std::int64_t b = 0; b < B; ++b) {
      if (cache.lengths[b] >= total) all_room = false;
      next.push_back(ids.at(b, std::min(cache.lengths[b], total - 1)));
    }
    if (!all_room) break;
    logits = model.decode(next, cache, path);
    for (std::int64_t b = 0; b < B; ++b) compare(logits, b, cache.lengths[b] - 1);
  }
  return worst;
}

}  // namespace mla::test
