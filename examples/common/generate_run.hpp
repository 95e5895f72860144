// examples/common/generate_run.hpp — generate's decoding, on either device: load the checkpoint,
// prefill the KV cache with the prompt, sample on the host (generate.cpp describes the flags and
// the output). generate.cpp instantiates it for mla::Cpu; examples/cuda/generate_cuda.cu for
// mla::Cuda, behind generate_on_cuda.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/text.hpp"
#include "common/variants.hpp"

namespace examples::generation {

namespace fs = std::filesystem;

struct Options {
  fs::path checkpoint, tokenizer;
  std::string prompt, stop, cache, decode = "auto", cache_dtype = "f32";
  std::int64_t tokens = 100;
  double temperature = 0.8, top_p = 1.0;
  std::int64_t top_k = 0;
  std::uint64_t seed = 0;
  int threads = 0;
  std::string device = "cpu";  // where the model runs: cpu or cuda
};

/// What stops generation: a token id or a text (neither when --stop is not given).
struct Stop {
  std::optional<int> id;
  std::string text;

  static Stop parse(const std::string& arg, std::int64_t vocab) {
    Stop s;
    if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) {
      const long long id = arg.size() > 6 ? vocab : std::stoll(arg);
      if (id >= vocab) {
        throw std::runtime_error("--stop " + arg + " is not a token id below the vocabulary size " +
                                 std::to_string(vocab));
      }
      s.id = static_cast<int>(id);
    } else {
      s.text = arg;
    }
    return s;
  }
};

inline mla::DecodePath parse_decode(const std::string& s) {
  if (s == "absorbed") return mla::DecodePath::Absorbed;
  if (s == "materialized") return mla::DecodePath::Materialized;
  return mla::DecodePath::Auto;
}

/// The text that `out` adds after the prompt. Decoded together with the prompt, so that the
/// first new piece keeps its leading space (sentencepiece drops it at the start of a text).
inline std::string continuation(const Tokenizer& tok, std::span<const int> prompt, std::span<const int> out) {
  std::vector<int> all(prompt.begin(), prompt.end());
  all.insert(all.end(), out.begin(), out.end());
  const std::string head = tok.decode(prompt), full = tok.decode(all);
  return full.starts_with(head) ? full.substr(head.size()) : tok.decode(out);
}

/// Prefills the prompt, samples --tokens tokens (each step's logits copied to the host for the
/// sampler, the chosen token back to the device) and prints the text and the statistics.
template <class P, mla::Device D>
int generate(const mla::GPT<P, float, D>& model, const Tokenizer& tok, const Options& opt) {
  using clock = std::chrono::steady_clock;
  const mla::ModelConfig& cfg = model.config();
  constexpr bool kIsMla = mla::LatentPolicy<P>;

  // Options that depend on the checkpoint.
  mla::CacheMode mode = mla::GPT<P, float, D>::kDefaultCacheMode;
  if (opt.cache == "latent") {
    if (!kIsMla) {
      throw std::runtime_error("--cache latent needs an MLA checkpoint; " + opt.checkpoint.string() + " is " +
                               describe_variant(cfg) + " (use --cache full)");
    }
    mode = mla::CacheMode::Latent;
  } else if (opt.cache == "full") {
    mode = mla::CacheMode::Full;
  }
  if (opt.decode != "auto" && !(kIsMla && mode == mla::CacheMode::Latent)) {
    throw std::runtime_error("--decode " + opt.decode + " applies only to an MLA checkpoint with the latent cache");
  }
  const mla::DecodePath path = parse_decode(opt.decode);
  if (tok.size() > cfg.vocab_size) {
    throw std::runtime_error(opt.tokenizer.string() + " has " + std::to_string(tok.size()) + " pieces but " +
                             opt.checkpoint.string() + " has a vocabulary of " + std::to_string(cfg.vocab_size) +
                             ": they do not belong together");
  }
  const Stop stop = Stop::parse(opt.stop, tok.size());

  const std::vector<int> prompt_ids = tok.encode(opt.prompt);
  const auto P_len = static_cast<std::int64_t>(prompt_ids.size());
  if (P_len == 0) throw std::runtime_error("--prompt is empty: give at least one character");
  if (P_len + opt.tokens > cfg.max_seq_len) {
    throw std::runtime_error("the prompt (" + std::to_string(P_len) + " tokens) plus --tokens " +
                             std::to_string(opt.tokens) + " exceeds the checkpoint's max_seq_len of " +
                             std::to_string(cfg.max_seq_len) + "; use a shorter prompt or fewer --tokens");
  }

  mla::Sampler sampler(mla::SamplingOptions{.temperature = opt.temperature, .top_k = opt.top_k, .top_p = opt.top_p,
                                            .seed = opt.seed});
  const mla::CacheDtype dtype = mla::cache_dtype_from_string(opt.cache_dtype);
  auto cache = model.make_cache(1, P_len + opt.tokens, mode, dtype);
  const std::vector<std::vector<std::int32_t>> prompts = {{prompt_ids.begin(), prompt_ids.end()}};

  const auto t0 = clock::now();
  mla::Tensor<float, D> logits = model.prefill(prompts, cache, path);
  const auto t1 = clock::now();
  std::vector<int> out;
  std::string text;
  std::vector<float> row;
  for (std::int64_t step = 0; step < opt.tokens; ++step) {
    row = logits.to_vector();
    // Ids the model has but the tokenizer lacks can never be decoded: never sample them.
    std::fill(row.begin() + tok.size(), row.end(), -std::numeric_limits<float>::infinity());
    const std::int32_t next = sampler(std::span<const float>(row));
    if (stop.id && next == *stop.id) break;
    out.push_back(next);
    if (!stop.text.empty()) {
      text = continuation(tok, prompt_ids, out);
      if (const auto at = text.find(stop.text); at != std::string::npos) {
        text.resize(at);
        break;
      }
    }
    if (step + 1 < opt.tokens) logits = model.decode(std::span<const std::int32_t>(&next, 1), cache, path);
  }
  const auto t2 = clock::now();
  if (stop.text.empty()) text = continuation(tok, prompt_ids, out);

  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  const std::int64_t bytes = model.cache_bytes_per_token(mode, dtype);
  std::cout << opt.prompt << text << "\n\n";
  std::cout << "prompt: " << P_len << " tokens, prefill " << prefill_s * 1e3 << " ms\n";
  std::cout << "generated: " << out.size() << " tokens in " << decode_s << " s, "
            << static_cast<double>(out.size()) / decode_s << " tokens/s\n";
  const std::int64_t values = model.cache_bytes_per_token(mode) / static_cast<std::int64_t>(sizeof(float));
  std::cout << "KV cache (" << mla::to_string(mode) << ", " << mla::to_string(dtype) << "): " << values
            << " values = " << bytes << " bytes per token over " << cfg.n_layers << " layers ("
            << describe_variant(cfg) << ")\n";
  return 0;
}

/// Loads the checkpoint (whose stored config is `stored`) onto device D and generates.
template <mla::Device D>
int generate_on(const mla::ModelConfig& stored, const Tokenizer& tok, const Options& opt) {
  return with_checkpoint_policy(stored, [&]<class P>() {
    const auto model = mla::load_model<P, float, D>(opt.checkpoint);
    return generate(*model, tok, opt);
  });
}

/// generate_on<mla::Cuda> (examples/cuda/generate_cuda.cu; without the CUDA backend,
/// examples/common/no_cuda.cpp).
int generate_on_cuda(const mla::ModelConfig& stored, const Tokenizer& tok, const Options& opt);

}  // namespace examples::generation
