// generate — text from a checkpoint: tokenize a prompt, prefill the KV cache, sample tokens.
//
//   generate --checkpoint FILE --tokenizer FILE.model --prompt TEXT [--tokens 100]
//            [--temperature 0.8] [--top-k 0] [--top-p 1.0] [--seed 0] [--stop TEXT-or-id]
//            [--cache latent|full] [--decode absorbed|materialized|auto] [--threads N]
//
// Prints the prompt and its continuation, then the prefill time, the decoding speed in
// tokens/s, and the KV cache per token (floats and bytes over all layers: the reference experiments' "params
// per token"). --temperature 0 is greedy; --top-k 0 and --top-p 1 cut nothing.
// --stop: a number is a token id, anything else a text; generation stops when it appears,
// and it is not printed.
// --cache latent (the default for MLA) caches kv_rank + rope_dim floats per token and layer;
// --cache full caches decompressed keys and values (the only mode of MHA/GQA/MQA).
// --decode picks how MLA attends over its latent cache (auto: the cheaper one per step).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/text.hpp"
#include "common/variants.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kProgram = "generate";

struct Options {
  fs::path checkpoint, tokenizer;
  std::string prompt, stop, cache, decode = "auto";
  std::int64_t tokens = 100;
  double temperature = 0.8, top_p = 1.0;
  std::int64_t top_k = 0;
  std::uint64_t seed = 0;
  int threads = 0;
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

mla::DecodePath parse_decode(const std::string& s) {
  if (s == "absorbed") return mla::DecodePath::Absorbed;
  if (s == "materialized") return mla::DecodePath::Materialized;
  return mla::DecodePath::Auto;
}

/// The text that `out` adds after the prompt. Decoded together with the prompt, so that the
/// first new piece keeps its leading space (sentencepiece drops it at the start of a text).
std::string continuation(const examples::Tokenizer& tok, std::span<const int> prompt, std::span<const int> out) {
  std::vector<int> all(prompt.begin(), prompt.end());
  all.insert(all.end(), out.begin(), out.end());
  const std::string head = tok.decode(prompt), full = tok.decode(all);
  return full.starts_with(head) ? full.substr(head.size()) : tok.decode(out);
}

template <class P>
int generate(const mla::GPT<P>& model, const examples::Tokenizer& tok, const Options& opt) {
  using clock = std::chrono::steady_clock;
  const mla::ModelConfig& cfg = model.config();
  constexpr bool kIsMla = mla::LatentPolicy<P>;

  // Options that depend on the checkpoint.
  mla::CacheMode mode = mla::GPT<P>::kDefaultCacheMode;
  if (opt.cache == "latent") {
    if (!kIsMla) {
      throw std::runtime_error("--cache latent needs an MLA checkpoint; " + opt.checkpoint.string() + " is " +
                               examples::describe_variant(cfg) + " (use --cache full)");
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
  auto cache = model.make_cache(1, P_len + opt.tokens, mode);
  const std::vector<std::vector<std::int32_t>> prompts = {{prompt_ids.begin(), prompt_ids.end()}};

  const auto t0 = clock::now();
  mla::Tensor<float> logits = model.prefill(prompts, cache, path);
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
  const std::int64_t bytes = model.cache_bytes_per_token(mode);
  std::cout << opt.prompt << text << "\n\n";
  std::cout << "prompt: " << P_len << " tokens, prefill " << prefill_s * 1e3 << " ms\n";
  std::cout << "generated: " << out.size() << " tokens in " << decode_s << " s, "
            << static_cast<double>(out.size()) / decode_s << " tokens/s\n";
  std::cout << "KV cache (" << mla::to_string(mode) << "): " << bytes / static_cast<std::int64_t>(sizeof(float))
            << " floats = " << bytes << " bytes per token over " << cfg.n_layers << " layers ("
            << examples::describe_variant(cfg) << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"Generates text from a checkpoint with a KV cache, and reports the decoding speed and cache size."};
  app.add_option("--checkpoint", opt.checkpoint, "model checkpoint (.safetensors)")->required();
  app.add_option("--tokenizer", opt.tokenizer, "sentencepiece model (data/tokenizer.model)")->required();
  app.add_option("--prompt", opt.prompt, "text to continue")->required();
  app.add_option("--tokens", opt.tokens, "tokens to generate")->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 24));
  app.add_option("--temperature", opt.temperature, "sampling temperature (0: greedy)")->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", opt.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 20));
  app.add_option("--top-p", opt.top_p, "nucleus: the smallest set with this much probability (1: all)")
      ->capture_default_str()->check(CLI::Range(1e-6, 1.0));
  app.add_option("--seed", opt.seed, "sampling seed")->capture_default_str();
  app.add_option("--stop", opt.stop, "stop at this token id (a number) or text");
  app.add_option("--cache", opt.cache, "KV cache: latent (MLA only; its default) or full")
      ->check(CLI::IsMember({"latent", "full"}));
  app.add_option("--decode", opt.decode, "MLA attention over the latent cache")->capture_default_str()
      ->check(CLI::IsMember({"absorbed", "materialized", "auto"}));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  return examples::run_main(kProgram, app, argc, argv, [&] {
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    const mla::ModelConfig stored = examples::read_checkpoint_config(opt.checkpoint);
    const examples::Tokenizer tok(opt.tokenizer);
    return examples::with_checkpoint_policy(stored, [&]<class P>() {
      const auto model = mla::load_model<P>(opt.checkpoint);
      return generate(*model, tok, opt);
    });
  });
}
