// mla/attention/cache.hpp — what a KV cache holds, how it stores it, and how a cached step attends.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "mla/backend/kernels.hpp"
#include "mla/backend/types.hpp"
#include "mla/core/error.hpp"
#include "mla/core/tensor.hpp"

namespace mla {

/// What an attention layer caches per token.
///   Full    keys and values per kv head (MHA: H heads, GQA: G, MQA: 1; MLA: decompressed K
///           and V of every head, the reference experiments' "uncompressed" MLA)
///   Latent  MLA only: the normalized latent c_kv and the rotated shared key k_pe,
///           kv_rank + qk_rope_dim floats per token per layer
enum class CacheMode { Full, Latent };

/// How an MLA layer attends over a latent cache.
///   Absorbed      W_UK folded into the query, W_UV applied after: attends over the latents
///                 as cached, never decompressing them
///   Materialized  decompresses K and V of every cached token, then attends (as the
///                 reference experiments' MLA decodes)
///   Auto          whichever costs fewer operations for this step (Absorbed when decoding)
enum class DecodePath { Auto, Absorbed, Materialized };

constexpr const char* to_string(CacheMode m) { return m == CacheMode::Full ? "full" : "latent"; }

/// "f32", "bf16" or "int8" as a CacheDtype (mla/backend/types.hpp says how each stores values).
inline CacheDtype cache_dtype_from_string(const std::string& name) {
  if (name == "f32") return CacheDtype::F32;
  if (name == "bf16") return CacheDtype::BF16;
  if (name == "int8") return CacheDtype::Int8;
  throw ArgumentError("cache dtype '" + name + "': expected f32, bf16 or int8");
}

/// Cached rows of W values, [rows..., W] with the batch row first, in one CacheDtype: `wide`
/// (the model's type) for F32, `bf16` for BF16, `int8` and its `scales` [rows..., groups(W)]
/// for Int8. Only the dtype's arrays are allocated.
template <class T, Device D>
struct CachePlane {
  CacheDtype dtype = CacheDtype::F32;
  Tensor<T, D> wide;
  Tensor<std::uint16_t, D> bf16;
  Tensor<std::int8_t, D> int8;
  Tensor<float, D> scales;

  /// A zero-filled plane of `shape` (its last axis the width W).
  static CachePlane zeros(const Shape& shape, CacheDtype dtype) {
    CachePlane p;
    p.dtype = dtype;
    if (dtype != CacheDtype::F32) {
      if constexpr (!std::is_same_v<T, float> || !std::is_same_v<D, Cpu>) {
        throw ArgumentError(std::string("cache dtype ") + to_string(dtype) +
                            ": quantized caches are the CPU backend's, for float models; this one keeps f32");
      }
    }
    switch (dtype) {
      case CacheDtype::F32: p.wide = Tensor<T, D>::zeros(shape); break;
      case CacheDtype::BF16: p.bf16 = Tensor<std::uint16_t, D>::zeros(shape); break;
      case CacheDtype::Int8:
        p.int8 = Tensor<std::int8_t, D>::zeros(shape);
        p.scales = Tensor<float, D>::zeros(shape.with_cols(quant_groups(shape[-1])));
        break;
    }
    return p;
  }

  [[nodiscard]] bool defined() const { return wide.defined() || bf16.defined() || int8.defined(); }
  /// The plane's logical shape [rows..., W].
  [[nodiscard]] Shape shape() const {
    return dtype == CacheDtype::F32 ? wide.shape() : dtype == CacheDtype::BF16 ? bf16.shape() : int8.shape();
  }
  [[nodiscard]] std::int64_t width() const { return shape()[-1]; }

  /// Batch rows [b, b + 1), as views.
  [[nodiscard]] CachePlane row(std::int64_t b) const {
    CachePlane p;
    p.dtype = dtype;
    auto cut = [&](const auto& t) { return t.defined() ? t.slice(b, b + 1) : std::remove_cvref_t<decltype(t)>{}; };
    p.wide = cut(wide);
    p.bf16 = cut(bf16);
    p.int8 = cut(int8);
    p.scales = cut(scales);
    return p;
  }

  /// Stores gen() as every value of every row, quantized as any appended row is (CPU): what a
  /// benchmark fills a cache with, since a step's cost does not depend on the values.
  template <class Gen>
  void fill(Gen&& gen) {
    static_assert(std::is_same_v<D, Cpu>, "CachePlane::fill: the rows are stored on the host");
    const std::int64_t W = width(), count = shape().numel() / W;
    std::vector<T> row(static_cast<std::size_t>(W));
    for (std::int64_t r = 0; r < count; ++r) {
      for (T& x : row) x = gen();
      kernels::store_row(Cpu{}, rows_out(), r, row.data(), W);
    }
  }

  /// The rows as the kernels read them, and as they store new ones.
  [[nodiscard]] kernels::StoredRows<T> rows() const {
    if (!defined()) return {dtype};
    const std::int64_t W = width();
    return {dtype, wide.defined() ? wide.data() : nullptr, bf16.defined() ? bf16.data() : nullptr,
            int8.defined() ? int8.data() : nullptr, scales.defined() ? scales.data() : nullptr, W, quant_groups(W)};
  }
  [[nodiscard]] kernels::StoredRowsOut<T> rows_out() const {
    if (!defined()) return {dtype};
    const std::int64_t W = width();
    return {dtype, wide.defined() ? wide.data() : nullptr, bf16.defined() ? bf16.data() : nullptr,
            int8.defined() ? int8.data() : nullptr, scales.defined() ? scales.data() : nullptr, W, quant_groups(W)};
  }
};

}  // namespace mla
