// examples/common/eval_run.hpp — eval_model's scoring of a checkpoint, on either device: load it,
// run its windows through the model in batches, sum the losses on the host (eval_model.cpp
// describes the windows and the output). eval_model.cpp instantiates it for mla::Cpu;
// examples/cuda/eval_model_cuda.cu for mla::Cuda, behind evaluate_checkpoint_on_cuda.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <mla/mla.hpp>
#include <mla/train/token_file.hpp>

#include "common/cli.hpp"
#include "common/device.hpp"
#include "common/variants.hpp"

namespace examples::evaluation {

namespace fs = std::filesystem;

struct Options {
  fs::path checkpoint, data, unigram;
  std::vector<fs::path> compare;
  std::int64_t seq_len = 0;       // 0: the checkpoint's max_seq_len
  std::int64_t max_windows = 0;   // 0: all
  std::int64_t batch = 4;
  std::int64_t vocab_size = 0;    // for --unigram without a checkpoint; 0: largest id + 1
  int threads = 0;                // 0: OpenMP's default
  bool json = false;
  bool through_cache = false;     // score token by token through the KV cache
  std::string cache_dtype = "f32";  // how that cache stores its values: f32, bf16 or int8
  std::string device = "cpu";     // where the checkpoints run: cpu or cuda
};

/// One evaluation: mean loss over `tokens` targets.
struct Score {
  double loss = 0;
  std::int64_t tokens = 0;
  [[nodiscard]] double perplexity() const { return std::exp(loss); }
};

/// A checkpoint's evaluation, with what the comparison table shows.
struct ModelScore {
  Score score;
  mla::ModelConfig config;
  std::int64_t parameters = 0, cache_bytes_per_token = 0, seq_len = 0, windows = 0;
};

/// Number of windows of length T to score in `n` tokens (throws when there is none).
inline std::int64_t window_count(std::int64_t n, std::int64_t T, std::int64_t max_windows, const fs::path& data) {
  std::int64_t windows = mla::eval_windows(n, T);
  if (windows == 0) {
    throw std::runtime_error(data.string() + ": its " + std::to_string(n) + " tokens hold no window of " +
                             std::to_string(T + 1) + " tokens (inputs and the shifted targets); use a smaller --seq-len");
  }
  if (max_windows > 0) windows = std::min(windows, max_windows);
  return windows;
}

/// Mean cross-entropy of `model` over the first `windows` windows of length T: each batch's
/// windows built on the host and copied to the device, its mean loss back as a host scalar.
template <class P, mla::Device D>
Score evaluate(const mla::GPT<P, float, D>& model, std::span<const std::uint16_t> tokens, std::int64_t T,
               std::int64_t windows, std::int64_t batch) {
  mla::NoGradGuard no_grad;
  mla::Tape<float, D> tape;
  double total = 0;
  for (std::int64_t first = 0; first < windows; first += batch) {
    const std::int64_t B = std::min(batch, windows - first);
    WindowBatch<D> inputs(B, T);
    mla::fill_eval_batch(tokens, first, T, inputs.host_ids, inputs.host_targets);
    inputs.upload();
    tape.clear();
    const float mean = model.loss(tape, inputs.ids, inputs.targets).value().to_vector()[0];
    total += static_cast<double>(mean) * static_cast<double>(B * T);
  }
  return Score{total / static_cast<double>(windows * T), windows * T};
}

/// The same windows scored through the KV cache: each window's tokens decoded one at a time
/// (teacher-forced) into a cache that stores its values as `dtype`, each step's logits scored
/// against the next token (log-softmax in double on the host). With f32 this equals evaluate()
/// up to float rounding; with bf16 or int8 the difference is what the quantized cache costs.
template <class P, mla::Device D>
Score evaluate_through_cache(const mla::GPT<P, float, D>& model, std::span<const std::uint16_t> tokens, std::int64_t T,
                             std::int64_t windows, std::int64_t batch, mla::CacheDtype dtype) {
  mla::NoGradGuard no_grad;
  const std::int64_t V = model.config().vocab_size;
  double total = 0;
  std::vector<std::int32_t> ids;
  std::vector<float> logits;
  for (std::int64_t first = 0; first < windows; first += batch) {
    const std::int64_t B = std::min(batch, windows - first);
    auto cache = model.make_cache(B, T, mla::GPT<P, float, D>::kDefaultCacheMode, dtype);
    ids.resize(static_cast<std::size_t>(B));
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t b = 0; b < B; ++b) ids[static_cast<std::size_t>(b)] = tokens[static_cast<std::size_t>((first + b) * T + t)];
      logits = model.decode(std::span<const std::int32_t>(ids), cache).to_vector();
      for (std::int64_t b = 0; b < B; ++b) {
        const float* row = logits.data() + b * V;
        const double top = *std::max_element(row, row + V);
        double sum = 0;
        for (std::int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(row[i]) - top);
        const auto target = tokens[static_cast<std::size_t>((first + b) * T + t + 1)];
        total += top + std::log(sum) - static_cast<double>(row[target]);
      }
    }
  }
  return Score{total / static_cast<double>(windows * T), windows * T};
}

/// Loads the checkpoint at `path` onto device D and scores it on the token file `data`.
template <mla::Device D>
ModelScore evaluate_checkpoint(const fs::path& path, const fs::path& data, const Options& opt) {
  const mla::ModelConfig stored = read_checkpoint_config(path);
  return with_checkpoint_policy(stored, [&]<class P>() {
    const auto model = mla::load_model<P, float, D>(path);
    const mla::ModelConfig& cfg = model->config();
    const std::int64_t T = opt.seq_len > 0 ? opt.seq_len : cfg.max_seq_len;
    if (T > cfg.max_seq_len) {
      throw std::runtime_error("--seq-len " + std::to_string(T) + " exceeds the max_seq_len of " + path.string() +
                               " (" + std::to_string(cfg.max_seq_len) + ")");
    }
    require_file(data, "token file");
    const auto tokens = mla::read_tokens(data, cfg.vocab_size);
    ModelScore out;
    out.windows = window_count(static_cast<std::int64_t>(tokens.size()), T, opt.max_windows, data);
    out.score = opt.through_cache ? evaluate_through_cache(*model, tokens, T, out.windows, opt.batch,
                                                           mla::cache_dtype_from_string(opt.cache_dtype))
                                  : evaluate(*model, tokens, T, out.windows, opt.batch);
    out.config = cfg;
    out.parameters = model->parameters().count();
    out.cache_bytes_per_token = model->cache_bytes_per_token(
        mla::GPT<P, float, D>::kDefaultCacheMode, opt.through_cache ? mla::cache_dtype_from_string(opt.cache_dtype)
                                                                    : mla::CacheDtype::F32);
    out.seq_len = T;
    return out;
  });
}

/// evaluate_checkpoint<mla::Cuda> (examples/cuda/eval_model_cuda.cu; without the CUDA backend,
/// examples/common/no_cuda.cpp).
ModelScore evaluate_checkpoint_on_cuda(const fs::path& path, const fs::path& data, const Options& opt);

}  // namespace examples::evaluation
