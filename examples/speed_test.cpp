// speed_test — decoding time of each attention variant against prompt length and against the
// number of generated tokens (the reference experiments' utils/speed_test.py).
//
//   speed_test [--out DIR] [--prompt-lengths 10,50,100,200,500,1000,2000] [--new-tokens 100]
//              [--gen-lengths 10,50,100,200,500,1000] [--prompt 100] [--repeats 3]
//              [--variants mha,gqa,mqa,mla-latent,mla-full] [--d-model 256] [--heads 8]
//              [--layers 4] [--vocab-size 10000] [--threads N] [--quick]
//
// Variants (randomly initialized, the default config d 256, 8 heads, 4 layers, vocab 10000):
//   mha          MHA, full RoPE                      cache: K and V of 8 heads
//   gqa          GQA with 2 kv heads, full RoPE      cache: K and V of 2 heads
//   mqa          MQA, full RoPE                      cache: K and V of 1 head
//   mla-latent   MLA, latent cache, absorbed decode  cache: kv_rank + rope_dim floats
//   mla-full     MLA, decompressed K/V cache         cache: K and V of 8 heads
// (a) time to generate --new-tokens tokens after a random prompt of each --prompt-lengths;
// (b) time to generate each of --gen-lengths tokens after a --prompt-token prompt.
// A measurement is prefill + greedy decoding at batch 1 (the first new token comes from the
// prefill's logits, the others from one decode step each), the minimum over --repeats.
// Writes DIR/speed_prompt.csv and DIR/speed_generate.csv (variant,x,seconds,tokens_per_s,
// cache_bytes_per_token) and, when gnuplot is installed, DIR/speed_prompt.png and
// DIR/speed_generate.png. --quick: short lengths and one repeat, for tests.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/variants.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kProgram = "speed_test";

struct Options {
  fs::path out = "runs/speed";
  std::vector<std::int64_t> prompt_lengths = {10, 50, 100, 200, 500, 1000, 2000};
  std::vector<std::int64_t> gen_lengths = {10, 50, 100, 200, 500, 1000};
  std::int64_t new_tokens = 100, prompt = 100, repeats = 3;
  std::vector<std::string> variants = {"mha", "gqa", "mqa", "mla-latent", "mla-full"};
  std::int64_t d_model = 256, heads = 8, layers = 4, vocab = 10000;
  int threads = 0;
  bool quick = false;
};

/// One variant: the policy family, its cache mode, and how MLA decodes.
struct Variant {
  std::string name, attn, rope;
  mla::CacheMode mode = mla::CacheMode::Full;
  mla::DecodePath decode = mla::DecodePath::Auto;
};

Variant variant_named(const std::string& name) {
  if (name == "mha") return {"MHA", "mha", "full"};
  if (name == "gqa") return {"GQA-2", "gqa", "full"};
  if (name == "mqa") return {"MQA", "mqa", "full"};
  if (name == "mla-latent") return {"MLA-latent", "mla", "decoupled", mla::CacheMode::Latent, mla::DecodePath::Absorbed};
  if (name == "mla-full") return {"MLA-full", "mla", "decoupled", mla::CacheMode::Full};
  throw std::runtime_error("unknown variant '" + name + "' (expected mha, gqa, mqa, mla-latent or mla-full)");
}

struct Row {
  std::string variant;
  std::int64_t x = 0;
  double seconds = 0, tokens_per_s = 0;
  std::int64_t cache_bytes_per_token = 0;
};

/// Seconds to prefill `prompt` and generate `n` tokens greedily; the minimum over `repeats`.
template <class P>
double time_generation(const mla::GPT<P>& model, typename mla::GPT<P>::Cache& cache,
                       const std::vector<std::int32_t>& prompt, std::int64_t n, std::int64_t repeats,
                       mla::DecodePath decode) {
  using clock = std::chrono::steady_clock;
  mla::Sampler greedy(mla::SamplingOptions{.temperature = 0});
  const std::vector<std::vector<std::int32_t>> prompts = {prompt};
  double best = std::numeric_limits<double>::infinity();
  for (std::int64_t r = 0; r < repeats; ++r) {
    cache.clear();
    const auto t0 = clock::now();
    mla::Tensor<float> logits = model.prefill(prompts, cache);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::vector<float> row = logits.to_vector();
      const std::int32_t next = greedy(std::span<const float>(row));
      if (i + 1 < n) logits = model.decode(std::span<const std::int32_t>(&next, 1), cache, decode);
    }
    best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count());
  }
  return best;
}

/// Runs both measurements of one variant, appending to `by_prompt` and `by_length`.
void measure(const Options& opt, const Variant& v, std::vector<Row>& by_prompt, std::vector<Row>& by_length) {
  const std::int64_t longest = std::max(*std::ranges::max_element(opt.prompt_lengths) + opt.new_tokens,
                                        opt.prompt + *std::ranges::max_element(opt.gen_lengths));
  mla::ModelConfig cfg{.vocab_size = opt.vocab, .d_model = opt.d_model, .n_heads = opt.heads,
                       .n_layers = opt.layers, .max_seq_len = longest};
  if (v.attn == "gqa") cfg.n_kv_heads = 2;
  examples::with_policy(v.attn, v.rope, [&]<class P>() {
    const mla::GPT<P> model(cfg, 1234);
    auto cache = model.make_cache(1, longest, v.mode);
    const std::int64_t bytes = model.cache_bytes_per_token(v.mode);
    std::mt19937 rng(42);
    std::uniform_int_distribution<std::int32_t> token(0, static_cast<std::int32_t>(opt.vocab - 1));
    auto random_prompt = [&](std::int64_t n) {
      std::vector<std::int32_t> p(static_cast<std::size_t>(n));
      for (auto& t : p) t = token(rng);
      return p;
    };
    time_generation(model, cache, random_prompt(8), 4, 1, v.decode);  // warm-up: first-touch memory
    auto record = [&](std::vector<Row>& rows, const char* what, std::int64_t x, std::int64_t n, double s) {
      rows.push_back({v.name, x, s, static_cast<double>(n) / s, bytes});
      std::printf("%-11s %-8s %6lld  %9.4f s  %9.1f tokens/s\n", v.name.c_str(), what, static_cast<long long>(x), s,
                  static_cast<double>(n) / s);
      std::fflush(stdout);
    };
    for (const std::int64_t len : opt.prompt_lengths) {
      const double s = time_generation(model, cache, random_prompt(len), opt.new_tokens, opt.repeats, v.decode);
      record(by_prompt, "prompt", len, opt.new_tokens, s);
    }
    const auto prompt = random_prompt(opt.prompt);
    for (const std::int64_t n : opt.gen_lengths) {
      record(by_length, "generate", n, n, time_generation(model, cache, prompt, n, opt.repeats, v.decode));
    }
  });
}

void write_csv(const fs::path& path, const std::vector<Row>& rows) {
  std::ostringstream csv;
  csv << "variant,x,seconds,tokens_per_s,cache_bytes_per_token\n";
  for (const Row& r : rows) {
    csv << r.variant << "," << r.x << "," << r.seconds << "," << r.tokens_per_s << "," << r.cache_bytes_per_token
        << "\n";
  }
  const std::string s = csv.str();
  mla::write_file_atomically(path, std::as_bytes(std::span<const char>(s.data(), s.size())));
}

/// Plots seconds against x, one line per variant, into `png` (written atomically).
void plot(const fs::path& png, const std::vector<Row>& rows, const std::string& title, const std::string& xlabel) {
  std::ostringstream gp;
  std::vector<std::string> names;
  for (const Row& r : rows) {
    if (std::ranges::find(names, r.variant) == names.end()) names.push_back(r.variant);
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    gp << "$d" << i << " << EOD\n";
    for (const Row& r : rows) {
      if (r.variant == names[i]) gp << r.x << " " << r.seconds << "\n";
    }
    gp << "EOD\n";
  }
  const fs::path tmp = png.parent_path() / ("." + png.filename().string() + ".tmp" + std::to_string(::getpid()));
  gp << "set terminal pngcairo size 900,600 noenhanced\nset output '" << tmp.string() << "'\n"
     << "set title '" << title << "'\nset xlabel '" << xlabel << "'\nset ylabel 'seconds'\n"
     << "set key left top\nset grid\nplot ";
  for (std::size_t i = 0; i < names.size(); ++i) {
    gp << (i ? ", " : "") << "$d" << i << " with linespoints lw 2 title '" << names[i] << "'";
  }
  gp << "\n";
  const fs::path script = png.parent_path() / (".plot.gp.tmp" + std::to_string(::getpid()));
  const std::string text = gp.str();
  mla::write_file_atomically(script, std::as_bytes(std::span<const char>(text.data(), text.size())));
  const std::string cmd = "gnuplot '" + script.string() + "' 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  std::error_code ec;
  fs::remove(script, ec);
  if (rc != 0) {
    fs::remove(tmp, ec);
    std::cerr << kProgram << ": note: gnuplot failed on " << png.string() << "; the CSV files hold the numbers\n";
    return;
  }
  fs::rename(tmp, png, ec);
  if (ec) throw std::runtime_error(png.string() + ": cannot rename into place: " + ec.message());
}

void measure_and_write(const Options& opt, const std::vector<Variant>& variants);

int run(const Options& opt) {
  std::vector<Variant> variants;
  for (const std::string& name : opt.variants) variants.push_back(variant_named(name));
  std::error_code ec;
  const bool created = fs::create_directories(opt.out, ec);
  if (ec || !fs::is_directory(opt.out, ec) || ::access(opt.out.c_str(), W_OK | X_OK) != 0) {
    throw std::runtime_error(opt.out.string() + ": cannot create or write the output folder");
  }
  try {
    measure_and_write(opt, variants);
  } catch (...) {
    if (created) fs::remove(opt.out, ec);  // only if still empty
    throw;
  }
  return 0;
}

void measure_and_write(const Options& opt, const std::vector<Variant>& variants) {
  std::printf("speed_test: d_model %lld, %lld heads, %lld layers, vocab %lld; %lld threads; min of %lld repeats\n",
              static_cast<long long>(opt.d_model), static_cast<long long>(opt.heads),
              static_cast<long long>(opt.layers), static_cast<long long>(opt.vocab),
              static_cast<long long>(mla::num_threads()), static_cast<long long>(opt.repeats));
  std::vector<Row> by_prompt, by_length;
  for (const Variant& v : variants) measure(opt, v, by_prompt, by_length);

  write_csv(opt.out / "speed_prompt.csv", by_prompt);
  write_csv(opt.out / "speed_generate.csv", by_length);
  std::cout << "wrote " << (opt.out / "speed_prompt.csv").string() << ", " << (opt.out / "speed_generate.csv").string()
            << "\n";
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::cout << "note: gnuplot is not installed; no plots (apt-get install gnuplot-nox)\n";
    return;
  }
  plot(opt.out / "speed_prompt.png", by_prompt,
       "time to generate " + std::to_string(opt.new_tokens) + " tokens vs prompt length", "prompt tokens");
  plot(opt.out / "speed_generate.png", by_length,
       "time vs tokens generated after a " + std::to_string(opt.prompt) + "-token prompt", "generated tokens");
  std::cout << "wrote " << (opt.out / "speed_prompt.png").string() << ", "
            << (opt.out / "speed_generate.png").string() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"Decoding time of MHA, GQA, MQA and MLA (latent and decompressed caches) vs prompt and output length."};
  const auto positive = CLI::Range(std::int64_t{1}, std::int64_t{1} << 20);
  app.add_option("--out", opt.out, "output folder for the CSV files and plots")->capture_default_str();
  auto* prompts = app.add_option("--prompt-lengths", opt.prompt_lengths, "prompt lengths of measurement (a)")
                      ->delimiter(',')->capture_default_str()->check(positive);
  auto* new_tokens = app.add_option("--new-tokens", opt.new_tokens, "tokens generated in measurement (a)")
                         ->capture_default_str()->check(positive);
  auto* gens = app.add_option("--gen-lengths", opt.gen_lengths, "generated lengths of measurement (b)")
                   ->delimiter(',')->capture_default_str()->check(positive);
  auto* prompt = app.add_option("--prompt", opt.prompt, "prompt length of measurement (b)")
                     ->capture_default_str()->check(positive);
  auto* repeats = app.add_option("--repeats", opt.repeats, "repeats per point (the minimum is kept)")
                      ->capture_default_str()->check(positive);
  app.add_option("--variants", opt.variants, "variants to measure: mha, gqa, mqa, mla-latent, mla-full")
      ->delimiter(',')->capture_default_str();
  app.add_option("--d-model", opt.d_model, "model width")->capture_default_str()->check(positive);
  app.add_option("--heads", opt.heads, "attention heads")->capture_default_str()->check(positive);
  app.add_option("--layers", opt.layers, "layers")->capture_default_str()->check(positive);
  app.add_option("--vocab-size", opt.vocab, "vocabulary size")->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{65536}));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  app.add_flag("--quick", opt.quick, "short lengths and one repeat (for tests); explicit flags still win");
  return examples::run_main(kProgram, app, argc, argv, [&] {
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    if (opt.quick) {
      if (prompts->count() == 0) opt.prompt_lengths = {4, 16};
      if (new_tokens->count() == 0) opt.new_tokens = 8;
      if (gens->count() == 0) opt.gen_lengths = {4, 16};
      if (prompt->count() == 0) opt.prompt = 8;
      if (repeats->count() == 0) opt.repeats = 1;
    }
    return run(opt);
  });
}
