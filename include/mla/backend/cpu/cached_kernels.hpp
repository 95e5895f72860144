// mla/backend/cpu/cached_kernels.hpp — what cached attention's register tiles (cached_tile.inl)
// read, and the instruction sets they are built for, chosen when the program runs.
//
// Sources: the rows of a cache as stored — float (WideRows), bfloat16 (Bf16Rows) or int8 with
// one float scale per kQuantGroup columns (Int8Rows) — and Keys, one source or two whose dot
// products are summed (MLA's int8 latent: c_kv, then its bfloat16 k_pe). A source is only where
// the bytes are; each instruction set's load() widens a vector of them to floats in registers
// (int8: times its group's scale), so the stored bytes are what streams from memory and no
// dequantized copy is made.
//
// The tiles exist three times: for AVX-512 and for AVX2 (float; compiled for their ISA by
// target regions, like the GEMM's kernels), and on Eigen's packets for the ISA the program was
// compiled for (any T, and scalars where a row is narrower than a packet). with_tiles() takes
// the ISA of gemm_kernel(): the one choice, from cpuid or MLA_GEMM_KERNEL, for every register
// tile of the CPU backend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "mla/backend/cpu/compiler.hpp"
#include "mla/backend/cpu/gemm_avx512.hpp"
#include "mla/backend/cpu/gemm_kernel.hpp"
#include "mla/backend/cpu/quantize.hpp"
#include "mla/backend/types.hpp"

#if defined(MLA_GEMM_X86)
#include <immintrin.h>
#endif

namespace mla::kernels::detail {

/// Rows of T as stored.
template <class T>
struct WideRows {
  const T* p;
  std::int64_t ld, col0 = 0;
  [[nodiscard]] const T* at(std::int64_t j, std::int64_t d) const { return p + j * ld + col0 + d; }
  [[nodiscard]] WideRows rows_from(std::int64_t j) const { return {p + j * ld, ld, col0}; }
  [[nodiscard]] WideRows cols_from(std::int64_t c) const { return {p, ld, col0 + c}; }
  [[nodiscard]] const void* row(std::int64_t j) const { return p + j * ld; }
  static constexpr std::int64_t kBytes = sizeof(T);
};

/// Rows of bfloat16 bit patterns.
struct Bf16Rows {
  const std::uint16_t* p;
  std::int64_t ld, col0 = 0;
  [[nodiscard]] const std::uint16_t* at(std::int64_t j, std::int64_t d) const { return p + j * ld + col0 + d; }
  [[nodiscard]] Bf16Rows rows_from(std::int64_t j) const { return {p + j * ld, ld, col0}; }
  [[nodiscard]] Bf16Rows cols_from(std::int64_t c) const { return {p, ld, col0 + c}; }
  [[nodiscard]] const void* row(std::int64_t j) const { return p + j * ld; }
  static constexpr std::int64_t kBytes = 2;
};

/// Rows of int8 values with one float scale per kQuantGroup columns: value = q * scale.
struct Int8Rows {
  const std::int8_t* p;
  const float* scales;
  std::int64_t ld, groups, col0 = 0;
  [[nodiscard]] const std::int8_t* at(std::int64_t j, std::int64_t d) const { return p + j * ld + col0 + d; }
  /// The scales of row j's groups.
  [[nodiscard]] const float* scales_of(std::int64_t j) const { return scales + j * groups; }
  [[nodiscard]] Int8Rows rows_from(std::int64_t j) const { return {p + j * ld, scales + j * groups, ld, groups, col0}; }
  [[nodiscard]] Int8Rows cols_from(std::int64_t c) const { return {p, scales, ld, groups, col0 + c}; }
  [[nodiscard]] const void* row(std::int64_t j) const { return p + j * ld; }
  static constexpr std::int64_t kBytes = 1;
};

/// The keys of a group: one source of Dk columns, or two (MLA's int8 latent: c_kv, then k_pe)
/// whose dot products with the query's matching columns are summed.
template <class A, class B = void>
struct Keys {
  A a;
  std::int64_t width_a;
  B b;
  std::int64_t width_b;
  [[nodiscard]] Keys rows_from(std::int64_t j) const { return {a.rows_from(j), width_a, b.rows_from(j), width_b}; }
  [[nodiscard]] std::int64_t narrowest() const { return std::min(width_a, width_b); }
  /// f(source, first query column, width) for each segment.
  template <class F>
  void segments(F&& f) const {
    f(a, std::int64_t{0}, width_a);
    f(b, width_a, width_b);
  }
};

template <class A>
struct Keys<A, void> {
  A a;
  std::int64_t width_a;
  [[nodiscard]] Keys rows_from(std::int64_t j) const { return {a.rows_from(j), width_a}; }
  [[nodiscard]] std::int64_t narrowest() const { return width_a; }
  template <class F>
  void segments(F&& f) const {
    f(a, std::int64_t{0}, width_a);
  }
};

/// Calls f(P{}) with T's SIMD packet (of the ISA the program was compiled for) when `width`
/// elements hold one, else f(T{}): plain scalars.
template <class T, class F>
void with_packet(std::int64_t width, F&& f) {
  using Traits = Eigen::internal::packet_traits<T>;
  if (width >= Traits::size) {
    f(typename Traits::type{});
  } else {
    f(T{});
  }
}

/// Key rows ahead of the one in use, in each part of a block, that a score tile asks the memory
/// system for.
inline constexpr std::int64_t kPrefetchRows = 4;

/// The cache lines of the next block of keys (up to two contiguous spans: one per segment),
/// asked of the memory system into L2 one at a time, while the value tiles of this block run
/// on rows that are already in cache and would otherwise leave the memory idle.
struct Lookahead {
  const char* next[2] = {};
  const char* end[2] = {};

  /// The lines of rows [j, j + m) of every segment of `keys`.
  template <class K>
  static Lookahead rows_of(const K& keys, std::int64_t j, std::int64_t m) {
    Lookahead ahead;
    int segment = 0;
    keys.segments([&](const auto& src, std::int64_t, std::int64_t) {
      ahead.next[segment] = static_cast<const char*>(src.row(j));
      ahead.end[segment] = static_cast<const char*>(src.row(j + m));
      ++segment;
    });
    return ahead;
  }
  void step() {
    for (int s = 0; s < 2; ++s) {
      if (next[s] < end[s]) {
        __builtin_prefetch(next[s], 0, 2);
        next[s] += 64;
        return;
      }
    }
  }
};

namespace portable {

/// Eigen's packet P of T (or T itself: one lane) as cached_tile.inl's vector.
template <class P, class T>
struct EigenSimd {
  using Scalar = T;
  using V = P;
  static constexpr int kLanes = Eigen::internal::unpacket_traits<P>::size;
  static constexpr int kRegisters = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;

  static V zero() { return Eigen::internal::pset1<P>(T(0)); }
  static V set1(T x) { return Eigen::internal::pset1<P>(x); }
  static V loadu(const T* p) { return Eigen::internal::ploadu<P>(p); }
  static void storeu(T* p, V v) { Eigen::internal::pstoreu(p, v); }
  static V fmadd(V a, V b, V c) { return Eigen::internal::pmadd(a, b, c); }
  static V add(V a, V b) { return Eigen::internal::padd(a, b); }
  static V mul(V a, V b) { return Eigen::internal::pmul(a, b); }
  static T hsum(V v) { return Eigen::internal::predux(v); }
  /// Transposed, then added lane by lane.
  static V sums(const V* d) {
    Eigen::internal::PacketBlock<P, kLanes> block;
    for (int i = 0; i < kLanes; ++i) block.packet[i] = d[i];
    Eigen::internal::ptranspose(block);
    V sum = block.packet[0];
    for (int i = 1; i < kLanes; ++i) sum = add(sum, block.packet[i]);
    return sum;
  }
  static V load(const WideRows<T>& s, std::int64_t j, std::int64_t d) { return loadu(s.at(j, d)); }
  static V load(const Bf16Rows& s, std::int64_t j, std::int64_t d) {
    alignas(64) T w[kLanes];
    const std::uint16_t* x = s.at(j, d);
    for (int l = 0; l < kLanes; ++l) w[l] = from_bf16(x[l]);
    return Eigen::internal::pload<P>(w);
  }
  static V load(const Int8Rows& s, std::int64_t j, std::int64_t d) {
    alignas(64) T w[kLanes];
    const std::int8_t* x = s.at(j, d);
    const std::int64_t c = s.col0 + d;
    for (int l = 0; l < kLanes; ++l) w[l] = static_cast<float>(x[l]) * s.scales_of(j)[(c + l) / kQuantGroup];
    return Eigen::internal::pload<P>(w);
  }
};

#include "mla/backend/cpu/cached_tile.inl"

}  // namespace portable

}  // namespace mla::kernels::detail

#if defined(MLA_GEMM_X86)

MLA_TARGET_BEGIN("avx512f,fma")

namespace mla::kernels::detail::avx512 {

struct CachedSimd {
  using Scalar = float;
  using V = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;

  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static float hsum(V v) { return _mm512_reduce_add_ps(v); }

  /// A tree of pairwise sums, 45 instructions for the 16: lanes interleaved and added within
  /// each 128-bit lane (two levels), then 128-bit lanes exchanged and added (two more).
  static V sums(const V* d) {
    V a[8], b[4], c[2];
    for (int k = 0; k < 8; ++k) {  // per 128-bit lane: d2k 0+2, d2k+1 0+2, d2k 1+3, d2k+1 1+3
      a[k] = add(_mm512_unpacklo_ps(d[2 * k], d[2 * k + 1]), _mm512_unpackhi_ps(d[2 * k], d[2 * k + 1]));
    }
    for (int m = 0; m < 4; ++m) {  // per 128-bit lane: that lane's sums of d4m .. d4m+3
      b[m] = add(_mm512_shuffle_ps(a[2 * m], a[2 * m + 1], 0x44), _mm512_shuffle_ps(a[2 * m], a[2 * m + 1], 0xEE));
    }
    for (int m = 0; m < 2; ++m) {  // 128-bit lanes 0+1 and 2+3 of b2m, then of b2m+1
      c[m] = add(_mm512_shuffle_f32x4(b[2 * m], b[2 * m + 1], 0x88), _mm512_shuffle_f32x4(b[2 * m], b[2 * m + 1], 0xDD));
    }
    return add(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
  }

  /// r[i] (row i of a 16 x 16 block) becomes column i: the GEMM's packing transpose.
  static void transpose(V r[kLanes]) { avx512::transpose(r); }
  static V load(const WideRows<float>& s, std::int64_t j, std::int64_t d) { return loadu(s.at(j, d)); }
  static V load(const Bf16Rows& s, std::int64_t j, std::int64_t d) {  // zero-extend, shift into the top half
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.at(j, d)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
  }
  static V load(const Int8Rows& s, std::int64_t j, std::int64_t d) {  // sign-extend, convert, scale
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.at(j, d)));
    const auto c = static_cast<std::uint64_t>(s.col0 + d), g = c / kQuantGroup, in_first = kQuantGroup - c % kQuantGroup;
    const float* scale = s.scales_of(j);
    V k = set1(scale[g]);
    if (in_first < kLanes) k = _mm512_mask_blend_ps(static_cast<__mmask16>(0xFFFFu << in_first), k, set1(scale[g + 1]));
    return mul(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x)), k);
  }
};

#include "mla/backend/cpu/cached_tile.inl"

}  // namespace mla::kernels::detail::avx512

MLA_TARGET_END

MLA_TARGET_BEGIN("avx2,fma")

namespace mla::kernels::detail::avx2 {

struct CachedSimd {
  using Scalar = float;
  using V = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static float hsum(V v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
  }

  /// A tree of pairwise sums, 21 instructions for the 8: lanes interleaved and added within each
  /// 128-bit lane (two levels), then the two 128-bit lanes exchanged and added.
  static V sums(const V* d) {
    V a[4], b[2];
    for (int k = 0; k < 4; ++k) {  // per 128-bit lane: d2k 0+2, d2k+1 0+2, d2k 1+3, d2k+1 1+3
      a[k] = add(_mm256_unpacklo_ps(d[2 * k], d[2 * k + 1]), _mm256_unpackhi_ps(d[2 * k], d[2 * k + 1]));
    }
    for (int m = 0; m < 2; ++m) {  // per 128-bit lane: that lane's sums of d4m .. d4m+3
      b[m] = add(_mm256_shuffle_ps(a[2 * m], a[2 * m + 1], 0x44), _mm256_shuffle_ps(a[2 * m], a[2 * m + 1], 0xEE));
    }
    return add(_mm256_permute2f128_ps(b[0], b[1], 0x20), _mm256_permute2f128_ps(b[0], b[1], 0x31));
  }

  static V load(const WideRows<float>& s, std::int64_t j, std::int64_t d) { return loadu(s.at(j, d)); }
  static V load(const Bf16Rows& s, std::int64_t j, std::int64_t d) {  // zero-extend, shift into the top half
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.at(j, d)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
  }
  static V load(const Int8Rows& s, std::int64_t j, std::int64_t d) {  // sign-extend, convert, scale
    const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s.at(j, d)));
    const auto c = static_cast<std::uint64_t>(s.col0 + d), g = c / kQuantGroup, in_first = kQuantGroup - c % kQuantGroup;
    const float* scale = s.scales_of(j);
    V k = set1(scale[g]);
    if (in_first < kLanes) {
      const __m256i later = _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32(static_cast<int>(in_first) - 1));
      k = _mm256_blendv_ps(k, set1(scale[g + 1]), _mm256_castsi256_ps(later));
    }
    return mul(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)), k);
  }
};

#include "mla/backend/cpu/cached_tile.inl"

}  // namespace mla::kernels::detail::avx2

MLA_TARGET_END

#endif  // MLA_GEMM_X86

namespace mla::kernels::detail {

/// Calls f(integral_constant<Rt>, r) over rows [0, R) in tiles of Max rows, then of Max / 2,
/// Max / 4 ... 1 for what is left (Max a power of two).
template <int Max, class F>
void for_row_tiles(std::int64_t R, F f) {
  static_assert(Max > 0 && (Max & (Max - 1)) == 0, "row tiles halve down to one row");
  std::int64_t r = 0;
  for (; r + Max <= R; r += Max) f(std::integral_constant<int, Max>{}, r);
  if constexpr (Max > 1) {
    for_row_tiles<Max / 2>(R - r, [&](auto rows, std::int64_t r2) { f(rows, r + r2); });
  }
}

/// Calls f(Tiles{}) with the register tiles for rows `width` columns wide: those of the ISA
/// gemm_kernel() runs when T is float and a row holds one of its vectors (AVX2's for rows of
/// 8 to 15 on an AVX-512 machine), else those on Eigen's packets (with_packet).
template <class T, class F>
void with_tiles(std::int64_t width, F&& f) {
#if defined(MLA_GEMM_X86)
  if constexpr (std::is_same_v<T, float>) {
    const GemmKernel isa = gemm_kernel();
    if (isa == GemmKernel::Avx512 && width >= avx512::CachedSimd::kLanes) {
      return f(avx512::CachedTiles<avx512::CachedSimd>{});
    }
    if (isa != GemmKernel::Eigen && available(GemmKernel::Avx2) && width >= avx2::CachedSimd::kLanes) {
      return f(avx2::CachedTiles<avx2::CachedSimd>{});
    }
  }
#endif
  with_packet<T>(width, [&]<class P>(P) { f(portable::CachedTiles<portable::EigenSimd<P, T>>{}); });
}

}  // namespace mla::kernels::detail
