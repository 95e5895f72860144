// mla/core/shape.hpp — the shape of a row-major tensor of rank 0 to 4.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "mla/core/error.hpp"

namespace mla {

/// Largest tensor rank the library uses: [B, H, T, Dh] is the deepest shape in the model.
inline constexpr int kMaxRank = 4;

/// Sizes of a row-major tensor; rank 0 is a scalar (one element).
class Shape {
 public:
  constexpr Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
      throw ShapeError("shape: rank " + std::to_string(dims.size()) + " exceeds the maximum of " +
                       std::to_string(kMaxRank));
    }
    for (std::int64_t d : dims) {
      if (d < 0) throw ShapeError("shape: negative dimension " + std::to_string(d));
      dims_[rank_++] = d;
    }
  }

  [[nodiscard]] constexpr int rank() const { return rank_; }
  [[nodiscard]] constexpr std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  /// Size of axis `i`; a negative `i` counts from the end (-1 is the last axis).
  [[nodiscard]] std::int64_t operator[](int i) const { return dims_[index(i)]; }
  [[nodiscard]] std::int64_t& operator[](int i) { return dims_[index(i)]; }
  /// Size of the last axis (1 for a scalar).
  [[nodiscard]] constexpr std::int64_t cols() const { return rank_ == 0 ? 1 : dims_[rank_ - 1]; }
  /// Product of every axis but the last: the number of rows when viewed as a matrix (also when
  /// the last axis is empty, as an MLA head's nope part with qk_nope_dim 0).
  [[nodiscard]] constexpr std::int64_t rows() const {
    std::int64_t n = 1;
    for (int i = 0; i + 1 < rank_; ++i) n *= dims_[i];
    return n;
  }

  /// The same shape with the last axis set to `n`.
  [[nodiscard]] Shape with_cols(std::int64_t n) const {
    Shape s = *this;
    if (s.rank_ == 0) s.rank_ = 1;
    s.dims_[s.rank_ - 1] = n;
    return s;
  }
  /// Every axis but the last (a scalar for rank 0 or 1): e.g. the targets' shape of a loss
  /// over logits of this shape.
  [[nodiscard]] Shape without_cols() const {
    Shape s = *this;
    if (s.rank_ > 0) s.dims_[--s.rank_] = 0;
    return s;
  }
  /// The shape with one more trailing axis of size `n`.
  [[nodiscard]] Shape appended(std::int64_t n) const {
    if (rank_ == kMaxRank) throw ShapeError("shape: cannot append an axis to " + str());
    Shape s = *this;
    s.dims_[s.rank_++] = n;
    return s;
  }

  friend constexpr bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }

  /// "[2, 3, 4]"; "[]" for a scalar.
  [[nodiscard]] std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[i]);
    }
    return s + "]";
  }

 private:
  [[nodiscard]] int index(int i) const {
    int j = i < 0 ? i + rank_ : i;
    if (j < 0 || j >= rank_) {
      throw ShapeError("shape: axis " + std::to_string(i) + " out of range for " + str());
    }
    return j;
  }

  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace mla
