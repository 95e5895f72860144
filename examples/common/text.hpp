// examples/common/text.hpp — text in and out of the programs: UTF-8 checks, the tokenizer, and
// the small helpers every program's main shares.
//
// Newlines: sentencepiece treats a newline as a space, so text is encoded line by line and
// the lines are joined by the byte-fallback piece <0x0A> (every tokenizer prepare_data trains
// has it). decode_text splits the ids at that piece and decodes each line on its own, so
// encode/decode round-trip multi-line text the way the token files hold it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sentencepiece_processor.h>

namespace examples {

/// A file's whole contents; throws naming the file when it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw std::runtime_error(path.string() + ": " +
                             (std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(path.string() + ": read failed");
  return text;
}

/// The first problem that makes `text` unusable as a UTF-8 text corpus ("" when none): a NUL
/// byte (a binary file) or an invalid UTF-8 sequence, with its line and byte offset.
inline std::string utf8_problem(std::string_view text) {
  std::int64_t line = 1;
  auto at = [&](std::size_t i) { return " at line " + std::to_string(line) + " (byte " + std::to_string(i) + ")"; };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == 0) return "contains a NUL byte" + at(i) + ": it looks like a binary file, not text";
    if (c == '\n') ++line;
    if (c < 0x80) { ++i; continue; }
    // Lead byte: length and the smallest code point that needs that length (no overlongs).
    const std::size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (len == 0 || i + len > text.size()) return "is not valid UTF-8" + at(i);
    std::uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return "is not valid UTF-8" + at(i);
      cp = (cp << 6) | (cc & 0x3F);
    }
    const std::uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return "is not valid UTF-8" + at(i);
    i += len;
  }
  return "";
}

/// `text` split at '\n' (a trailing '\r' removed from each line); a final newline ends the
/// last line rather than starting an empty one.
inline std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

/// A trained sentencepiece model, with the line-joining convention above.
class Tokenizer {
 public:
  explicit Tokenizer(const std::filesystem::path& model) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(model, ec)) {
      throw std::runtime_error(model.string() + ": no such tokenizer model file");
    }
    const auto status = sp_.Load(model.string());
    if (!status.ok()) throw std::runtime_error(model.string() + ": cannot load it as a sentencepiece model");
    newline_ = sp_.PieceToId("<0x0A>");
    if (newline_ == sp_.unk_id()) {
      throw std::runtime_error(model.string() + ": the tokenizer has no <0x0A> byte piece (train it with byte_fallback)");
    }
  }

  [[nodiscard]] std::int64_t size() const { return sp_.GetPieceSize(); }
  [[nodiscard]] int newline_id() const { return newline_; }

  /// Ids of one line (no newline in it).
  void encode_line(std::string_view line, std::vector<int>& out) const {
    out.clear();
    const auto status = sp_.Encode(line, &out);
    if (!status.ok()) throw std::runtime_error("tokenizer: cannot encode: " + status.ToString());
  }

  /// Ids of multi-line text: the lines' ids joined by the newline id.
  [[nodiscard]] std::vector<int> encode(std::string_view text) const {
    std::vector<int> ids, line_ids;
    const auto lines = split_lines(text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) ids.push_back(newline_);
      encode_line(lines[i], line_ids);
      ids.insert(ids.end(), line_ids.begin(), line_ids.end());
    }
    if (!text.empty() && text.back() == '\n') ids.push_back(newline_);
    return ids;
  }

  /// Text of `ids`, decoding each line separately (see the header comment).
  [[nodiscard]] std::string decode(std::span<const int> ids) const {
    std::string text, piece;
    std::vector<int> line;
    auto flush = [&] {
      piece.clear();
      const auto status = sp_.Decode(line, &piece);
      if (!status.ok()) throw std::runtime_error("tokenizer: cannot decode: " + status.ToString());
      text += piece;
      line.clear();
    };
    for (const int id : ids) {
      if (id == newline_) {
        flush();
        text += '\n';
      } else {
        line.push_back(id);
      }
    }
    flush();
    return text;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  int newline_ = -1;
};

}  // namespace examples
