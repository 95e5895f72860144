// train_model — trains a GPT with the chosen attention on an llm.c token file (docs/design.md §6, §7).
//
//   train_model --train FILE.bin --out DIR [--val FILE.bin] [--attn mha|gqa|mqa|mla]
//               [--rope none|full|decoupled] [model sizes] [--seq-len T] [--batch B] [--steps N]
//               [--stop-after K] [--save-every K] [--lr X] [--seed S] [--threads N] [--resume DIR]
//   (`train_model --help` lists every flag with its default.)
//
// Each step draws B windows of T tokens per micro-batch at seeded random positions
// (mla/train/batches.hpp: a hash of (seed, step, micro, row)), runs --accum micro-batches
// whose loss gradients are each seeded with 1/accum (so the accumulated gradient is that of
// the mean loss), clips the gradient norm to --grad-clip, and takes one AdamW step with the
// cosine schedule (linear warmup over --warmup steps, floor 0.1 x --lr at --steps). Dropout
// masks are seeded per (step, micro-batch). A step whose loss or gradient norm is not finite
// is skipped and counted; --max-bad-steps in a row stop the run with an error.
//
// DIR gets, each written atomically:
//   model.safetensors  the model (§5) with the optimizer and progress (mla/train/train_state.hpp),
//                      at every --save-every steps, at --stop-after and at the end
//   run.json           every setting, so that --resume DIR continues the same run
//   metrics.csv        step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s (one row a step;
//                      appended and flushed; val_loss empty where not evaluated)
//   loss.png           train and validation loss against tokens (gnuplot, when installed)
// --resume DIR continues up to --steps; with the same thread count, the final checkpoint has
// the same bytes as a run that never stopped. Only --steps, --stop-after, --save-every,
// --threads and --out may change on resume; any other flag must match the run or be left out.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mla/mla.hpp>
#include <mla/train/adamw.hpp>
#include <mla/train/batches.hpp>
#include <mla/train/schedule.hpp>
#include <mla/train/token_file.hpp>
#include <mla/train/train_state.hpp>

#include "common/variants.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

/// Every setting of a run (run.json holds them all, resolved). -1 / "" = the default named in --help.
struct Settings {
  std::string train, val, attn = "mla", rope;
  std::int64_t vocab = 10000, d_model = 256, heads = 8, layers = 4, kv_heads = -1, q_rank = -1, kv_rank = -1,
               rope_dim = -1, seq_len = 256, max_seq_len = -1, batch = 8, accum = 1, steps = 1000, warmup = -1,
               save_every = 0, eval_every = 100, val_windows = 16, log_every = 10, max_bad_steps = 5, seed = 1234,
               threads = 0;
  double lr = 1e-3, weight_decay = 0.1, grad_clip = 1.0, dropout = 0.0;
};

/// One flag of Settings: its name (also its run.json key), help, and whether resume may change it.
struct Field {
  const char* flag;
  const char* help;
  bool resume_may_change;
  std::variant<std::string Settings::*, std::int64_t Settings::*, double Settings::*> member;
};

const Field kFields[] = {
    {"--train", "training tokens (llm.c .bin, docs/design.md §6)", false, &Settings::train},
    {"--val", "validation tokens, evaluated every --eval-every steps and at the end", false, &Settings::val},
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

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

std::string flag_value(const Settings& s, const Field& f) {
  return std::visit([&](auto m) {
    std::ostringstream out;
    out << s.*m;
    return out.str();
  }, f.member);
}

nlohmann::ordered_json to_json(const Settings& s) {
  nlohmann::ordered_json j;
  for (const Field& f : kFields) std::visit([&](auto m) { j[f.flag + 2] = s.*m; }, f.member);
  return j;
}

Settings from_json(const nlohmann::json& j, const std::string& where) {
  Settings s;
  for (const Field& f : kFields) {
    const char* key = f.flag + 2;
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
  return s;
}

/// Fills the defaults that depend on other settings and checks every range.
void resolve(Settings& s) {
  if (s.rope.empty()) s.rope = s.attn == "mla" ? "decoupled" : "full";
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

mla::ModelConfig model_config(const Settings& s) {
  mla::ModelConfig c{.vocab_size = s.vocab, .d_model = s.d_model, .n_heads = s.heads, .n_layers = s.layers,
                     .max_seq_len = s.max_seq_len};
  auto size = [](std::int64_t v) { return v < 0 ? mla::Dynamic : v; };
  c.n_kv_heads = size(s.kv_heads);
  c.q_rank = size(s.q_rank);
  c.kv_rank = size(s.kv_rank);
  c.qk_rope_dim = s.attn == "mla" && s.rope == "none" ? 0 : size(s.rope_dim);
  return c;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw mla::IoError(path.string() + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_text(const fs::path& path, const std::string& text) {
  mla::write_file_atomically(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

/// metrics.csv: created (or, on resume, cut back to the resumed step) atomically, then appended.
class Metrics {
 public:
  static constexpr const char* kHeader = "step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s\n";

  Metrics(const fs::path& path, const fs::path& previous, std::int64_t keep_up_to) : path_(path) {
    std::string text = kHeader;
    if (keep_up_to > 0 && fs::exists(previous)) {
      std::istringstream in(read_text(previous));
      std::string line;
      std::getline(in, line);  // header
      while (std::getline(in, line)) {
        if (!line.empty() && std::atoll(line.c_str()) <= keep_up_to) text += line + "\n";
      }
    }
    write_text(path, text);
    out_.open(path, std::ios::app);
    if (!out_) throw mla::IoError(path.string() + ": cannot append");
  }

  void row(std::int64_t step, std::int64_t tokens, double loss, double val, double lr, double norm, double rate) {
    char v[32] = "", line[256];
    if (!std::isnan(val)) std::snprintf(v, sizeof v, "%.6g", val);
    std::snprintf(line, sizeof line, "%lld,%lld,%.6g,%s,%.6e,%.6g,%.1f\n", static_cast<long long>(step),
                  static_cast<long long>(tokens), loss, v, lr, norm, rate);
    out_ << line << std::flush;
    if (!out_) throw mla::IoError(path_.string() + ": write failed");
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

/// Draws DIR/loss.png from DIR/metrics.csv with gnuplot; a note (once) when it cannot.
void plot_loss(const fs::path& dir) {
  static bool available = std::system("command -v gnuplot >/dev/null 2>&1") == 0, noted = false;
  auto note = [&](const char* why) {
    if (!noted) std::cout << "train_model: note: " << why << "; loss.png is not drawn\n";
    noted = true;
  };
  if (!available) return note("gnuplot is not installed");
  auto quoted = [](const fs::path& p) {  // a gnuplot single-quoted string
    std::string s = "'";
    for (char c : p.string()) s += c == '\'' ? std::string("''") : std::string(1, c);
    return s + "'";
  };
  const fs::path script = dir / ".loss.gp", tmp = dir / ".loss.png.tmp";
  write_text(script, "set terminal pngcairo size 900,560\nset output " + quoted(tmp) +
                         "\nset datafile separator ','\nset key autotitle columnhead\nset grid\n"
                         "set xlabel 'tokens'\nset ylabel 'cross-entropy loss'\n"
                         "plot " + quoted(dir / "metrics.csv") + " using 2:3 with lines lw 2 title 'train', "
                         "'' using 2:4 with linespoints pt 7 title 'validation'\n");
  const std::string command = "gnuplot " + quoted(script) + " >/dev/null 2>&1";
  const bool ok = std::system(command.c_str()) == 0 && fs::exists(tmp);
  std::error_code ec;
  fs::remove(script, ec);
  if (ok) fs::rename(tmp, dir / "loss.png", ec);
  if (!ok || ec) {
    fs::remove(tmp, ec);
    note("gnuplot failed");
  }
}

std::string duration(double seconds) {
  const auto s = static_cast<long long>(seconds);
  char out[32];
  if (s >= 3600) std::snprintf(out, sizeof out, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else std::snprintf(out, sizeof out, "%lldm%02llds", s / 60, s % 60);
  return out;
}

/// A progress bar redrawn on a terminal; plain lines every --log-every steps otherwise.
class Progress {
 public:
  Progress(std::int64_t total, std::int64_t log_every) : total_(total), log_every_(log_every), tty_(::isatty(2) != 0) {}

  void update(std::int64_t step, double loss, double lr, double rate, double eta) {
    char stats[160];
    std::snprintf(stats, sizeof stats, "loss %.4f  lr %.2e  %.0f tok/s  ETA %s", loss, lr, rate, duration(eta).c_str());
    if (tty_) {
      constexpr int kWidth = 24;
      const auto filled = static_cast<int>(kWidth * step / total_);
      std::fprintf(stderr, "\r\033[K%lld/%lld [%s%s] %s", static_cast<long long>(step),
                   static_cast<long long>(total_), std::string(filled, '#').c_str(),
                   std::string(kWidth - filled, '.').c_str(), stats);
      std::fflush(stderr);
      drawn_ = true;
    } else if (step % log_every_ == 0 || step == total_) {
      std::cout << "step " << step << "/" << total_ << "  " << stats << std::endl;
    }
  }

  /// A line that stays (evaluation, checkpoint, warnings), printed under the bar.
  void note(const std::string& line) {
    clear();
    std::cout << line << std::endl;
  }

  void clear() {
    if (!drawn_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }

 private:
  std::int64_t total_, log_every_;
  bool tty_, drawn_ = false;
};

/// Mean loss over the first `max_windows` §6 windows of `tokens`, in batches of B, no grad.
template <class P>
double evaluate(const mla::GPT<P>& model, mla::Tape<float>& tape, std::span<const std::uint16_t> tokens,
                std::int64_t T, std::int64_t B, std::int64_t max_windows) {
  mla::NoGradGuard no_grad;
  const std::int64_t windows = std::min(max_windows, mla::eval_windows(static_cast<std::int64_t>(tokens.size()), T));
  double sum = 0;
  for (std::int64_t first = 0; first < windows; first += B) {
    const std::int64_t rows = std::min(B, windows - first);
    auto ids = mla::Tensor<std::int32_t>::empty({rows, T}), targets = mla::Tensor<std::int32_t>::empty({rows, T});
    mla::fill_eval_batch(tokens, first, T, ids, targets);
    tape.clear();
    sum += static_cast<double>(model.loss(tape, ids, targets).value()[0]) * static_cast<double>(rows);
  }
  tape.clear();
  return sum / static_cast<double>(windows);
}

std::vector<std::uint16_t> load_tokens(const char* flag, const std::string& path, const Settings& s) {
  auto tokens = mla::read_tokens(path, s.vocab);
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (!mla::has_training_window(n, s.seq_len)) {
    fail(std::string(flag) + " " + path + ": " + std::to_string(n) + " tokens are too few for one window of --seq-len " +
         std::to_string(s.seq_len) + " (need " + std::to_string(s.seq_len + 1) + ")");
  }
  return tokens;
}

struct Run {
  Settings s;
  fs::path out, resume;      // resume: empty for a fresh run
  std::int64_t stop_after;  // 0: run to --steps
};

template <class P>
int train(const Run& run) {
  const Settings& s = run.s;
  const auto train_tokens = load_tokens("--train", s.train, s);
  const auto val_tokens = s.val.empty() ? std::vector<std::uint16_t>{} : load_tokens("--val", s.val, s);

  mla::set_num_threads(static_cast<int>(s.threads));
  mla::GPT<P> model(model_config(s), static_cast<std::uint64_t>(s.seed));
  auto& store = model.parameters();
  mla::AdamW<float> opt(store, mla::AdamWOptions{.weight_decay = s.weight_decay});
  mla::TrainProgress progress{.seed = s.seed};
  if (!run.resume.empty()) {
    progress = mla::load_training_checkpoint(run.resume / "model.safetensors", model, opt);
    if (progress.seed != s.seed) fail(run.resume.string() + ": train.seed differs from run.json's seed");
    if (progress.step >= s.steps) {
      std::cout << "train_model: the run in " << run.resume.string() << " has done " << progress.step << " of "
                << s.steps << " steps: nothing to do (raise --steps to train longer)\n";
      return 0;
    }
  }
  const std::int64_t stop = run.stop_after > 0 ? std::min(run.stop_after, s.steps) : s.steps;
  if (stop <= progress.step) {
    fail("--stop-after " + std::to_string(run.stop_after) + " is not after the resumed step " + std::to_string(progress.step));
  }

  // Every input is good: now the outputs.
  std::error_code ec;
  fs::create_directories(run.out, ec);
  if (ec) throw mla::IoError("--out " + run.out.string() + ": cannot create the folder: " + ec.message());
  write_text(run.out / "run.json", to_json(s).dump(2) + "\n");
  Metrics metrics(run.out / "metrics.csv", (run.resume.empty() ? run.out : run.resume) / "metrics.csv", progress.step);

  const mla::ModelConfig& cfg = model.config();
  const std::int64_t B = s.batch, T = s.seq_len, tokens_per_step = B * T * s.accum;
  std::cout << "train_model: " << s.attn << " attention, rope " << mla::to_string(cfg.rope) << ", " << store.count()
            << " parameters, KV cache " << model.cache_bytes_per_token() << " bytes/token\n"
            << "train_model: " << tokens_per_step << " tokens/step (batch " << B << " x seq " << T << " x accum "
            << s.accum << "), " << train_tokens.size() << " training tokens, " << s.threads << " threads, steps "
            << progress.step + 1 << ".." << stop << " of " << s.steps << "\n";

  const mla::CosineSchedule schedule{.peak = s.lr, .warmup = s.warmup, .total = s.steps};
  const auto seed = static_cast<std::uint64_t>(s.seed);
  const auto dropout_seed = mla::counter_hash(seed, 0x64726f706f7574ull, 0, 0);  // "dropout"
  mla::Tape<float> tape;
  auto ids = mla::Tensor<std::int32_t>::empty({B, T}), targets = mla::Tensor<std::int32_t>::empty({B, T});
  const auto loss_seed = mla::Tensor<float>::from(mla::Shape{}, {1.0f / static_cast<float>(s.accum)});
  Progress bar(s.steps, s.log_every);
  double train_seconds = 0;
  const std::int64_t first = progress.step;

  auto save = [&](std::int64_t step) {
    mla::save_training_checkpoint(run.out / "model.safetensors", model, opt, progress);
    plot_loss(run.out);
    bar.note("step " + std::to_string(step) + ": saved " + (run.out / "model.safetensors").string());
  };

  for (std::int64_t step = progress.step; step < stop; ++step) {
    const auto t0 = Clock::now();
    store.zero_grad();
    double loss = 0;
    for (std::int64_t micro = 0; micro < s.accum; ++micro) {
      tape.clear();
      mla::fill_train_batch(train_tokens, seed, step, micro, ids, targets);
      const mla::ForwardOptions<float> fwd{.dropout = static_cast<float>(s.dropout),
                                           .seed = mla::counter_hash(dropout_seed, static_cast<std::uint64_t>(step),
                                                                     static_cast<std::uint64_t>(micro), 0)};
      const auto l = model.loss(tape, ids, targets, fwd);
      loss += static_cast<double>(l.value()[0]) / static_cast<double>(s.accum);
      l.backward(loss_seed);  // seeded with 1/accum: the gradients sum to those of the mean loss
    }
    const double norm = mla::grad_norm(store), lr = schedule(step);
    if (std::isfinite(loss) && std::isfinite(norm)) {
      opt.step(store, lr, s.grad_clip > 0 ? mla::clip_factor(norm, s.grad_clip) : 1.0);
      progress.bad_streak = 0;
    } else {
      ++progress.bad_steps;
      ++progress.bad_streak;
      bar.note("step " + std::to_string(step + 1) + ": loss " + std::to_string(loss) + ", gradient norm " +
               std::to_string(norm) + ": not finite, update skipped (" + std::to_string(progress.bad_steps) +
               " skipped so far)");
    }
    progress.step = step + 1;
    progress.tokens += tokens_per_step;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    train_seconds += seconds;

    double val = std::nan("");
    if (!val_tokens.empty() && (progress.step % s.eval_every == 0 || progress.step == s.steps)) {
      val = evaluate(model, tape, val_tokens, T, B, s.val_windows);
      char line[128];
      std::snprintf(line, sizeof line, "step %lld: val loss %.4f  perplexity %.2f", static_cast<long long>(progress.step),
                    val, std::exp(val));
      bar.note(line);
    }
    metrics.row(progress.step, progress.tokens, loss, val, lr, norm, static_cast<double>(tokens_per_step) / seconds);
    const double mean_step = train_seconds / static_cast<double>(progress.step - first);
    bar.update(progress.step, loss, lr, static_cast<double>(tokens_per_step) / mean_step,
               mean_step * static_cast<double>(stop - progress.step));

    if (progress.bad_streak >= s.max_bad_steps) {
      bar.clear();
      throw mla::Error("stopping: " + std::to_string(progress.bad_streak) +
                       " consecutive steps with a non-finite loss or gradient norm (--max-bad-steps " +
                       std::to_string(s.max_bad_steps) + "); the last checkpoint is the one saved before; try a lower --lr");
    }
    if (progress.step == stop || (s.save_every > 0 && progress.step % s.save_every == 0)) save(progress.step);
  }
  bar.clear();
  const double rate = static_cast<double>(tokens_per_step * (stop - first)) / train_seconds;
  std::cout << "train_model: " << (stop - first) << " steps in " << duration(train_seconds) << ", " << std::llround(rate)
            << " tokens/s";
  if (progress.bad_steps > 0) std::cout << ", " << progress.bad_steps << " steps skipped (non-finite)";
  std::cout << "\n";
  if (stop < s.steps) {
    std::cout << "train_model: stopped after step " << stop << " of " << s.steps
              << "; continue with: train_model --resume " << run.out.string() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a GPT with MHA, GQA, MQA or MLA attention on an llm.c token file."};
  Settings cli;
  std::string out, resume;
  std::int64_t stop_after = 0;
  for (const Field& f : kFields) {
    std::visit([&](auto m) { app.add_option(f.flag, cli.*m, f.help)->capture_default_str(); }, f.member);
  }
  app.add_option("--out", out, "output folder (default with --resume: the resumed folder)");
  app.add_option("--stop-after", stop_after, "stop (and save) after step K, to --resume later");
  app.add_option("--resume", resume, "continue the run saved in this folder");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "train_model: " << e.what() << "\n";
    return 2;
  }

  try {
    if (stop_after < 0) fail("--stop-after must not be negative");
    for (std::string* path : {&cli.train, &cli.val}) {
      if (!path->empty()) *path = fs::absolute(*path).string();
    }
    Run run{.s = cli, .out = out, .resume = resume, .stop_after = stop_after};
    if (!resume.empty()) {
      // The saved run's settings; flags given now may change only what does not alter the run.
      const fs::path saved_json = fs::path(resume) / "run.json";
      if (!fs::exists(fs::path(resume) / "model.safetensors")) fail("--resume " + resume + ": no model.safetensors there");
      if (!fs::exists(saved_json)) fail("--resume " + resume + ": no run.json there");
      const auto j = nlohmann::json::parse(read_text(saved_json), nullptr, false);
      if (j.is_discarded() || !j.is_object()) fail(saved_json.string() + ": not a JSON object");
      run.s = from_json(j, saved_json.string());
      for (const Field& f : kFields) {
        if (app.count(f.flag) == 0) continue;
        if (f.resume_may_change) {
          std::visit([&](auto m) { run.s.*m = cli.*m; }, f.member);
        } else if (std::visit([&](auto m) { return cli.*m != run.s.*m; }, f.member)) {
          fail(std::string(f.flag) + " " + flag_value(cli, f) + " differs from the resumed run's " + flag_value(run.s, f) +
               " (only --steps, --stop-after, --save-every, --threads and --out may change)");
        }
      }
      if (out.empty()) run.out = resume;
    } else {
      if (cli.train.empty()) fail("--train is required");
      if (out.empty()) fail("--out is required");
    }
    resolve(run.s);
    return examples::with_policy(run.s.attn, run.s.rope, [&]<class P>() { return train<P>(run); });
  } catch (const std::exception& e) {
    std::cerr << "train_model: " << e.what() << "\n";
    return 1;
  }
}
