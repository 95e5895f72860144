// eval_model — the loss and perplexity of a checkpoint on a token file (docs/design.md §6, §7).
//
//   eval_model --checkpoint FILE --data FILE.bin [--seq-len T] [--max-windows N] [--json]
//              [--batch B] [--threads N] [--unigram TRAIN.bin] [--vocab-size V] [--device cpu|cuda]
//              [--through-cache [--cache-dtype f32|bf16|int8]]
//   eval_model --compare A.safetensors B.safetensors ... --data FILE.bin [same options]
//   eval_model --unigram TRAIN.bin --data FILE.bin [--seq-len T] [--vocab-size V]
//
// Windows (§6): with sequence length T (default: the checkpoint's max_seq_len), window k feeds
// tokens [kT, kT+T) and predicts [kT+1, kT+T+1), for every k with kT + T + 1 <= N, or only the
// first --max-windows. The loss is the mean cross-entropy over every target of every window
// (each batch's mean times its count, summed in double), perplexity = exp(loss).
//
// Output: the last line is `loss=<float> perplexity=<float> tokens=<int>`, or with --json a
// JSON object with the keys loss, perplexity, tokens (the number of targets scored).
// --compare evaluates several checkpoints on the same data and prints a Markdown table:
// variant, parameters, KV-cache bytes per token, loss, perplexity.
// --unigram prints the perplexity of the same targets under the training file's unigram token
// frequencies (add-one smoothing over the vocabulary): the baseline a model must beat.
// --through-cache scores the same targets token by token through the KV cache (the decode
// path, teacher-forced), stored as --cache-dtype: the loss a bf16 or int8 cache costs; the
// table's cache bytes are then that dtype's.
// --device cuda runs the checkpoints on the GPU (a build with the CUDA backend); the losses are
// summed on the host either way.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mla/mla.hpp>
#include <mla/train/token_file.hpp>

#include "common/cli.hpp"
#include "common/device.hpp"
#include "common/eval_run.hpp"

namespace fs = std::filesystem;

namespace {

using examples::evaluation::ModelScore, examples::evaluation::Options, examples::evaluation::Score;
using examples::evaluation::window_count;

constexpr const char* kProgram = "eval_model";

std::string result_line(const Score& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "loss=%.6f perplexity=%.4f tokens=%lld", s.loss, s.perplexity(),
                static_cast<long long>(s.tokens));
  return buf;
}

nlohmann::ordered_json result_json(const Score& s) {
  nlohmann::ordered_json j;
  j["loss"] = s.loss;
  j["perplexity"] = s.perplexity();
  j["tokens"] = s.tokens;
  return j;
}

/// Scores one checkpoint on --device.
ModelScore score_checkpoint(const fs::path& path, const fs::path& data, const Options& opt) {
  if (opt.device == "cuda") return examples::evaluation::evaluate_checkpoint_on_cuda(path, data, opt);
  return examples::evaluation::evaluate_checkpoint<mla::Cpu>(path, data, opt);
}

/// Cross-entropy of the targets under add-one-smoothed unigram frequencies of `train`.
/// Scores the targets of `windows` windows of length T (all tokens after the first when T = 0).
Score unigram_baseline(const fs::path& train_path, std::span<const std::uint16_t> data, std::int64_t vocab,
                       std::int64_t T, std::int64_t windows) {
  examples::require_file(train_path, "token file");
  const auto train = mla::read_tokens(train_path, vocab);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(vocab), 0);
  for (const std::uint16_t t : train) ++counts[t];
  const double denom = static_cast<double>(train.size()) + static_cast<double>(vocab);
  const std::int64_t last = T > 0 ? windows * T : static_cast<std::int64_t>(data.size()) - 1;
  double total = 0;
  for (std::int64_t i = 1; i <= last; ++i) {
    const std::uint16_t t = data[static_cast<std::size_t>(i)];
    if (t >= vocab) {
      throw std::runtime_error("token " + std::to_string(t) + " at position " + std::to_string(i) +
                               " of the data is not below the vocabulary size " + std::to_string(vocab));
    }
    total -= std::log((static_cast<double>(counts[t]) + 1.0) / denom);
  }
  return Score{total / static_cast<double>(last), last};
}

/// The vocabulary the unigram baseline smooths over: --vocab-size, or the largest id + 1.
std::int64_t unigram_vocab(const Options& opt, std::span<const std::uint16_t> data) {
  if (opt.vocab_size > 0) return opt.vocab_size;
  examples::require_file(opt.unigram, "token file");
  const auto train = mla::read_tokens(opt.unigram);
  std::int64_t top = 0;
  for (const std::uint16_t t : train) top = std::max<std::int64_t>(top, t);
  for (const std::uint16_t t : data) top = std::max<std::int64_t>(top, t);
  return top + 1;
}

void print_unigram(const Options& opt, const Score& s, std::int64_t vocab, bool last) {
  std::cout << "unigram baseline (token frequencies of " << opt.unigram.string() << ", add-one smoothing over "
            << vocab << " ids):\n";
  if (last && opt.json) std::cout << result_json(s).dump() << "\n";
  else std::cout << result_line(s) << "\n";
}

int evaluate_one(const Options& opt) {
  const ModelScore m = score_checkpoint(opt.checkpoint, opt.data, opt);
  if (!opt.unigram.empty()) {
    const auto data = mla::read_tokens(opt.data, m.config.vocab_size);
    print_unigram(opt, unigram_baseline(opt.unigram, data, m.config.vocab_size, m.seq_len, m.windows),
                  m.config.vocab_size, false);
  }
  std::cout << opt.checkpoint.string() << ": " << examples::describe_variant(m.config) << ", " << m.parameters
            << " parameters; " << m.windows << " windows of " << m.seq_len << " tokens of " << opt.data.string()
            << "\n";
  std::cout << (opt.json ? result_json(m.score).dump() : result_line(m.score)) << "\n";
  return 0;
}

int compare(const Options& opt) {
  std::vector<ModelScore> rows;
  for (const fs::path& path : opt.compare) {
    rows.push_back(score_checkpoint(path, opt.data, opt));
    std::cerr << path.string() << ": " << result_line(rows.back().score) << "\n";
  }
  std::cout << "\nValidation loss on " << opt.data.string() << "\n\n";
  std::cout << "| checkpoint | variant | parameters | KV cache bytes/token | tokens | val loss | perplexity |\n";
  std::cout << "|---|---|---:|---:|---:|---:|---:|\n";
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const ModelScore& m = rows[i];
    char nums[128];
    std::snprintf(nums, sizeof nums, "%.4f | %.2f", m.score.loss, m.score.perplexity());
    std::cout << "| " << opt.compare[i].string() << " | " << examples::describe_variant(m.config) << " | "
              << m.parameters << " | " << m.cache_bytes_per_token << " | " << m.score.tokens << " | " << nums
              << " |\n";
    nlohmann::ordered_json j = result_json(m.score);
    j["checkpoint"] = opt.compare[i].string();
    j["variant"] = examples::describe_variant(m.config);
    j["parameters"] = m.parameters;
    j["kv_cache_bytes_per_token"] = m.cache_bytes_per_token;
    all.push_back(j);
  }
  if (!opt.unigram.empty()) {
    const mla::ModelConfig& c = rows.front().config;
    const auto data = mla::read_tokens(opt.data, c.vocab_size);
    const ModelScore& m = rows.front();
    std::cout << "\n";
    print_unigram(opt, unigram_baseline(opt.unigram, data, c.vocab_size, m.seq_len, m.windows), c.vocab_size, false);
  }
  if (opt.json) std::cout << all.dump() << "\n";
  return 0;
}

int unigram_only(const Options& opt) {
  examples::require_file(opt.data, "token file");
  const auto data = mla::read_tokens(opt.data, opt.vocab_size);
  const std::int64_t vocab = unigram_vocab(opt, data);
  const std::int64_t T = opt.seq_len;
  const std::int64_t windows = T > 0 ? window_count(static_cast<std::int64_t>(data.size()), T, opt.max_windows, opt.data) : 0;
  if (T == 0 && data.size() < 2) throw std::runtime_error(opt.data.string() + ": fewer than 2 tokens, nothing to score");
  print_unigram(opt, unigram_baseline(opt.unigram, data, vocab, T, windows), vocab, true);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"Loss and perplexity of a checkpoint on a token file; comparison tables; a unigram baseline."};
  auto* ckpt = app.add_option("--checkpoint", opt.checkpoint, "model checkpoint (.safetensors)");
  app.add_option("--data", opt.data, "token file to score (llm.c format, e.g. data/val.bin)")->required();
  app.add_option("--seq-len", opt.seq_len, "window length T (default: the checkpoint's max_seq_len)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 24));
  app.add_option("--max-windows", opt.max_windows, "score only the first N windows (default: all)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  app.add_flag("--json", opt.json, "print the result as a JSON object on the last line");
  app.add_option("--batch", opt.batch, "windows per forward pass")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  auto* cmp = app.add_option("--compare", opt.compare, "several checkpoints to compare in a Markdown table")
                  ->expected(1, -1);
  app.add_option("--unigram", opt.unigram, "training token file: also print the unigram-frequency baseline");
  app.add_option("--vocab-size", opt.vocab_size, "vocabulary of the unigram baseline when no checkpoint gives it")
      ->check(CLI::Range(1, 65536));
  app.add_option("--device", opt.device, "where the checkpoints run: cpu, or cuda (a GPU; needs the CUDA backend)")
      ->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  auto* through = app.add_flag("--through-cache", opt.through_cache,
                               "score token by token through the KV cache (the decode path)");
  app.add_option("--cache-dtype", opt.cache_dtype, "with --through-cache: how the cache stores values")
      ->capture_default_str()->check(CLI::IsMember({"f32", "bf16", "int8"}))->needs(through);
  ckpt->excludes(cmp);
  return examples::run_main(kProgram, app, argc, argv, [&] {
    if (opt.device == "cuda") {
      const std::string name = examples::require_cuda();  // before anything is read
      std::cout << kProgram << ": device cuda (" << name << ")\n";
    }
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    if (!opt.compare.empty()) return compare(opt);
    if (!opt.checkpoint.empty()) return evaluate_one(opt);
    if (!opt.unigram.empty()) return unigram_only(opt);
    throw std::runtime_error("nothing to evaluate: give --checkpoint, --compare or --unigram (see --help)");
  });
}
