// convert_to_mla — turns an MHA, GQA or MQA checkpoint into an MLA one (mla/convert/to_mla.hpp
// has the method): q_rank 0, latent_norm none, keys and values through a latent of --kv-rank.
//
//   convert_to_mla --checkpoint IN --out OUT --kv-rank R [--rope-dim r] [--method svd|pca]
//                  [--calibration FILE.bin] [--calibration-windows N] [--seq-len T] [--threads N]
//
// --rope-dim: a full-rope source keeps r of each head's rotated dims (default head_dim/2), in one
// rotated key shared by the heads; a decoupled source keeps its own; a source without rope, none.
// --calibration: a token file whose first N windows of T tokens (default 32 of max_seq_len)
// calibrate the conversion — the second moment of each layer's attention input weighs the
// full-rope frequency choice and, with --method pca, the factorization (which needs it) — and
// on which both models' losses are printed.
// At --kv-rank >= rank (the limit it names) a source without rope or with decoupled rope converts
// exactly. The output is an ordinary checkpoint (docs/design.md §5), written atomically once every
// input has been checked; fine-tune it with `train_model --init-from OUT`.
//
// Output: what was converted and kept, then one line of key=value pairs:
//   cache_bytes_before=<int> cache_bytes_after=<int> [loss_before=<float> loss_after=<float>]
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <mla/convert/to_mla.hpp>
#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/eval_run.hpp"
#include "common/variants.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  fs::path checkpoint, out, calibration;
  std::int64_t kv_rank = 0, rope_dim = -1, windows = 32, seq_len = 0;
  std::string method = "svd";
  int threads = 0;
};

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * share);
  return buf;
}

template <class P>
int convert(const Options& opt) {
  if constexpr (!mla::HeadwisePolicy<P>) {
    throw std::runtime_error(opt.checkpoint.string() + " holds mla attention already (convert_to_mla converts mha, "
                             "gqa or mqa checkpoints)");
  } else {
    const auto source = mla::load_model<P>(opt.checkpoint);
    const mla::ModelConfig& cfg = source->config();
    const mla::convert::Options copt{.kv_rank = opt.kv_rank,
                                     .rope_dim = opt.rope_dim < 0 ? mla::Dynamic : opt.rope_dim,
                                     .method = opt.method == "pca" ? mla::convert::Method::Pca
                                                                   : mla::convert::Method::Svd};
    mla::convert::check(cfg, copt, !opt.calibration.empty());  // before the calibration runs
    const std::int64_t T = opt.seq_len > 0 ? opt.seq_len : cfg.max_seq_len;
    if (T > cfg.max_seq_len) {
      throw std::runtime_error("--seq-len " + std::to_string(T) + " exceeds the max_seq_len of " +
                               opt.checkpoint.string() + " (" + std::to_string(cfg.max_seq_len) + ")");
    }
    std::vector<std::uint16_t> tokens;
    std::int64_t windows = 0;
    std::optional<mla::convert::Calibration> calibration;
    if (!opt.calibration.empty()) {
      examples::require_file(opt.calibration, "token file");
      tokens = mla::read_tokens(opt.calibration, cfg.vocab_size);
      windows = examples::evaluation::window_count(static_cast<std::int64_t>(tokens.size()), T, opt.windows,
                                                   opt.calibration);
      calibration = mla::convert::calibrate(*source, tokens, T, windows);
    }
    const auto converted = mla::convert::to_mla(*source, copt, calibration ? &*calibration : nullptr);
    const auto& model = *converted.model;
    const auto& report = converted.report;

    const std::int64_t before = source->cache_bytes_per_token(), after = model.cache_bytes_per_token();
    std::cout << "convert_to_mla: " << opt.checkpoint.string() << ": " << examples::describe_variant(cfg) << ", "
              << source->parameters().count() << " parameters, KV cache " << before << " bytes/token\n";
    std::cout << "convert_to_mla: " << opt.out.string() << ": " << examples::describe_variant(model.config()) << ", "
              << model.parameters().count() << " parameters, KV cache " << after << " bytes/token ("
              << percent(static_cast<double>(after) / static_cast<double>(before)) << " of the source's)\n";
    if (cfg.rope == mla::Rope::Full) {
      std::cout << "convert_to_mla: rope: frequencies";
      for (std::int64_t i = 0; i < model.config().qk_rope_dim / 2; ++i) std::cout << (i ? ", " : " ") << i * report.rope_stride;
      std::cout << " of 0.." << cfg.head_dim / 2 - 1 << " kept (rope_theta " << model.config().rope_theta << "), "
                << percent(report.rope_importance_kept) << " of the q.k importance\n";
    }
    std::cout << "convert_to_mla: keys and values (" << mla::convert::to_string(copt.method) << ", rank "
              << opt.kv_rank << "): energy kept per layer";
    for (double kept : report.kv_energy_kept) std::cout << " " << percent(kept);
    std::cout << "\n";

    char line[256];
    std::snprintf(line, sizeof line, "cache_bytes_before=%lld cache_bytes_after=%lld", static_cast<long long>(before),
                  static_cast<long long>(after));
    std::string result = line;
    if (calibration) {
      const auto lb = examples::evaluation::evaluate(*source, tokens, T, windows, 4);
      const auto la = examples::evaluation::evaluate(model, tokens, T, windows, 4);
      std::cout << "convert_to_mla: calibration loss (" << windows << " windows of " << T << " tokens of "
                << opt.calibration.string() << "): " << lb.loss << " before, " << la.loss << " after\n";
      std::snprintf(line, sizeof line, " loss_before=%.6f loss_after=%.6f", lb.loss, la.loss);
      result += line;
    }
    mla::save_model(opt.out, model);
    std::cout << "convert_to_mla: wrote " << opt.out.string() << "\n" << result << "\n";
    return 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Converts an MHA, GQA or MQA checkpoint into MLA (exact at full rank without full rope)."};
  Options opt;
  app.add_option("--checkpoint", opt.checkpoint, "the MHA, GQA or MQA checkpoint")->required();
  app.add_option("--out", opt.out, "the MLA checkpoint to write (.safetensors)")->required();
  app.add_option("--kv-rank", opt.kv_rank, "latent rank of the MLA model")->required();
  app.add_option("--rope-dim", opt.rope_dim, "rotated dims per head (full rope: default head_dim/2)");
  app.add_option("--method", opt.method, "svd (of the weights) or pca (of the calibration's activations)")
      ->capture_default_str()->check(CLI::IsMember({"svd", "pca"}));
  app.add_option("--calibration", opt.calibration, "token file (.bin) to calibrate on and to score both models");
  app.add_option("--calibration-windows", opt.windows, "calibration windows")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seq-len", opt.seq_len, "calibration window length (default: max_seq_len)");
  app.add_option("--threads", opt.threads, "CPU threads (default: all cores)");
  return examples::run_main("convert_to_mla", app, argc, argv, [&] {
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    if (fs::weakly_canonical(opt.out) == fs::weakly_canonical(opt.checkpoint)) {
      throw std::runtime_error("--out " + opt.out.string() + " is the input checkpoint; write the conversion elsewhere");
    }
    const fs::path folder = fs::absolute(opt.out).parent_path();
    if (!fs::is_directory(folder)) throw std::runtime_error("--out " + opt.out.string() + ": no folder " + folder.string());
    const mla::ModelConfig stored = examples::read_checkpoint_config(opt.checkpoint);
    return examples::with_checkpoint_policy(stored, [&]<class P>() { return convert<P>(opt); });
  });
}
