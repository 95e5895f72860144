// prepare_data — from a UTF-8 text corpus to a tokenizer and the token files of docs/design.md §6.
//
//   prepare_data --corpus FILE --out DIR [--vocab-size 10000] [--val-fraction 0.05]
//                [--threads N] [--max-sentences 2000000] [--seed 1] [--verbose]
//
// Splits the corpus by lines: the last --val-fraction of them is the held-out validation tail,
// the rest the training text. Trains a byte-fallback BPE tokenizer (sentencepiece) on the
// training lines, encodes both parts (lines joined by the <0x0A> byte piece, see
// examples/common/text.hpp) and writes
//   DIR/tokenizer.model, DIR/tokenizer.vocab   the sentencepiece model
//   DIR/train.bin, DIR/val.bin                 llm.c token files (uint16 ids)
// Everything is first written to temporary names in DIR and renamed into place only when all
// of it succeeded, so a failed run leaves DIR as it was.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <mla/train/token_file.hpp>

#include "common/cli.hpp"
#include "common/text.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kProgram = "prepare_data";

struct Options {
  fs::path corpus, out;
  std::int64_t vocab_size = 10000;
  double val_fraction = 0.05;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::int64_t max_sentences = 2000000;
  unsigned seed = 1;
  bool verbose = false;
};

/// Feeds the training lines to the sentencepiece trainer (empty lines skipped).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::span<const std::string_view> lines) : lines_(lines) { skip_empty(); }
  bool done() const override { return at_ >= lines_.size(); }
  void Next() override {
    ++at_;
    skip_empty();
  }
  const std::string& value() const override {
    value_.assign(lines_[at_]);
    return value_;
  }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void skip_empty() {
    while (at_ < lines_.size() && lines_[at_].empty()) ++at_;
  }
  std::span<const std::string_view> lines_;
  std::size_t at_ = 0;
  mutable std::string value_;
};

/// Temporary files in the output folder: renamed into place by commit(), removed otherwise.
class Staging {
 public:
  explicit Staging(fs::path dir) : dir_(std::move(dir)), tag_(".prepare_data.tmp" + std::to_string(::getpid())) {}
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() {
    std::error_code ec;
    for (const auto& [tmp, final_path] : files_) fs::remove(tmp, ec);
  }
  /// The temporary path that will become DIR/name.
  fs::path add(const std::string& name) {
    const fs::path tmp = dir_ / (tag_ + "." + name);
    files_.emplace_back(tmp, dir_ / name);
    return tmp;
  }
  void commit() {
    for (const auto& [tmp, final_path] : files_) {
      std::error_code ec;
      fs::rename(tmp, final_path, ec);
      if (ec) throw std::runtime_error(final_path.string() + ": cannot rename into place: " + ec.message());
    }
    files_.clear();
  }

 private:
  fs::path dir_;
  std::string tag_;
  std::vector<std::pair<fs::path, fs::path>> files_;
};

/// Creates `dir` if needed (true when it did) and proves that a file can be written in it.
bool require_writable_folder(const fs::path& dir) {
  std::error_code ec;
  const bool created = fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir.string() + ": cannot create the output folder: " + ec.message());
  if (!fs::is_directory(dir, ec)) throw std::runtime_error(dir.string() + ": not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw std::runtime_error(dir.string() + ": cannot write in the output folder: " + std::strerror(errno));
  }
  return created;
}

/// Trains the tokenizer on `lines` into `prefix`.model / `prefix`.vocab.
void train_tokenizer(const Options& opt, std::span<const std::string_view> lines, const fs::path& prefix) {
  const std::unordered_map<std::string, std::string> args = {
      {"model_prefix", prefix.string()},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      {"input_sentence_size", std::to_string(opt.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", "16384"},
      {"num_threads", std::to_string(opt.threads)},
      {"minloglevel", opt.verbose ? "0" : "2"},
  };
  sentencepiece::SetRandomGeneratorSeed(opt.seed);
  LineIterator it(lines);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (status.ok()) return;
  const std::string what = status.message();
  const std::string v = std::to_string(opt.vocab_size);
  std::smatch m;
  if (std::regex_search(what, m, std::regex(R"(Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+))"))) {
    throw std::runtime_error("the corpus is too small for --vocab-size " + v + ": sentencepiece can build at most " +
                             m[1].str() + " pieces from it; use --vocab-size " + m[1].str() + " or less");
  }
  if (std::regex_search(what, m, std::regex(R"(smaller than required_chars\. (\d+) vs (\d+))"))) {
    throw std::runtime_error("--vocab-size " + v + " is too small: the corpus's characters, the 256 byte pieces and " +
                             "the special pieces need " + m[2].str() + "; use --vocab-size " + m[2].str() + " or more");
  }
  throw std::runtime_error("tokenizer training failed: " + what);
}

/// Token ids of `lines`, each line followed by the newline piece.
std::vector<std::uint16_t> encode_lines(const examples::Tokenizer& tok, std::span<const std::string_view> lines) {
  std::vector<std::uint16_t> out;
  std::vector<int> ids;
  for (const std::string_view line : lines) {
    tok.encode_line(line, ids);
    for (const int id : ids) out.push_back(static_cast<std::uint16_t>(id));
    out.push_back(static_cast<std::uint16_t>(tok.newline_id()));
  }
  return out;
}

void write_outputs(const Options& opt, std::span<const std::string_view> train_lines,
                   std::span<const std::string_view> val_lines, std::size_t corpus_bytes);

int run(const Options& opt) {
  const std::string text = examples::read_text_file(opt.corpus);
  if (text.empty()) throw std::runtime_error(opt.corpus.string() + ": the corpus is empty");
  if (const std::string problem = examples::utf8_problem(text); !problem.empty()) {
    throw std::runtime_error(opt.corpus.string() + ": " + problem);
  }
  const auto lines = examples::split_lines(text);
  const auto n_lines = static_cast<std::int64_t>(lines.size());
  if (n_lines < 2) {
    throw std::runtime_error(opt.corpus.string() + ": has " + std::to_string(n_lines) +
                             " line; needs at least 2 to hold out a validation tail");
  }
  const std::int64_t n_val = std::min<std::int64_t>(
      n_lines - 1, std::max<std::int64_t>(1, std::llround(opt.val_fraction * static_cast<double>(n_lines))));
  const std::span<const std::string_view> train_lines(lines.data(), static_cast<std::size_t>(n_lines - n_val));
  const std::span<const std::string_view> val_lines(lines.data() + (n_lines - n_val), static_cast<std::size_t>(n_val));
  std::cout << "corpus: " << opt.corpus.string() << ", " << text.size() << " bytes, " << n_lines << " lines ("
            << train_lines.size() << " train, " << val_lines.size() << " validation)\n";

  const bool created = require_writable_folder(opt.out);
  try {
    write_outputs(opt, train_lines, val_lines, text.size());
  } catch (...) {
    std::error_code ec;
    if (created) fs::remove(opt.out, ec);  // only if still empty
    throw;
  }
  return 0;
}

/// Trains the tokenizer, encodes both parts, and moves all four files into place together.
void write_outputs(const Options& opt, std::span<const std::string_view> train_lines,
                   std::span<const std::string_view> val_lines, std::size_t corpus_bytes) {
  using clock = std::chrono::steady_clock;
  Staging staging(opt.out);
  const fs::path model = staging.add("tokenizer.model");
  const fs::path vocab = staging.add("tokenizer.vocab");
  const fs::path train_bin = staging.add("train.bin");
  const fs::path val_bin = staging.add("val.bin");
  const fs::path prefix = model.parent_path() / model.stem();  // sentencepiece appends .model/.vocab
  if (prefix.string() + ".vocab" != vocab.string()) throw std::logic_error("staging names");

  const auto t0 = clock::now();
  train_tokenizer(opt, train_lines, prefix);
  const double train_s = std::chrono::duration<double>(clock::now() - t0).count();
  const examples::Tokenizer tok(model);
  std::cout << "tokenizer: BPE, " << tok.size() << " pieces, trained in " << train_s << " s\n";

  const auto t1 = clock::now();
  const auto train_tokens = encode_lines(tok, train_lines);
  const auto val_tokens = encode_lines(tok, val_lines);
  const double encode_s = std::chrono::duration<double>(clock::now() - t1).count();
  mla::write_tokens(train_bin, train_tokens);
  mla::write_tokens(val_bin, val_tokens);
  staging.commit();

  std::cout << "encoded in " << encode_s << " s: " << train_tokens.size() << " train tokens, " << val_tokens.size()
            << " validation tokens (" << static_cast<double>(corpus_bytes) /
                                             static_cast<double>(train_tokens.size() + val_tokens.size())
            << " bytes per token)\n";
  std::cout << "wrote " << (opt.out / "tokenizer.model").string() << ", " << (opt.out / "tokenizer.vocab").string()
            << ", " << (opt.out / "train.bin").string() << ", " << (opt.out / "val.bin").string() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"Trains a BPE tokenizer on a UTF-8 corpus and writes train.bin / val.bin token files."};
  app.add_option("--corpus", opt.corpus, "UTF-8 text file")->required();
  app.add_option("--out", opt.out, "output folder (created if missing)")->required();
  app.add_option("--vocab-size", opt.vocab_size, "tokenizer vocabulary size")
      ->capture_default_str()->check(CLI::Range(std::int64_t{260}, std::int64_t{65536}));
  app.add_option("--val-fraction", opt.val_fraction, "fraction of the lines held out at the end for validation")
      ->capture_default_str()->check(CLI::Range(0.0001, 0.5));
  app.add_option("--threads", opt.threads, "threads for tokenizer training")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--max-sentences", opt.max_sentences, "lines sampled (shuffled) for tokenizer training")
      ->capture_default_str()->check(CLI::Range(std::int64_t{1000}, std::int64_t{1} << 31));
  app.add_option("--seed", opt.seed, "seed of the tokenizer trainer's sampling")->capture_default_str();
  app.add_flag("--verbose", opt.verbose, "show sentencepiece's training log");
  return examples::run_main(kProgram, app, argc, argv, [&] { return run(opt); });
}
