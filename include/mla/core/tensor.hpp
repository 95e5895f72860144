// mla/core/tensor.hpp — a dense, row-major, contiguous tensor of rank 0 to 4.
//
// A Tensor is a handle: copies share storage (as a torch.Tensor or a shared_ptr does). Storage
// is 64-byte aligned and owned by the device's allocator or by an activation arena. A view
// (`reshape`, `split_heads`, `merge_heads`, `slice`) shares storage and never copies; a
// layout change that cannot be a view (a permute) is an op with its own kernel.
#pragma once

#include <algorithm>
#include <cassert>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mla/backend/devices.hpp"
#include "mla/core/arena.hpp"
#include "mla/core/device.hpp"
#include "mla/core/error.hpp"
#include "mla/core/shape.hpp"

namespace mla {

/// Element types a tensor may hold: the floating types of the math, int32 for token ids, and
/// the stored forms of quantized caches: int8 values and bfloat16 bit patterns (uint16).
template <class T>
concept TensorScalar = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int32_t> ||
                       std::same_as<T, std::int8_t> || std::same_as<T, std::uint16_t>;

template <TensorScalar T, Device D = Cpu>
class Tensor {
 public:
  using Scalar = T;
  using DeviceType = D;

  /// An undefined tensor (no storage); `defined()` is false.
  Tensor() = default;

  /// Wraps existing storage; `data` must hold `shape.numel()` elements.
  Tensor(Shape shape, std::shared_ptr<T> data) : shape_(shape), data_(std::move(data)) {}

  /// Uninitialized storage from the device allocator.
  static Tensor empty(Shape shape) { return over(shape, D::allocate(bytes_of(shape))); }
  /// Uninitialized storage from an activation arena.
  static Tensor empty(Shape shape, Arena<D>& arena) {
    return over(shape, arena.allocate(bytes_of(shape)));
  }
  /// Zero-filled storage.
  static Tensor zeros(Shape shape) {
    Tensor t = empty(shape);
    D::fill_zero(t.data(), t.bytes());
    return t;
  }
  /// A host-side copy of `values` (row-major), which must hold exactly `shape.numel()` values.
  static Tensor from(Shape shape, std::span<const T> values) {
    if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
      throw ShapeError("tensor: " + std::to_string(values.size()) + " values for shape " +
                       shape.str());
    }
    Tensor t = empty(shape);
    D::copy_from_host(t.data(), values.data(), t.bytes());
    return t;
  }
  static Tensor from(Shape shape, std::initializer_list<T> values) {
    return from(shape, std::span<const T>(values.begin(), values.size()));
  }

  [[nodiscard]] bool defined() const { return data_ != nullptr; }
  explicit operator bool() const { return defined(); }
  [[nodiscard]] const Shape& shape() const { return shape_; }
  [[nodiscard]] int rank() const { return shape_.rank(); }
  [[nodiscard]] std::int64_t dim(int axis) const { return shape_[axis]; }
  [[nodiscard]] std::int64_t numel() const { return shape_.numel(); }
  [[nodiscard]] std::size_t bytes() const { return bytes_of(shape_); }

  [[nodiscard]] T* data() const { return data_.get(); }
  /// The storage handle, for views and arenas.
  [[nodiscard]] const std::shared_ptr<T>& storage() const { return data_; }

  /// The same elements under another shape with the same element count. No copy.
  [[nodiscard]] Tensor reshape(Shape shape) const {
    if (shape.numel() != numel()) {
      throw ShapeError("reshape: cannot view " + shape_.str() + " as " + shape.str());
    }
    return Tensor(shape, data_);
  }
  /// [..., H*Dh] viewed as [..., H, Dh]. No copy.
  [[nodiscard]] Tensor split_heads(std::int64_t heads) const {
    const std::int64_t c = shape_.cols();
    if (rank() == 0 || heads <= 0 || c % heads != 0) {
      throw ShapeError("split_heads: last axis of " + shape_.str() + " is not divisible into " +
                       std::to_string(heads) + " heads");
    }
    return reshape(shape_.with_cols(heads).appended(c / heads));
  }
  /// [..., H, Dh] viewed as [..., H*Dh]. No copy.
  [[nodiscard]] Tensor merge_heads() const {
    if (rank() < 2) throw ShapeError("merge_heads: needs rank >= 2, got " + shape_.str());
    Shape s;
    for (int i = 0; i < rank() - 2; ++i) s = s.appended(shape_[i]);
    return reshape(s.appended(shape_[-2] * shape_[-1]));
  }
  /// Rows [begin, end) of axis 0, as a view.
  [[nodiscard]] Tensor slice(std::int64_t begin, std::int64_t end) const {
    if (rank() == 0 || begin < 0 || end < begin || end > shape_[0]) {
      throw ShapeError("slice: rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                       ") out of range for " + shape_.str());
    }
    Shape s = shape_;
    s[0] = end - begin;
    const std::int64_t row = rank() == 0 ? 1 : numel() / std::max<std::int64_t>(shape_[0], 1);
    return Tensor(s, std::shared_ptr<T>(data_, data_.get() + begin * row));
  }

  /// A new tensor with a copy of the elements.
  [[nodiscard]] Tensor clone() const {
    Tensor t = empty(shape_);
    D::copy(t.data(), data(), bytes());
    return t;
  }
  /// Copies the elements of `src` (same element count) into this tensor's storage.
  void copy_from(const Tensor& src) const {
    if (src.numel() != numel()) {
      throw ShapeError("copy_from: " + src.shape_.str() + " into " + shape_.str());
    }
    D::copy(data(), src.data(), bytes());
  }
  void fill_zero() const { D::fill_zero(data(), bytes()); }

  /// The elements, copied to the host, row-major.
  [[nodiscard]] std::vector<T> to_vector() const {
    std::vector<T> v(static_cast<std::size_t>(numel()));
    D::copy_to_host(v.data(), data(), bytes());
    return v;
  }

  /// Element access, host tensors only. Indices must be in range (an assert checks each one in
  /// builds without NDEBUG).
  template <std::integral... I>
    requires(sizeof...(I) <= kMaxRank && std::same_as<D, Cpu>)
  [[nodiscard]] T& at(I... idx) const {
    const std::int64_t ids[] = {static_cast<std::int64_t>(idx)..., 0};
    std::int64_t flat = 0;
    for (int i = 0; i < static_cast<int>(sizeof...(I)); ++i) {
      assert(ids[i] >= 0 && ids[i] < shape_[i] && "Tensor::at: index out of range");
      flat = flat * shape_[i] + ids[i];
    }
    return data_.get()[flat];
  }
  [[nodiscard]] T& operator[](std::int64_t i) const
    requires std::same_as<D, Cpu>
  {
    return data_.get()[i];
  }

 private:
  static Tensor over(Shape shape, const std::shared_ptr<std::byte>& raw) {
    return Tensor(shape, std::shared_ptr<T>(raw, reinterpret_cast<T*>(raw.get())));
  }
  static std::size_t bytes_of(const Shape& s) {
    return static_cast<std::size_t>(s.numel()) * sizeof(T);
  }

  Shape shape_;
  std::shared_ptr<T> data_;
};

}  // namespace mla
