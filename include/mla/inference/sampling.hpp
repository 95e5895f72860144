// mla/inference/sampling.hpp — choosing the next token from logits, and generating text.
//
//   temperature 0           greedy: the arg max (the lowest id among ties)
//   temperature t > 0       softmax(logits / t), restricted to the top_k largest (0: all) and
//                           then to the smallest set whose probability reaches top_p (1: all),
//                           renormalized, and drawn with a seeded RNG
// The RNG is mt19937_64 with uniforms built from its bits, so a seed gives the same tokens on
// every platform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "mla/core/error.hpp"
#include "mla/model/gpt.hpp"

namespace mla {

struct SamplingOptions {
  double temperature = 1.0;              // 0: greedy
  std::int64_t top_k = 0;                // 0: no limit
  double top_p = 1.0;                    // 1: no nucleus cut
  std::optional<std::int32_t> stop_token = std::nullopt;  // a row stops after emitting it
  std::uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt) : opt_(opt), rng_(opt.seed) {
    if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature)) {
      throw ArgumentError("sampler: temperature = " + std::to_string(opt.temperature) + " must be >= 0");
    }
    if (opt.top_k < 0) throw ArgumentError("sampler: top_k = " + std::to_string(opt.top_k) + " must be >= 0");
    if (!(opt.top_p > 0 && opt.top_p <= 1)) {
      throw ArgumentError("sampler: top_p = " + std::to_string(opt.top_p) + " must be in (0, 1]");
    }
  }

  [[nodiscard]] const SamplingOptions& options() const { return opt_; }

  /// The next token for one row of logits [V].
  template <class T>
  std::int32_t operator()(std::span<const T> logits) {
    const std::int64_t V = static_cast<std::int64_t>(logits.size());
    if (V == 0) throw ArgumentError("sampler: empty logits");
    if (opt_.temperature == 0) {
      return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    // Candidates by decreasing logit (ties: lower id first); keep top_k.
    order_.resize(static_cast<std::size_t>(V));
    std::iota(order_.begin(), order_.end(), 0);
    const std::int64_t k = opt_.top_k > 0 ? std::min(opt_.top_k, V) : V;
    auto greater = [&](std::int32_t a, std::int32_t b) {
      return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
             (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
    };
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), greater);
    order_.resize(static_cast<std::size_t>(k));
    // Probabilities of the candidates at this temperature, in double.
    probs_.resize(order_.size());
    const double top = static_cast<double>(logits[static_cast<std::size_t>(order_[0])]);
    double total = 0;
    for (std::size_t i = 0; i < order_.size(); ++i) {
      probs_[i] = std::exp((static_cast<double>(logits[static_cast<std::size_t>(order_[i])]) - top) / opt_.temperature);
      total += probs_[i];
    }
    // Nucleus: the shortest prefix whose mass reaches top_p.
    std::size_t keep = probs_.size();
    if (opt_.top_p < 1) {
      double mass = 0;
      for (std::size_t i = 0; i < probs_.size(); ++i) {
        mass += probs_[i] / total;
        if (mass >= opt_.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    double kept = 0;
    for (std::size_t i = 0; i < keep; ++i) kept += probs_[i];
    const double u = (static_cast<double>(rng_() >> 11) + 0.5) * 0x1.0p-53 * kept;
    double acc = 0;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += probs_[i];
      if (u < acc) return order_[i];
    }
    return order_[keep - 1];
  }

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;
  std::vector<std::int32_t> order_;
  std::vector<double> probs_;
};

/// Generates up to `max_new` tokens after each prompt (rows may differ in length); a row stops
/// early at the stop token (which is included). Returns the new tokens of each row.
template <AttentionPolicy P, class T, Device D>
std::vector<std::vector<std::int32_t>> generate(const GPT<P, T, D>& model,
                                                const std::vector<std::vector<std::int32_t>>& prompts,
                                                std::int64_t max_new, Sampler& sampler,
                                                CacheMode mode = GPT<P, T, D>::kDefaultCacheMode,
                                                DecodePath path = DecodePath::Auto) {
  const std::int64_t B = static_cast<std::int64_t>(prompts.size());
  std::int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(p.size()));
  const std::int64_t capacity = longest + std::max<std::int64_t>(max_new - 1, 0);
  if (capacity > model.config().max_seq_len) {
    throw ArgumentError("generate: prompt of " + std::to_string(longest) + " tokens plus " + std::to_string(max_new) +
                        " new ones exceeds max_seq_len = " + std::to_string(model.config().max_seq_len));
  }
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(B));
  if (max_new <= 0 || B == 0) return out;
  for (auto& row : out) row.reserve(static_cast<std::size_t>(max_new));
  auto cache = model.make_cache(B, std::max<std::int64_t>(capacity, 1), mode);
  const std::int64_t V = model.config().vocab_size;
  std::vector<bool> done(static_cast<std::size_t>(B), false);
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));
  std::vector<T> host(static_cast<std::size_t>(B * V));  // this step's logits on the host
  Tensor<T, D> logits = model.prefill(prompts, cache, path);
  // Each step from here allocates nothing (the model's decode step does not; the sampler
  // reuses its buffers): the work per token is free of the heap.
  for (std::int64_t step = 0; step < max_new; ++step) {
    D::copy_to_host(host.data(), logits.data(), host.size() * sizeof(T));
    bool all_done = true;
    for (std::int64_t b = 0; b < B; ++b) {
      if (done[static_cast<std::size_t>(b)]) continue;
      const std::int32_t tok = sampler(std::span<const T>(host).subspan(static_cast<std::size_t>(b * V), static_cast<std::size_t>(V)));
      out[static_cast<std::size_t>(b)].push_back(tok);
      next[static_cast<std::size_t>(b)] = tok;
      if (sampler.options().stop_token && tok == *sampler.options().stop_token) done[static_cast<std::size_t>(b)] = true;
      all_done = all_done && done[static_cast<std::size_t>(b)];
    }
    if (all_done || step + 1 == max_new) break;
    // Finished rows keep decoding their last token so the batch stays rectangular; their
    // results are ignored.
    logits = model.decode(next, cache, path);
  }
  return out;
}

}  // namespace mla
