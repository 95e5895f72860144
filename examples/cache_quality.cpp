// cache_quality — what storing a checkpoint's KV cache as bf16 or int8 costs in quality: for
// each cache dtype, the validation loss scored token by token through the cache (as
// eval_model --through-cache) and the greedy continuations of a few prompts, against f32's.
//
//   cache_quality --checkpoint FILE --data FILE.bin [--seq-len T] [--max-windows N] [--batch B]
//                 [--prompts 4] [--prompt-len 16] [--tokens K] [--threads N]
//
// Prompts are the data's own tokens: prompt p is the --prompt-len tokens at p/prompts of the
// file. Each is continued greedily for K tokens (default: max_seq_len - prompt-len) with each
// cache dtype; a continuation agrees with f32's for as many leading tokens as are the same.
// One line per dtype:
//   dtype=D cache_bytes_per_token=B loss=L perplexity=P vs_f32=+X% agreement=A first_difference=F
// (agreement: the fraction of the prompts' generated tokens before their first difference from
// f32's; first_difference: the earliest position where one differs, or K when none does).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>
#include <mla/train/token_file.hpp>

#include "common/cli.hpp"
#include "common/eval_run.hpp"
#include "common/variants.hpp"

namespace {

struct Options {
  std::string checkpoint, data;
  std::int64_t seq_len = 0, max_windows = 0, batch = 8, prompts = 4, prompt_len = 16, tokens = 0;
  int threads = 0;
};

/// The greedy continuation of `prompt` for `k` tokens, with the cache stored as `dtype`.
template <class P>
std::vector<std::int32_t> greedy(const mla::GPT<P>& model, const std::vector<std::int32_t>& prompt, std::int64_t k,
                                 mla::CacheDtype dtype) {
  auto cache = model.make_cache(1, static_cast<std::int64_t>(prompt.size()) + k, mla::GPT<P>::kDefaultCacheMode, dtype);
  mla::Tensor<float> logits = model.prefill({prompt}, cache);
  std::vector<std::int32_t> out;
  const std::int64_t V = model.config().vocab_size;
  for (std::int64_t i = 0; i < k; ++i) {
    const float* row = logits.data();
    const auto next = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    out.push_back(next);
    if (i + 1 < k) logits = model.decode(std::span<const std::int32_t>(&next, 1), cache);
  }
  return out;
}

template <class P>
int measure(const Options& opt) {
  const auto model = mla::load_model<P>(opt.checkpoint);
  const mla::ModelConfig& cfg = model->config();
  const std::int64_t T = opt.seq_len > 0 ? opt.seq_len : cfg.max_seq_len;
  if (T > cfg.max_seq_len) throw std::runtime_error("--seq-len exceeds the checkpoint's max_seq_len");
  const std::int64_t k = opt.tokens > 0 ? opt.tokens : cfg.max_seq_len - opt.prompt_len;
  if (k < 1 || opt.prompt_len + k > cfg.max_seq_len) {
    throw std::runtime_error("--prompt-len " + std::to_string(opt.prompt_len) + " plus " + std::to_string(k) +
                             " tokens must fit the checkpoint's max_seq_len of " + std::to_string(cfg.max_seq_len));
  }
  examples::require_file(opt.data, "token file");
  const auto tokens = mla::read_tokens(opt.data, cfg.vocab_size);
  const auto n = static_cast<std::int64_t>(tokens.size());
  const std::int64_t windows = examples::evaluation::window_count(n, T, opt.max_windows, opt.data);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t p = 0; p < opt.prompts; ++p) {
    const std::int64_t at = std::min(n - opt.prompt_len, p * n / opt.prompts);
    prompts.emplace_back(tokens.begin() + at, tokens.begin() + at + opt.prompt_len);
  }
  std::printf("%s: %s, %lld windows of %lld tokens, %lld prompts of %lld tokens continued for %lld\n",
              opt.checkpoint.c_str(), examples::describe_variant(cfg).c_str(), static_cast<long long>(windows),
              static_cast<long long>(T), static_cast<long long>(opt.prompts), static_cast<long long>(opt.prompt_len),
              static_cast<long long>(k));
  double f32_loss = 0;
  std::vector<std::vector<std::int32_t>> f32_text;
  for (mla::CacheDtype dtype : {mla::CacheDtype::F32, mla::CacheDtype::BF16, mla::CacheDtype::Int8}) {
    const auto score = examples::evaluation::evaluate_through_cache(*model, tokens, T, windows, opt.batch, dtype);
    std::int64_t agreed = 0, first = k;
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      const auto text = greedy(*model, prompts[p], k, dtype);
      if (dtype == mla::CacheDtype::F32) f32_text.push_back(text);
      const auto [a, b] = std::mismatch(text.begin(), text.end(), f32_text[p].begin());
      agreed += a - text.begin();
      first = std::min<std::int64_t>(first, a - text.begin());
    }
    if (dtype == mla::CacheDtype::F32) f32_loss = score.loss;
    std::printf("dtype=%s cache_bytes_per_token=%lld loss=%.6f perplexity=%.4f vs_f32=%+.3f%% agreement=%.4f "
                "first_difference=%lld\n",
                mla::to_string(dtype),
                static_cast<long long>(model->cache_bytes_per_token(mla::GPT<P>::kDefaultCacheMode, dtype)), score.loss,
                score.perplexity(), 100 * (std::exp(score.loss - f32_loss) - 1),
                static_cast<double>(agreed) / static_cast<double>(k * opt.prompts), static_cast<long long>(first));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"What a bf16 or int8 KV cache costs a checkpoint: loss through the cache and greedy agreement."};
  Options opt;
  app.add_option("--checkpoint", opt.checkpoint, "model checkpoint (.safetensors)")->required();
  app.add_option("--data", opt.data, "token file: the windows scored and the prompts (e.g. data/val.bin)")->required();
  app.add_option("--seq-len", opt.seq_len, "window length T (default: the checkpoint's max_seq_len)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 24));
  app.add_option("--max-windows", opt.max_windows, "score only the first N windows (default: all)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  app.add_option("--batch", opt.batch, "windows decoded together")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--prompts", opt.prompts, "prompts continued greedily")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--prompt-len", opt.prompt_len, "tokens per prompt")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--tokens", opt.tokens, "tokens generated per prompt (default: max_seq_len - prompt-len)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  return examples::run_main("cache_quality", app, argc, argv, [&] {
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    const mla::ModelConfig stored = examples::read_checkpoint_config(opt.checkpoint);
    return examples::with_checkpoint_policy(stored, [&]<class P>() { return measure<P>(opt); });
  });
}
