// examples/common/train_settings.hpp — train_model's settings: every flag of a run, its run.json
// form (what --resume reads back) and the defaults that depend on other flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

#include <mla/mla.hpp>

namespace examples::training {

namespace fs = std::filesystem;

/// Every setting of a run (run.json holds them all, resolved). -1 / "" = the default named in --help.
struct Settings {
  std::string train, val, init_from, attn = "mla", rope, latent_norm;
  std::int64_t vocab = 10000, d_model = 256, heads = 8, layers = 4, kv_heads = -1, q_rank = -1, kv_rank = -1,
               rope_dim = -1, seq_len = 256, max_seq_len = -1, batch = 8, accum = 1, steps = 1000, warmup = -1,
               save_every = 0, eval_every = 100, val_windows = 16, log_every = 10, max_bad_steps = 5, seed = 1234,
               threads = 0;
  double lr = 1e-3, weight_decay = 0.1, grad_clip = 1.0, dropout = 0.0;
  std::int64_t processes = 1;  // the ranks of the MPI job that trains it (mpirun -np): not a flag
};

/// One flag of Settings: its name (also its run.json key), help, and whether resume may change it.
struct Field {
  const char* flag;
  const char* help;
  bool resume_may_change;
  std::variant<std::string Settings::*, std::int64_t Settings::*, double Settings::*> member;
};

inline const Field kFields[] = {
    {"--train", "training tokens (llm.c .bin, docs/design.md §6)", false, &Settings::train},
    {"--val", "validation tokens, evaluated every --eval-every steps and at the end", false, &Settings::val},
    {"--init-from", "start from this checkpoint's model and weights (a fresh optimizer and schedule)", false,
     &Settings::init_from},
    {"--attn", "attention: mha, gqa, mqa or mla", false, &Settings::attn},
    {"--rope", "none, full or decoupled (default: full for mha/gqa/mqa, decoupled for mla)", false, &Settings::rope},
    {"--vocab-size", "vocabulary size (every token id must be below it)", false, &Settings::vocab},
    {"--d-model", "model width D", false, &Settings::d_model},
    {"--heads", "attention heads H", false, &Settings::heads},
    {"--layers", "transformer blocks", false, &Settings::layers},
    {"--kv-heads", "key/value heads of gqa (default 2)", false, &Settings::kv_heads},
    {"--q-rank", "mla query rank (default D/2; 0 = no query compression)", false, &Settings::q_rank},
    {"--kv-rank", "mla latent rank (default 2D/3)", false, &Settings::kv_rank},
    {"--rope-dim", "rotated dims of decoupled rope (default head_dim/2)", false, &Settings::rope_dim},
    {"--latent-norm", "mla latent norm: layernorm, rmsnorm or none (default layernorm)", false, &Settings::latent_norm},
    {"--seq-len", "training window T", false, &Settings::seq_len},
    {"--max-seq-len", "the model's max_seq_len (default --seq-len)", false, &Settings::max_seq_len},
    {"--batch", "windows per micro-batch B", false, &Settings::batch},
    {"--accum", "micro-batches accumulated per step", false, &Settings::accum},
    {"--steps", "length of the whole run (the schedule depends on it)", true, &Settings::steps},
    {"--warmup", "linear warmup steps (default min(100, steps/10))", false, &Settings::warmup},
    {"--lr", "peak learning rate", false, &Settings::lr},
    {"--weight-decay", "AdamW weight decay (matrices only)", false, &Settings::weight_decay},
    {"--grad-clip", "clip the gradient norm to this (0 = off)", false, &Settings::grad_clip},
    {"--dropout", "dropout probability", false, &Settings::dropout},
    {"--save-every", "also save the checkpoint every K steps (0 = only at the end)", true, &Settings::save_every},
    {"--eval-every", "evaluate --val every K steps (and at the end)", false, &Settings::eval_every},
    {"--val-windows", "validation windows per evaluation (§6 windows, the first ones)", false, &Settings::val_windows},
    {"--log-every", "a log line every K steps when stderr is not a terminal", false, &Settings::log_every},
    {"--max-bad-steps", "stop after this many consecutive non-finite steps", false, &Settings::max_bad_steps},
    {"--seed", "seed of the initial weights, the data order and dropout", false, &Settings::seed},
    {"--threads", "CPU threads (default: all cores)", true, &Settings::threads},
};

/// The flags that shape the model: a run --init-from takes them all from its checkpoint.
inline constexpr const char* kModelFlags[] = {"--attn",    "--rope",    "--vocab-size", "--d-model",
                                              "--heads",   "--layers",  "--kv-heads",   "--q-rank",
                                              "--kv-rank", "--rope-dim", "--latent-norm", "--max-seq-len"};

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument(what); }

/// Sets the model's flags to those of a checkpoint's config (what --init-from trains). Sizes no
/// flag holds (a converted model's nope dims, its rope_theta) come from the checkpoint itself.
inline void take_model_from(Settings& s, const mla::ModelConfig& c) {
  using mla::AttentionKind, mla::Rope;
  s.attn = mla::to_string(c.attention);
  s.rope = mla::to_string(c.rope);
  s.vocab = c.vocab_size;
  s.d_model = c.d_model;
  s.heads = c.n_heads;
  s.layers = c.n_layers;
  s.max_seq_len = c.max_seq_len;
  s.kv_heads = c.attention == AttentionKind::GQA ? c.n_kv_heads : -1;
  const bool latent = c.attention == AttentionKind::MLA;
  s.q_rank = latent ? c.q_rank : -1;
  s.kv_rank = latent ? c.kv_rank : -1;
  s.rope_dim = c.rope == Rope::Decoupled ? c.qk_rope_dim : -1;
  s.latent_norm = latent ? mla::to_string(c.latent_norm) : "";
}

inline std::string flag_value(const Settings& s, const Field& f) {
  return std::visit([&](auto m) {
    std::ostringstream out;
    out << s.*m;
    return out.str();
  }, f.member);
}

inline nlohmann::ordered_json to_json(const Settings& s) {
  nlohmann::ordered_json j;
  for (const Field& f : kFields) std::visit([&](auto m) { j[f.flag + 2] = s.*m; }, f.member);
  j["processes"] = s.processes;
  return j;
}

inline Settings from_json(const nlohmann::json& j, const std::string& where) {
  Settings s;
  for (const Field& f : kFields) {
    const char* key = f.flag + 2;
    // A run saved before --latent-norm or --init-from existed used the default.
    if (!j.contains(key) && (std::string(key) == "latent-norm" || std::string(key) == "init-from")) continue;
    if (!j.contains(key)) fail(where + ": missing '" + key + "'");
    std::visit([&](auto m) {
      using V = std::remove_reference_t<decltype(s.*m)>;
      const auto& v = j[key];
      const bool ok = std::is_same_v<V, std::string> ? v.is_string()
                      : std::is_same_v<V, double>    ? v.is_number()
                                                     : v.is_number_integer();
      if (!ok) fail(where + ": '" + key + "' has the wrong type");
      s.*m = v.get<V>();
    }, f.member);
  }
  if (j.contains("processes")) {  // a run saved before data-parallel training had one
    const auto& v = j["processes"];
    if (!v.is_number_integer() || v.get<std::int64_t>() < 1) fail(where + ": 'processes' is not a positive integer");
    s.processes = v.get<std::int64_t>();
  }
  return s;
}

/// Fills the defaults that depend on other settings and checks every range.
inline void resolve(Settings& s) {
  if (s.rope.empty()) s.rope = s.attn == "mla" ? "decoupled" : "full";
  if (s.attn != "mla" && !s.latent_norm.empty()) fail("--latent-norm applies to --attn mla only");
  if (s.attn == "mla" && s.latent_norm.empty()) s.latent_norm = "layernorm";
  if (s.attn == "mla" && s.latent_norm != "layernorm" && s.latent_norm != "rmsnorm" && s.latent_norm != "none") {
    fail("--latent-norm " + s.latent_norm + ": expected layernorm, rmsnorm or none");
  }
  if (s.max_seq_len < 0) s.max_seq_len = s.seq_len;
  if (s.warmup < 0) s.warmup = std::min<std::int64_t>(100, s.steps / 10);
  if (s.kv_heads < 0 && s.attn == "gqa") s.kv_heads = 2;
  if (s.threads <= 0) s.threads = std::max(1u, std::thread::hardware_concurrency());
  auto at_least = [](const char* flag, std::int64_t v, std::int64_t lo) {
    if (v < lo) fail(std::string(flag) + " " + std::to_string(v) + " must be at least " + std::to_string(lo));
  };
  at_least("--seq-len", s.seq_len, 1);
  at_least("--batch", s.batch, 1);
  at_least("--accum", s.accum, 1);
  at_least("--steps", s.steps, 1);
  at_least("--save-every", s.save_every, 0);
  at_least("--eval-every", s.eval_every, 1);
  at_least("--val-windows", s.val_windows, 1);
  at_least("--log-every", s.log_every, 1);
  at_least("--max-bad-steps", s.max_bad_steps, 1);
  if (s.seq_len > s.max_seq_len) {
    fail("--seq-len " + std::to_string(s.seq_len) + " exceeds --max-seq-len " + std::to_string(s.max_seq_len));
  }
  if (!(s.lr > 0)) fail("--lr must be positive");
  if (!(s.weight_decay >= 0)) fail("--weight-decay must not be negative");
  if (!(s.grad_clip >= 0)) fail("--grad-clip must not be negative");
  if (!(s.dropout >= 0 && s.dropout < 1)) fail("--dropout must be in [0, 1)");
  if (s.attn != "mla" && (s.q_rank >= 0 || s.kv_rank >= 0)) fail("--q-rank and --kv-rank apply to --attn mla only");
  if (s.attn != "gqa" && s.kv_heads >= 0) fail("--kv-heads applies to --attn gqa only (mha and mqa fix it)");
  if (s.rope != "decoupled" && s.rope_dim >= 0) fail("--rope-dim applies to --rope decoupled only");
  if (s.rope == "decoupled" && s.rope_dim == 0) fail("--rope-dim 0: use --rope none for a model without rope");
}

inline mla::ModelConfig model_config(const Settings& s) {
  mla::ModelConfig c{.vocab_size = s.vocab, .d_model = s.d_model, .n_heads = s.heads, .n_layers = s.layers,
                     .max_seq_len = s.max_seq_len};
  auto size = [](std::int64_t v) { return v < 0 ? mla::Dynamic : v; };
  c.n_kv_heads = size(s.kv_heads);
  c.q_rank = size(s.q_rank);
  c.kv_rank = size(s.kv_rank);
  c.qk_rope_dim = s.attn == "mla" && s.rope == "none" ? 0 : size(s.rope_dim);
  c.latent_norm = s.latent_norm == "rmsnorm" ? mla::LatentNorm::RmsNorm
                  : s.latent_norm == "none"  ? mla::LatentNorm::None
                                             : mla::LatentNorm::LayerNorm;
  return c;
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw mla::IoError(path.string() + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_text(const fs::path& path, const std::string& text) {
  mla::write_file_atomically(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

}  // namespace examples::training
