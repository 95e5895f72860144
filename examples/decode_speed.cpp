// decode_speed — how fast a checkpoint's architecture decodes at long contexts: tokens per
// second of one decode step with C tokens already cached, for each C of --contexts.
//
//   decode_speed --checkpoint FILE [--contexts 2048,8192,32768] [--batch 1] [--steps 16]
//                [--repeats 3] [--cache latent|full] [--cache-dtype f32|bf16|int8] [--threads N]
//
// The model is the checkpoint's config with its weights freshly initialized, and max_seq_len
// raised to the largest context plus --steps: the time of a step does not depend on the
// weights' values, and a model trained at short windows (or one with learned positions, whose
// table would not reach 32k) can still be timed there. The cache's first C tokens of every row
// are filled with noise, then --steps tokens are decoded one at a time (C .. C + steps - 1
// cached); the best of --repeats such passes is kept. One line per context:
//   context=C batch=B tokens_per_s=<float> ms_per_step=<float> cache_bytes_per_token=<int>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/variants.hpp"

namespace {

struct Options {
  std::string checkpoint, cache, cache_dtype = "f32";
  std::vector<std::int64_t> contexts{2048, 8192, 32768};
  std::int64_t batch = 1, steps = 16, repeats = 3;
  int threads = 0;
};

template <class P>
int measure(const mla::ModelConfig& stored, const Options& opt) {
  mla::ModelConfig cfg = stored;
  cfg.max_seq_len = *std::max_element(opt.contexts.begin(), opt.contexts.end()) + opt.steps;
  const mla::GPT<P> model(cfg, 1);
  mla::CacheMode mode = mla::GPT<P>::kDefaultCacheMode;
  if (opt.cache == "full") mode = mla::CacheMode::Full;
  if (opt.cache == "latent" && !mla::LatentPolicy<P>) throw std::runtime_error("--cache latent: the model is not MLA");
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(opt.batch), 42);
  for (const std::int64_t context : opt.contexts) {
    auto cache = model.make_cache(opt.batch, context + opt.steps, mode, mla::cache_dtype_from_string(opt.cache_dtype));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    cache.for_each_plane([&](mla::CachePlane<float, mla::Cpu>& plane) { plane.fill([&] { return normal(rng); }); });
    double best = 1e300;
    for (std::int64_t r = 0; r < opt.repeats; ++r) {
      std::fill(cache.lengths.begin(), cache.lengths.end(), context);
      const auto t0 = std::chrono::steady_clock::now();
      for (std::int64_t s = 0; s < opt.steps; ++s) (void)model.decode(tokens, cache);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double step = best / static_cast<double>(opt.steps);
    std::printf("context=%lld batch=%lld tokens_per_s=%.1f ms_per_step=%.3f cache_bytes_per_token=%lld\n",
                static_cast<long long>(context), static_cast<long long>(opt.batch),
                static_cast<double>(opt.batch) / step, step * 1e3, static_cast<long long>(cache.bytes_per_token));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Decoding speed of a checkpoint's architecture at long contexts (weights freshly initialized)."};
  Options opt;
  app.add_option("--checkpoint", opt.checkpoint, "a checkpoint (its config is what is timed)")->required();
  app.add_option("--contexts", opt.contexts, "cached tokens before the timed steps")
      ->capture_default_str()->delimiter(',')->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 22));
  app.add_option("--batch", opt.batch, "rows decoded together")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--steps", opt.steps, "decode steps timed per pass")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--repeats", opt.repeats, "passes; the fastest is kept")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--cache", opt.cache, "latent (MLA's default) or full")->check(CLI::IsMember({"latent", "full"}));
  app.add_option("--cache-dtype", opt.cache_dtype, "how the cache stores values: f32, bf16 or int8")
      ->capture_default_str()->check(CLI::IsMember({"f32", "bf16", "int8"}));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  return examples::run_main("decode_speed", app, argc, argv, [&] {
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    const mla::ModelConfig stored = examples::read_checkpoint_config(opt.checkpoint);
    return examples::with_checkpoint_policy(stored, [&]<class P>() { return measure<P>(stored, opt); });
  });
}
