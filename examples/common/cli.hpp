// examples/common/cli.hpp — what every program's main shares: the error convention of
// docs/design.md §7 (one line on stderr naming the program and the problem, non-zero exit), input
// file checks, and describing a model variant in one line.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>

#include "common/device.hpp"

namespace examples {

/// Parses the command line, then runs `body`; returns the exit status. A parse error or any
/// exception becomes one line "<program>: <what>" on stderr (a device that cannot run:
/// "<program>: --device cuda: <what>", with DeviceUnavailable's status). MLA_GEMM_KERNEL is
/// read first, so that a kernel this CPU cannot run is refused here, before any work.
inline int run_main(const char* program, CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  try {
    (void)mla::kernels::gemm_kernel();
    return body();
  } catch (const DeviceUnavailable& e) {
    std::cerr << program << ": --device cuda: " << e.what() << "\n";
    return e.status();
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

/// Throws unless `path` is an existing regular file; `what` says what it should be.
inline void require_file(const std::filesystem::path& path, const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw std::runtime_error(path.string() + ": no such " + what);
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error(path.string() + ": not a file");
}

/// "MLA, kv_rank 170, q_rank 128, rope 16" (", latent norm rmsnorm" when not LayerNorm) /
/// "GQA, 2 kv heads, rope full" / "MHA, rope none".
inline std::string describe_variant(const mla::ModelConfig& c) {
  using mla::AttentionKind, mla::Rope;
  std::string s;
  switch (c.attention) {
    case AttentionKind::MHA: s = "MHA"; break;
    case AttentionKind::GQA: s = "GQA, " + std::to_string(c.n_kv_heads) + " kv heads"; break;
    case AttentionKind::MQA: s = "MQA"; break;
    case AttentionKind::MLA:
      s = "MLA, kv_rank " + std::to_string(c.kv_rank) + ", q_rank " + std::to_string(c.q_rank);
      s += c.qk_rope_dim > 0 ? ", rope " + std::to_string(c.qk_rope_dim) : ", no rope";
      // The default norm is left unsaid, so that the default run's line stays as it was.
      return c.latent_norm == mla::LatentNorm::LayerNorm ? s : s + ", latent norm " + mla::to_string(c.latent_norm);
  }
  if (c.rope == Rope::Decoupled) return s + ", decoupled rope " + std::to_string(c.qk_rope_dim);
  return s + ", rope " + mla::to_string(c.rope);
}

/// The config stored in a checkpoint file (read and validated), for choosing its policy.
inline mla::ModelConfig read_checkpoint_config(const std::filesystem::path& path) {
  require_file(path, "checkpoint");
  const mla::SafetensorsFile file = mla::read_safetensors(path);
  return mla::checkpoint_config(file, path.string());
}

}  // namespace examples
