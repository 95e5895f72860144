// examples/common/train_run.hpp — train_model's run, on either device: the training loop, the
// validation, metrics.csv, the progress line and the checkpoints (train_model.cpp describes
// them). train_model.cpp instantiates it for mla::Cpu; examples/cuda/train_model_cuda.cu for
// mla::Cuda, behind train_on_cuda.
//
// Under mpirun (Job, common/job.hpp) the N ranks train one model data-parallel, on the CPU:
// micro-batch m of a step's N x accum goes to rank m mod N, so rank r runs micro-batches
// r, N + r, 2N + r, ... of the single-process data order; the ranks' gradients (each summed
// over its own micro-batches by mla::GradientSum) and losses are summed in rank order, and every
// rank takes the same clipped AdamW step. With accum 1 that is exactly the sum one process with
// --accum N makes, so the weights are the same bits; with accum > 1 the sum's order differs
// (float rounding). Rank 0 alone prints, evaluates and writes.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <mla/mla.hpp>
#include <mla/train/adamw.hpp>
#include <mla/train/batches.hpp>
#include <mla/train/grad_sum.hpp>
#include <mla/train/schedule.hpp>
#include <mla/train/token_file.hpp>
#include <mla/train/train_state.hpp>

#include "common/device.hpp"
#include "common/job.hpp"
#include "common/train_settings.hpp"

namespace examples::training {

using Clock = std::chrono::steady_clock;

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
inline void plot_loss(const fs::path& dir) {
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

inline std::string duration(double seconds) {
  const auto s = static_cast<long long>(seconds);
  char out[32];
  if (s >= 3600) std::snprintf(out, sizeof out, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else std::snprintf(out, sizeof out, "%lldm%02llds", s / 60, s % 60);
  return out;
}

/// A progress bar redrawn on a terminal; plain lines every --log-every steps otherwise.
class Progress {
 public:
  /// shown false: prints nothing (the ranks of an MPI job but the first).
  Progress(std::int64_t total, std::int64_t log_every, bool shown = true)
      : total_(total), log_every_(log_every), shown_(shown), tty_(::isatty(2) != 0) {}

  void update(std::int64_t step, double loss, double lr, double rate, double eta) {
    if (!shown_) return;
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
    if (!shown_) return;
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
  bool shown_, tty_, drawn_ = false;
};

/// Mean loss over the first `max_windows` §6 windows of `tokens`, in batches of B, no grad.
template <class P, mla::Device D>
double evaluate(const mla::GPT<P, float, D>& model, mla::Tape<float, D>& tape, std::span<const std::uint16_t> tokens,
                std::int64_t T, std::int64_t B, std::int64_t max_windows) {
  mla::NoGradGuard no_grad;
  const std::int64_t windows = std::min(max_windows, mla::eval_windows(static_cast<std::int64_t>(tokens.size()), T));
  double sum = 0;
  for (std::int64_t first = 0; first < windows; first += B) {
    const std::int64_t rows = std::min(B, windows - first);
    WindowBatch<D> batch(rows, T);
    mla::fill_eval_batch(tokens, first, T, batch.host_ids, batch.host_targets);
    batch.upload();
    tape.clear();
    const float mean = model.loss(tape, batch.ids, batch.targets).value().to_vector()[0];
    sum += static_cast<double>(mean) * static_cast<double>(rows);
  }
  tape.clear();
  return sum / static_cast<double>(windows);
}

inline std::vector<std::uint16_t> load_tokens(const char* flag, const std::string& path, const Settings& s) {
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

/// FNV-1a over a token stream: what the ranks of a job compare to know they read the same data.
inline std::uint64_t fingerprint(std::span<const std::uint16_t> tokens) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::uint16_t t : tokens) {
    h = (h ^ (t & 0xffu)) * 0x100000001b3ull;
    h = (h ^ (t >> 8)) * 0x100000001b3ull;
  }
  return h;
}

/// Collective: every rank must run the same settings (but --threads) on the same token files;
/// names the first rank and setting that differ from rank 0's. The same verdict on every rank.
inline void check_same_run(Job& job, const Settings& s, std::span<const std::uint16_t> train_tokens,
                           std::span<const std::uint16_t> val_tokens) {
  nlohmann::ordered_json mine = to_json(s);
  mine.erase("threads");
  mine["tokens of --train"] = std::to_string(fingerprint(train_tokens));
  mine["tokens of --val"] = std::to_string(fingerprint(val_tokens));
  const auto all = job.all_gather(mine.dump());
  const auto first = nlohmann::ordered_json::parse(all[0]);
  for (int r = 1; r < job.size(); ++r) {
    const auto other = nlohmann::ordered_json::parse(all[static_cast<std::size_t>(r)]);
    for (const auto& [key, value] : first.items()) {
      if (other[key] == value) continue;
      const std::string what = key.starts_with("tokens of")
                                   ? "the " + key + " differ from rank 0's (every rank needs the same files)"
                                   : "--" + key + " " + other[key].dump() + " differs from rank 0's " + value.dump() +
                                         " (every rank runs the same settings; only --threads may differ)";
      throw Stopped(1, job.who(r) + what);
    }
  }
}

/// The whole run on device D: model, optimizer and activations there; the token windows built
/// on the host and copied each step; the loss and gradient norm back as host scalars. Every rank
/// of `job` runs it (see the file comment).
template <class P, mla::Device D>
int train(const Run& run, Job& job) {
  const Settings& s = run.s;
  const bool leader = job.leader();
  const std::int64_t ranks = job.size(), rank = job.rank();
  if (ranks > 1 && !std::is_same_v<D, mla::Cpu>) {
    // The GPU backend's all-reduce would be NCCL's ncclAllReduce over store.grads(), where
    // job.sum_in_rank_order is called below.
    throw Stopped(1, "data-parallel training runs on the CPU backend only (--device cpu)");
  }

  // Every rank reads and checks its inputs; a failure on any rank stops them all, before
  // anything is written.
  std::vector<std::uint16_t> train_tokens, val_tokens;
  std::optional<mla::GPT<P, float, D>> built;
  std::optional<mla::AdamW<float, D>> built_opt;
  mla::TrainProgress progress{.seed = s.seed};
  std::int64_t stop = s.steps;
  job.agree_on([&] {
    train_tokens = load_tokens("--train", s.train, s);
    if (!s.val.empty()) val_tokens = load_tokens("--val", s.val, s);
    mla::set_num_threads(static_cast<int>(s.threads));
    // A run --init-from has its checkpoint's config (the resumed checkpoint's on resume: the same).
    const fs::path init = run.resume.empty() ? fs::path(s.init_from) : run.resume / "model.safetensors";
    std::optional<mla::SafetensorsFile> init_file;  // the whole file: released once it has been read
    if (!s.init_from.empty()) init_file = mla::read_safetensors(init);
    const mla::ModelConfig config = init_file ? mla::checkpoint_config(*init_file, init.string()) : model_config(s);
    built.emplace(config, static_cast<std::uint64_t>(s.seed));
    if (init_file && run.resume.empty()) {
      mla::load_parameters(*init_file, init.string(), built->config(), built->parameters());
    }
    init_file.reset();
    built_opt.emplace(built->parameters(), mla::AdamWOptions{.weight_decay = s.weight_decay});
    if (!run.resume.empty()) {
      progress = mla::load_training_checkpoint(run.resume / "model.safetensors", *built, *built_opt);
      if (progress.seed != s.seed) fail(run.resume.string() + ": train.seed differs from run.json's seed");
    }
    stop = run.stop_after > 0 ? std::min(run.stop_after, s.steps) : s.steps;
    if (progress.step < s.steps && stop <= progress.step) {
      fail("--stop-after " + std::to_string(run.stop_after) + " is not after the resumed step " +
           std::to_string(progress.step));
    }
  });
  auto& model = *built;
  auto& opt = *built_opt;
  auto& store = model.parameters();
  if (ranks > 1) {
    check_same_run(job, s, train_tokens, val_tokens);
    // Rank 0's weights, optimizer and progress: every rank starts the same, whatever copy of a
    // checkpoint it read.
    if constexpr (std::is_same_v<D, mla::Cpu>) {
      job.broadcast(store.values().data(), store.values().numel());
      job.broadcast(opt.first_moment().data(), opt.first_moment().numel());
      job.broadcast(opt.second_moment().data(), opt.second_moment().numel());
      std::int64_t state[] = {opt.steps(), progress.step, progress.tokens, progress.bad_steps, progress.bad_streak};
      job.broadcast(state, std::ssize(state));
      opt.set_steps(state[0]);
      progress = {.step = state[1], .seed = s.seed, .tokens = state[2], .bad_steps = state[3], .bad_streak = state[4]};
    }
  }
  if (progress.step >= s.steps) {
    if (leader) {
      std::cout << "train_model: the run in " << run.resume.string() << " has done " << progress.step << " of "
                << s.steps << " steps: nothing to do (raise --steps to train longer)\n";
    }
    return 0;
  }

  // Every input is good: now the outputs, rank 0's.
  std::optional<Metrics> metrics;
  if (leader) {
    std::error_code ec;
    fs::create_directories(run.out, ec);
    if (ec) throw mla::IoError("--out " + run.out.string() + ": cannot create the folder: " + ec.message());
    write_text(run.out / "run.json", to_json(s).dump(2) + "\n");
    metrics.emplace(run.out / "metrics.csv", (run.resume.empty() ? run.out : run.resume) / "metrics.csv", progress.step);
  }

  const mla::ModelConfig& cfg = model.config();
  const std::int64_t B = s.batch, T = s.seq_len, micros = s.accum * ranks, tokens_per_step = B * T * micros;
  if (leader) {
    std::cout << "train_model: " << s.attn << " attention, rope " << mla::to_string(cfg.rope) << ", " << store.count()
              << " parameters, KV cache " << model.cache_bytes_per_token() << " bytes/token\n"
              << "train_model: " << tokens_per_step << " tokens/step (batch " << B << " x seq " << T << " x accum "
              << s.accum;
    if (ranks > 1) std::cout << " x " << ranks << " processes";
    std::cout << "), " << train_tokens.size() << " training tokens, " << s.threads << " threads"
              << (ranks > 1 ? " on rank 0" : "") << ", steps " << progress.step + 1 << ".." << stop << " of "
              << s.steps << "\n";
  }

  const mla::CosineSchedule schedule{.peak = s.lr, .warmup = s.warmup, .total = s.steps};
  const auto seed = static_cast<std::uint64_t>(s.seed);
  const auto dropout_seed = mla::counter_hash(seed, 0x64726f706f7574ull, 0, 0);  // "dropout"
  mla::Tape<float, D> tape;
  WindowBatch<D> batch(B, T);
  mla::GradientSum<float, D> gradient(store);
  const auto loss_seed = mla::Tensor<float, D>::from(mla::Shape{}, {1.0f / static_cast<float>(micros)});
  Progress bar(s.steps, s.log_every, leader);
  double train_seconds = 0;
  const std::int64_t first = progress.step;

  auto save = [&](std::int64_t step) {
    mla::save_training_checkpoint(run.out / "model.safetensors", model, opt, progress);
    plot_loss(run.out);
    bar.note("step " + std::to_string(step) + ": saved " + (run.out / "model.safetensors").string());
  };

  for (std::int64_t step = progress.step; step < stop; ++step) {
    const auto t0 = Clock::now();
    double loss = 0;
    for (std::int64_t k = 0; k < s.accum; ++k) {
      const std::int64_t micro = k * ranks + rank;  // of the step's `micros`, in the single-process order
      tape.clear();
      gradient.next();
      mla::fill_train_batch(train_tokens, seed, step, micro, batch.host_ids, batch.host_targets);
      batch.upload();
      const mla::ForwardOptions<float> fwd{.dropout = static_cast<float>(s.dropout),
                                           .seed = mla::counter_hash(dropout_seed, static_cast<std::uint64_t>(step),
                                                                     static_cast<std::uint64_t>(micro), 0)};
      const auto l = model.loss(tape, batch.ids, batch.targets, fwd);
      loss += static_cast<double>(l.value().to_vector()[0]) / static_cast<double>(micros);
      l.backward(loss_seed);  // seeded with 1/micros: the gradients sum to those of the mean loss
    }
    gradient.finish();
    if (ranks > 1) {
      if constexpr (std::is_same_v<D, mla::Cpu>) job.sum_in_rank_order(store.grads().data(), store.grads().numel());
      loss = job.sum_in_rank_order(loss);
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
    if (leader && !val_tokens.empty() && (progress.step % s.eval_every == 0 || progress.step == s.steps)) {
      val = evaluate(model, tape, val_tokens, T, B, s.val_windows);
      char line[128];
      std::snprintf(line, sizeof line, "step %lld: val loss %.4f  perplexity %.2f", static_cast<long long>(progress.step),
                    val, std::exp(val));
      bar.note(line);
    }
    if (metrics) metrics->row(progress.step, progress.tokens, loss, val, lr, norm, static_cast<double>(tokens_per_step) / seconds);
    const double mean_step = train_seconds / static_cast<double>(progress.step - first);
    bar.update(progress.step, loss, lr, static_cast<double>(tokens_per_step) / mean_step,
               mean_step * static_cast<double>(stop - progress.step));

    if (progress.bad_streak >= s.max_bad_steps) {  // the same on every rank
      bar.clear();
      throw Stopped(1, "stopping: " + std::to_string(progress.bad_streak) +
                           " consecutive steps with a non-finite loss or gradient norm (--max-bad-steps " +
                           std::to_string(s.max_bad_steps) +
                           "); the last checkpoint is the one saved before; try a lower --lr");
    }
    if (leader && (progress.step == stop || (s.save_every > 0 && progress.step % s.save_every == 0))) save(progress.step);
  }
  bar.clear();
  if (!leader) return 0;
  const double rate = static_cast<double>(tokens_per_step * (stop - first)) / train_seconds;
  std::cout << "train_model: " << (stop - first) << " steps in " << duration(train_seconds) << ", " << std::llround(rate)
            << " tokens/s";
  if (progress.bad_steps > 0) std::cout << ", " << progress.bad_steps << " steps skipped (non-finite)";
  std::cout << "\n";
  if (stop < s.steps) {
    std::cout << "train_model: stopped after step " << stop << " of " << s.steps
              << "; continue with: " << (ranks > 1 ? "mpirun -np " + std::to_string(ranks) + " " : "")
              << "train_model --resume " << run.out.string() << "\n";
  }
  return 0;
}

/// train<P, mla::Cuda> for the run's policy (examples/cuda/train_model_cuda.cu; without the CUDA
/// backend, examples/common/no_cuda.cpp).
int train_on_cuda(const Run& run, Job& job);

}  // namespace examples::training
