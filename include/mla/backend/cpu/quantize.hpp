// mla/backend/cpu/quantize.hpp — the stored forms of a quantized KV cache (CacheDtype, in
// mla/backend/types.hpp): storing a row of values as it is appended, reading one back.
//
// BF16 keeps a float's sign, exponent and top 7 mantissa bits, rounded to nearest even (NaN
// stays NaN): a relative error of at most 2^-8. Int8 stores q = round(x / s), s = max |x| / 127
// over each group of kQuantGroup values of the row: |x - q s| <= s / 2 (plus the float rounding
// of the product), and a group of zeros has s = 0.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

namespace detail {

inline std::uint16_t to_bf16(float x) {
  const auto u = std::bit_cast<std::uint32_t>(x);
  if (std::isnan(x)) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // stays a (quiet) NaN
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bf16(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

/// The int8 form of x [n] (n <= kQuantGroup): q [n] and the group's scale.
inline float quantize_group(const float* x, std::int64_t n, std::int8_t* q) {
  float top = 0;
  for (std::int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(x[i]));
  const float scale = top / 127.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float r = scale > 0 ? std::nearbyint(x[i] / scale) : 0.0f;
    q[i] = static_cast<std::int8_t>(std::clamp(r, -127.0f, 127.0f));
  }
  return scale;
}

}  // namespace detail

/// Stores x [W] as row `row` of out, in out's dtype.
template <class T>
void store_row(Cpu, const StoredRowsOut<T>& out, std::int64_t row, const T* x, std::int64_t W) {
  switch (out.dtype) {
    case CacheDtype::F32:
      std::copy(x, x + W, out.wide + row * out.ld);
      return;
    case CacheDtype::BF16:
      if constexpr (std::is_same_v<T, float>) {
        for (std::int64_t i = 0; i < W; ++i) out.bf16[row * out.ld + i] = detail::to_bf16(x[i]);
        return;
      }
      break;
    case CacheDtype::Int8:
      if constexpr (std::is_same_v<T, float>) {
        for (std::int64_t g = 0; g * kQuantGroup < W; ++g) {
          const std::int64_t first = g * kQuantGroup, n = std::min(kQuantGroup, W - first);
          out.scales[row * out.groups + g] = detail::quantize_group(x + first, n, out.int8 + row * out.ld + first);
        }
        return;
      }
      break;
  }
  throw std::logic_error("store_row: quantized caches hold float values only");
}

/// Row j's values [d, d + n) of `in`, widened to T, into out [n].
template <class T>
void load_row(Cpu, const StoredRows<T>& in, std::int64_t j, std::int64_t d, std::int64_t n, T* out) {
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t at = j * in.ld + d + i;
    switch (in.dtype) {
      case CacheDtype::F32: out[i] = in.wide[at]; break;
      case CacheDtype::BF16: out[i] = static_cast<T>(detail::from_bf16(in.bf16[at])); break;
      case CacheDtype::Int8:
        out[i] = static_cast<T>(static_cast<float>(in.int8[at]) * in.scales[j * in.groups + (d + i) / kQuantGroup]);
        break;
    }
  }
}

}  // namespace mla::kernels
