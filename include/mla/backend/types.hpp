// mla/backend/types.hpp — the vocabulary every backend's kernels share: operand flags, the
// sizes of the attention kernels, the optimizer's per-step constants, and the dropout hash.
// Included by the backends and by the kernel interface (mla/backend/kernels.hpp) only.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace mla {

/// Whether a matmul operand is used as stored or transposed.
enum class Transpose : bool { No = false, Yes = true };

constexpr Transpose operator!(Transpose t) {
  return t == Transpose::Yes ? Transpose::No : Transpose::Yes;
}

/// How a KV cache stores its values (mla/attention/cache.hpp says what each one caches):
///   F32   as computed (the model's float type)
///   BF16  bfloat16: the float's top 16 bits, rounded to nearest even
///   Int8  symmetric int8, one float32 scale per group of kQuantGroup values of a cached row
///         (value = q * scale, scale = max |x| / 127 over the group)
enum class CacheDtype { F32, BF16, Int8 };

constexpr const char* to_string(CacheDtype t) {
  return t == CacheDtype::F32 ? "f32" : t == CacheDtype::BF16 ? "bf16" : "int8";
}

/// Values per int8 scale, and the groups of a row of W values (the last one may be shorter).
inline constexpr std::int64_t kQuantGroup = 64;
constexpr std::int64_t quant_groups(std::int64_t W) { return (W + kQuantGroup - 1) / kQuantGroup; }

/// Bytes one cached row of W values takes in `dtype` (values of type T when F32).
template <class T>
constexpr std::int64_t stored_row_bytes(CacheDtype dtype, std::int64_t W) {
  switch (dtype) {
    case CacheDtype::F32: return W * static_cast<std::int64_t>(sizeof(T));
    case CacheDtype::BF16: return 2 * W;
    case CacheDtype::Int8: return W + 4 * quant_groups(W);
  }
  return 0;
}

namespace kernels {

enum class Binary { Add, Sub, Mul };

/// Rows of a cache as the kernels read them, in one of the CacheDtypes: row j's values start
/// at j * ld in the array of the dtype (wide, bf16 or int8); an Int8 row's scales at j * groups.
template <class T>
struct StoredRows {
  CacheDtype dtype = CacheDtype::F32;
  const T* wide = nullptr;
  const std::uint16_t* bf16 = nullptr;
  const std::int8_t* int8 = nullptr;
  const float* scales = nullptr;
  std::int64_t ld = 0, groups = 0;

  /// The rows from row `first` on.
  [[nodiscard]] StoredRows from(std::int64_t first) const {
    StoredRows r = *this;
    if (wide) r.wide += first * ld;
    if (bf16) r.bf16 += first * ld;
    if (int8) r.int8 += first * ld;
    if (scales) r.scales += first * groups;
    return r;
  }
};

/// The same, writable: where new rows are stored.
template <class T>
struct StoredRowsOut {
  CacheDtype dtype = CacheDtype::F32;
  T* wide = nullptr;
  std::uint16_t* bf16 = nullptr;
  std::int8_t* int8 = nullptr;
  float* scales = nullptr;
  std::int64_t ld = 0, groups = 0;
};

/// Axis sizes of a rank-4 tensor, and a permutation of its axes (dst axis k is src axis perm[k]).
using Dims4 = std::array<std::int64_t, 4>;
using Perm4 = std::array<int, 4>;

/// The sizes of one causal attention call: B batch, H query heads, G kv heads (H % G == 0;
/// query head h reads kv head h / (H/G)), Tq queries, Tk keys (Tq <= Tk), Dk query/key head
/// dim, Dv value head dim. Query row i sits at absolute position Tk - Tq + i.
struct AttentionShape {
  std::int64_t B = 0, H = 0, G = 0, Tq = 0, Tk = 0, Dk = 0, Dv = 0;

  /// Query heads that share one kv head (H / G).
  [[nodiscard]] constexpr std::int64_t group() const { return H / G; }
  /// Absolute position of query row 0: query row i sits at offset() + i.
  [[nodiscard]] constexpr std::int64_t offset() const { return Tk - Tq; }
};

/// The sizes of one cached (decoding) attention call: Tq new query rows per batch row over
/// caches of S slots per (batch row, kv head).
struct CachedAttentionShape {
  std::int64_t B, H, G, Tq, S, Dk, Dv;
};

/// The norms' weight and bias gradients are column sums over rows taken a chunk of
/// kNormChunkRows rows at a time, then the chunks in order: a fixed order, the same on every
/// backend and for any thread count.
inline constexpr std::int64_t kNormChunkRows = 32;
inline constexpr std::int64_t norm_chunks(std::int64_t R) { return (R + kNormChunkRows - 1) / kNormChunkRows; }

/// AdamW's constants for one step (see mla/train/adamw.hpp), in the parameters' type:
///   g' = g * grad_scale;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
///   p = p * keep - step_size * m / (sqrt(v) / sqrt_bc2 + eps)
template <class T>
struct AdamWStep {
  T b1, b2, step_size, sqrt_bc2, eps, grad_scale;
};

/// Dropout's counter-based mask: element i of a tensor is kept when the 53 high bits of
/// SplitMix64's mixing function of (key(seed) + (i + 1) * golden) reach ceil(p * 2^53). A pure
/// function of (seed, i): the same on every backend and for any thread count.
namespace dropout_hash {
inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
constexpr std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The per-seed key every element's counter is offset by.
constexpr std::uint64_t key(std::uint64_t seed) { return mix(seed + kGolden); }

/// Integer form of "u >= p" on the 53-bit grid.
inline std::uint64_t threshold(double p) {
  return static_cast<std::uint64_t>(std::ceil(p * 9007199254740992.0));  // 2^53
}

constexpr bool keep(std::uint64_t key, std::uint64_t i, std::uint64_t threshold) {
  return (mix(key + (i + 1) * kGolden) >> 11) >= threshold;
}
}  // namespace dropout_hash

}  // namespace kernels
}  // namespace mla
