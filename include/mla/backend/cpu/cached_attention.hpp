// mla/backend/cpu/cached_attention.hpp — attention of new queries over a KV cache (inference).
//
// Legend: B batch rows, H query heads, G kv heads (Hg = H/G heads share one), Tq new queries per
// row, S cache capacity (slots), L keys valid in a row, Dk/Dv key/value head dims, Dc latent
// rank, Dr decoupled-RoPE dim.
//
// Row b holds L_b = lengths[b] valid keys (the new tokens already appended); its query i sits
// at position L_b - Tq + i and sees keys 0..L_b - Tq + i. Used for a decode step (Tq = 1) and for
// prefilling a chunk of a prompt on top of what is cached (Tq > 1).
//
// Both kernels run the queries of one (row, kv head) against blocks of 256 cached keys: scores
// = Q K^T for the block, an online (running max and sum) masked softmax, then acc += P V while
// the block is still in cache — every cached byte is read from memory once per step, and used
// there by all the query rows that share it (the H heads of MLA, the H/G of a GQA group). When
// the (row, kv head) tasks are few, as for one decode row of MQA or MLA, the keys are split
// into ranges spread over the threads and the partial results merged (flash decoding). The
// split depends on the shapes only, so results are bit-identical for any thread count.
//
// A cache may store its rows as bfloat16 or int8 (CacheDtype): the block kernels read them
// through a source (WideRows, Bf16Rows, Int8Rows) that widens each packet of stored values to
// floats in registers as it is loaded (int8: times its group's scale) — the stored bytes are
// what streams from memory, and no dequantized copy is made. MLA's int8 latent cache keeps its
// rotated key in bfloat16: its keys are two segments, [c_kv int8 | k_pe bf16], each summed into
// the same dot products.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include <Eigen/Core>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "mla/backend/cpu/compiler.hpp"
#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/cpu/quantize.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

namespace detail {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using StridedRows = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;

/// Keys per block of the online softmax: the block's rows stay in cache between the scores and
/// the values, so each cached row is read from memory once.
inline constexpr std::int64_t kKeyBlock = 256;
/// Work items cached_attend aims for: when (group, row block) tasks are fewer, as for a decode
/// step of few rows, each row's keys are split into up to this many over the tasks, ranges
/// of whole key blocks, attended independently and merged in order (flash decoding). Enough
/// for the cores of a large machine, and a constant: the split, and so every bit of the
/// result, depends on the shapes and lengths, never on the thread count.
inline constexpr std::int64_t kWorkItems = 32;
/// Keys per range at least: below this, the merge would cost more than the split saves.
inline constexpr std::int64_t kMinRange = 2 * kKeyBlock;
/// Row stride of a task's block of scores: a cache line more than the keys. With rows of
/// exactly 1 KiB, every fourth row written for a key would share its offset in a 4 KiB page
/// with the next loads, which then wait on those stores for nothing (4K aliasing).
template <class T>
inline constexpr std::int64_t kScoreStride = kKeyBlock + 64 / sizeof(T);
/// Query rows per task.
inline constexpr std::int64_t kRowBlock = 64;
/// Query rows per register tile of the block kernels.
inline constexpr int kRowTile = 8;

template <class P>
inline constexpr int kLanes = Eigen::internal::unpacket_traits<P>::size;

/// Rows of T as stored. load<P>(j, d): the packet of columns [d, d + lanes) of row j.
template <class T>
struct WideRows {
  const T* p;
  std::int64_t ld, col0 = 0;
  template <class P>
  [[nodiscard]] P load(std::int64_t j, std::int64_t d) const {
    return Eigen::internal::ploadu<P>(p + j * ld + col0 + d);
  }
  [[nodiscard]] WideRows rows_from(std::int64_t j) const { return {p + j * ld, ld, col0}; }
  [[nodiscard]] WideRows cols_from(std::int64_t c) const { return {p, ld, col0 + c}; }
  [[nodiscard]] const void* row(std::int64_t j) const { return p + j * ld; }
  static constexpr std::int64_t kBytes = sizeof(T);
};

/// Rows of bfloat16 bit patterns, widened to float.
struct Bf16Rows {
  const std::uint16_t* p;
  std::int64_t ld, col0 = 0;
  template <class P>
  [[nodiscard]] P load(std::int64_t j, std::int64_t d) const {
    constexpr int N = kLanes<P>;
    const std::uint16_t* x = p + j * ld + col0 + d;
#if defined(__AVX512F__)
    if constexpr (kLanes<P> == 16) {  // zero-extend, shift into the top half
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))), 16));
    }
#endif
#if defined(__AVX2__)
    if constexpr (kLanes<P> == 8) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))), 16));
    }
#endif
    alignas(64) std::uint32_t w[N];
    for (int l = 0; l < N; ++l) w[l] = static_cast<std::uint32_t>(x[l]) << 16;
    return Eigen::internal::pload<P>(reinterpret_cast<const float*>(w));
  }
  [[nodiscard]] Bf16Rows rows_from(std::int64_t j) const { return {p + j * ld, ld, col0}; }
  [[nodiscard]] Bf16Rows cols_from(std::int64_t c) const { return {p, ld, col0 + c}; }
  [[nodiscard]] const void* row(std::int64_t j) const { return p + j * ld; }
  static constexpr std::int64_t kBytes = 2;
};

/// Rows of int8 values with one float scale per kQuantGroup columns, widened to float.
struct Int8Rows {
  const std::int8_t* p;
  const float* scales;
  std::int64_t ld, groups, col0 = 0;
  template <class P>
  [[nodiscard]] P load(std::int64_t j, std::int64_t d) const {
    constexpr int N = kLanes<P>;
    const std::int64_t c = col0 + d;
    const std::int8_t* x = p + j * ld + c;
    const float* s = scales + j * groups;
    alignas(64) float w[N];
    if (c / kQuantGroup == (c + N - 1) / kQuantGroup) {  // one group: one scale
      const float k = s[c / kQuantGroup];
#if defined(__AVX512F__)
      if constexpr (kLanes<P> == 16) {  // sign-extend, convert, scale
        const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(k));
      }
#endif
#if defined(__AVX2__)
      if constexpr (kLanes<P> == 8) {
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(k));
      }
#endif
      for (int l = 0; l < N; ++l) w[l] = static_cast<float>(x[l]) * k;
    } else {
      for (int l = 0; l < N; ++l) w[l] = static_cast<float>(x[l]) * s[(c + l) / kQuantGroup];
    }
    return Eigen::internal::pload<P>(w);
  }
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

/// One group of query rows and the cache rows they attend over.
template <class T, class K, class V>
struct CachedGroup {
  const T* q;          // [rows, Dk], leading dimension ldq
  K k;                 // [L, Dk]
  V v;                 // [L, Dv]
  T* out;              // [rows, Dv], contiguous
  std::int64_t L = 0;  // valid keys
};

struct CachedLayout {
  std::int64_t rows, Tq, Dk, ldq, Dv;
};

// The block kernels. Every cached row of a block is used by all the query rows of a tile while
// it is in L1, straight from the cache: a GEMM would first pack (copy) each block, which costs
// more than the arithmetic when the query rows are few. They run on Eigen's SIMD packets, which
// fall back to plain scalars where there is no SIMD. Each dot product and each output element
// sums in a fixed order, so results do not depend on which thread runs them. Their local
// arrays are declared alignas(64): GCC 12.2 at -O2 -march=native (AVX-512) otherwise stored
// to a plain float array on the stack with aligned 16-byte moves at an 8-byte boundary.

/// Calls f(P{}) with T's SIMD packet when `width` elements hold one, else f(T{}): plain scalars.
template <class T, class F>
void with_packet(std::int64_t width, F&& f) {
  using Traits = Eigen::internal::packet_traits<T>;
  if (width >= Traits::size) {
    f(typename Traits::type{});
  } else {
    f(T{});
  }
}

/// SIMD registers of the target: the register tiles below are sized to fit in them.
inline constexpr int kRegisters = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;
/// Key rows ahead of the one in use that tile_scores asks the memory system for (at least).
inline constexpr std::int64_t kPrefetchRows = 4;

/// p[r, j + i] = scale * q_r . k_(j+i) for Rt query rows and J keys from k_j on: Rt * J
/// accumulators, each query packet loaded once for the J keys, summed over every segment of
/// the keys. q_tail[segment] holds each row's last packet of that segment's columns, zero over
/// the lanes the whole packets already cover.
template <int Rt, int J, class P, class T, class K>
MLA_FLATTEN void dot_keys(const T* q, std::int64_t ldq, const T (*q_tail)[Rt][kLanes<P>], const K& keys, std::int64_t j,
              T scale, T* p, std::int64_t ldp) {
  namespace ei = Eigen::internal;
  constexpr int N = kLanes<P>;
  alignas(64) P dot[Rt][J];
  alignas(64) P kd[J];
  MLA_UNROLL(16)
  for (int r = 0; r < Rt; ++r) {
    MLA_UNROLL(16)
    for (int i = 0; i < J; ++i) dot[r][i] = ei::pset1<P>(T(0));
  }
  auto step = [&](auto query_packet) {
    MLA_UNROLL(16)
    for (int r = 0; r < Rt; ++r) {
      const P qd = query_packet(r);
      MLA_UNROLL(16)
      for (int i = 0; i < J; ++i) dot[r][i] = ei::pmadd(qd, kd[i], dot[r][i]);
    }
  };
  int segment = 0;
  keys.segments([&](const auto& src, std::int64_t q0, std::int64_t width) {
    const std::int64_t full = width / N * N;
    for (std::int64_t d = 0; d < full; d += N) {
      MLA_UNROLL(16)
      for (int i = 0; i < J; ++i) kd[i] = src.template load<P>(j + i, d);
      step([&](int r) { return ei::ploadu<P>(q + r * ldq + q0 + d); });
    }
    if (full != width) {  // the last packet, loaded from inside the row: [width - N, width)
      MLA_UNROLL(16)
      for (int i = 0; i < J; ++i) kd[i] = src.template load<P>(j + i, width - N);
      step([&](int r) { return ei::ploadu<P>(q_tail[segment][r]); });
    }
    ++segment;
  });
  constexpr int D = Rt * J;
  if constexpr (std::is_same_v<P, T> || D % N != 0) {
    for (int r = 0; r < Rt; ++r)
      for (int i = 0; i < J; ++i) p[r * ldp + i] = scale * ei::predux(dot[r][i]);
  } else {
    // N dot products at a time, each a packet of partial sums: transposed, then added lane by
    // lane, they leave the N sums in one packet, for fewer instructions than a horizontal sum
    // each (the sum of a dot product runs over its lanes in order).
    const P* flat = &dot[0][0];
    for (int b = 0; b < D; b += N) {
      ei::PacketBlock<P, N> block;
      MLA_UNROLL(16)
      for (int i = 0; i < N; ++i) block.packet[i] = flat[b + i];
      ei::ptranspose(block);
      P sum = block.packet[0];
      MLA_UNROLL(16)
      for (int i = 1; i < N; ++i) sum = ei::padd(sum, block.packet[i]);
      alignas(64) T sums[N];
      ei::pstore(sums, ei::pmul(ei::pset1<P>(scale), sum));
      for (int i = 0; i < N; ++i) p[(b + i) / J * ldp + (b + i) % J] = sums[i];
    }
  }
}

/// p[r, j] = scale * q_r . k_j for Rt query rows q [Rt, Dk] and keys [n, Dk], every segment at
/// least a packet wide: lanes / Rt keys at a time (at least one), so that the dot products of
/// a step fill whole packets when their sums are gathered (dot_keys). The dot
/// products run along each segment, one packet of columns at a time; when a segment is not a
/// whole number of packets, its last packet is loaded from width - lanes (inside the row) and
/// multiplied by a query packet that is zero over the lanes already summed.
template <int Rt, class P, class T, class K>
void tile_scores(const T* q, std::int64_t ldq, const K& keys, std::int64_t n, T scale, T* p, std::int64_t ldp) {
  constexpr int N = kLanes<P>;
  constexpr int J = Rt >= N ? 1 : N / Rt;
  static_assert(Rt * J <= 2 * kRegisters / 3, "the accumulators leave registers for keys and queries");
  alignas(64) T q_tail[2][Rt][N] = {};
  int segment = 0;
  keys.segments([&](const auto&, std::int64_t q0, std::int64_t width) {
    const std::int64_t full = width / N * N, tail = width - full;
    for (int r = 0; r < Rt; ++r) {
      std::copy(q + r * ldq + q0 + full, q + r * ldq + q0 + width, q_tail[segment][r] + N - tail);
    }
    ++segment;
  });
  auto prefetch = [&](std::int64_t row) {
    keys.segments([&](const auto& src, std::int64_t, std::int64_t width) {
      const auto* bytes = static_cast<const char*>(src.row(row));
      for (std::int64_t b = 0; b < width * src.kBytes; b += 64) Eigen::internal::prefetch(bytes + b);
    });
  };
  constexpr std::int64_t ahead = std::max<std::int64_t>(kPrefetchRows, J);  // the next step's rows at least
  std::int64_t j = 0;
  for (; j + J <= n; j += J) {
    if (j + ahead + J <= n) {
      for (int i = 0; i < J; ++i) prefetch(j + ahead + i);
    }
    dot_keys<Rt, J, P>(q, ldq, q_tail, keys, j, scale, p + j, ldp);
  }
  for (; j < n; ++j) dot_keys<Rt, 1, P>(q, ldq, q_tail, keys, j, scale, p + j, ldp);
}

/// out[r, c] = acc[r, c] + sum_j p[r, j] v[j, c] for Rt rows and C packets of columns, held in
/// registers while the n value rows stream past.
template <int Rt, int C, class P, class T, class V>
void tile_values(const T* p, std::int64_t ldp, const V& v, std::int64_t n, const T* acc, std::int64_t lda, T* out,
                 std::int64_t ldo) {
  namespace ei = Eigen::internal;
  constexpr int N = kLanes<P>;
  alignas(64) P a[Rt][C];
  MLA_UNROLL(16)
  for (int r = 0; r < Rt; ++r) {
    MLA_UNROLL(4)
    for (int c = 0; c < C; ++c) a[r][c] = ei::ploadu<P>(acc + r * lda + c * N);
  }
  for (std::int64_t j = 0; j < n; ++j) {
    alignas(64) P vj[C];
    MLA_UNROLL(4)
    for (int c = 0; c < C; ++c) vj[c] = v.template load<P>(j, c * N);
    MLA_UNROLL(16)
    for (int r = 0; r < Rt; ++r) {
      const P pr = ei::pset1<P>(p[r * ldp + j]);
      MLA_UNROLL(4)
      for (int c = 0; c < C; ++c) a[r][c] = ei::pmadd(pr, vj[c], a[r][c]);
    }
  }
  MLA_UNROLL(16)
  for (int r = 0; r < Rt; ++r) {
    MLA_UNROLL(4)
    for (int c = 0; c < C; ++c) ei::pstoreu(out + r * ldo + c * N, a[r][c]);
  }
}

/// Column tiles of C packets over [c0, end) while they fit, then at most one of each narrower
/// width for what is left.
template <int Rt, int C, class P, class T, class V>
void column_tiles(const T* p, std::int64_t ldp, const V& v, std::int64_t n, std::int64_t c0, std::int64_t end,
                  T* acc, std::int64_t lda) {
  constexpr int W = C * kLanes<P>;
  for (; c0 + W <= end; c0 += W) tile_values<Rt, C, P>(p, ldp, v.cols_from(c0), n, acc + c0, lda, acc + c0, lda);
  if constexpr (C > 1) column_tiles<Rt, C - 1, P>(p, ldp, v, n, c0, end, acc, lda);
}

/// acc [Rt, Dv] += p [Rt, n] v [n, Dv], Dv >= lanes: column tiles as wide as the registers
/// hold (Rt * C accumulators, C value packets and a broadcast probability), so each value row
/// is read once per tile. When Dv is not a whole number of packets, the last packet of
/// columns, [Dv - lanes, Dv), is computed from the original acc into a buffer first and its
/// new columns copied in at the end; the columns it shares with the tiles before it come out
/// the same, bit for bit, either way.
template <int Rt, class P, class T, class V>
void tile_values(const T* p, std::int64_t ldp, const V& v, std::int64_t n, std::int64_t Dv, T* acc,
                 std::int64_t lda) {
  if constexpr (Rt > 1 && (kRegisters - 1) / (Rt + 1) < 2) {
    // Registers for one packet of columns only (8 rows on AVX2): each value packet would be
    // loaded for 8 multiply-adds with 8 broadcasts, more loads than the ports serve. Half the
    // rows at a time, with two or more packets of columns, load fewer per multiply-add.
    tile_values<Rt / 2, P>(p, ldp, v, n, Dv, acc, lda);
    tile_values<Rt / 2, P>(p + Rt / 2 * ldp, ldp, v, n, Dv, acc + Rt / 2 * lda, lda);
    return;
  }
  constexpr int N = kLanes<P>;
  constexpr int C = std::clamp((kRegisters - 1) / (Rt + 1), 1, 4);
  const std::int64_t tail = Dv % N;
  alignas(64) T last[Rt][N];
  if (tail != 0) tile_values<Rt, 1, P>(p, ldp, v.cols_from(Dv - N), n, acc + Dv - N, lda, last[0], N);
  column_tiles<Rt, C, P>(p, ldp, v, n, 0, Dv - tail, acc, lda);
  if (tail != 0) {
    for (int r = 0; r < Rt; ++r) std::copy(last[r] + N - tail, last[r] + N, acc + r * lda + Dv - tail);
  }
}

/// One row's online-softmax step over a block of scores p [n], the first `seen` visible: turns
/// them into exp(p - m') and the rest into 0, updates the running max m -> m' and sum l, and
/// returns e^(m - m'), the factor for what was summed before. Whole packets only (p has room
/// up to a multiple of the lanes), so every element goes through the same exp and the sum runs
/// in the same order wherever p lies in memory.
template <class P, class T>
T softmax_block(T* p, std::int64_t n, std::int64_t seen, T& m, T& l) {
  namespace ei = Eigen::internal;
  constexpr int N = kLanes<P>;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const std::int64_t padded = (seen + N - 1) / N * N;
  std::fill(p + seen, p + padded, neg_inf);
  P top = ei::pset1<P>(neg_inf);
  for (std::int64_t j = 0; j < padded; j += N) top = ei::pmax(top, ei::ploadu<P>(p + j));
  const T m_new = std::max(m, ei::predux_max(top));
  if (m_new == neg_inf) {  // nothing visible yet
    std::fill(p, p + std::max(n, padded), T(0));
    return T(1);
  }
  const P shift = ei::pset1<P>(m_new);
  for (std::int64_t j = 0; j < padded; j += N) ei::pstoreu(p + j, ei::pexp(ei::psub(ei::ploadu<P>(p + j), shift)));
  std::fill(p + seen, p + std::max(n, padded), T(0));  // exp(-inf) is not exactly 0 in every SIMD exp
  P sum = ei::pset1<P>(T(0));
  for (std::int64_t j = 0; j < padded; j += N) sum = ei::padd(sum, ei::ploadu<P>(p + j));
  const T correction = std::exp(m - m_new);
  l = l * correction + ei::predux(sum);
  m = m_new;
  return correction;
}

/// Calls f(integral_constant<Rt>, r) over rows [0, R) in tiles of kRowTile, then 4, 2, 1.
template <class F>
void for_row_tiles(std::int64_t R, F f) {
  std::int64_t r = 0;
  for (; r + kRowTile <= R; r += kRowTile) f(std::integral_constant<int, kRowTile>{}, r);
  if (r + 4 <= R) f(std::integral_constant<int, 4>{}, r), r += 4;
  if (r + 2 <= R) f(std::integral_constant<int, 2>{}, r), r += 2;
  if (r < R) f(std::integral_constant<int, 1>{}, r);
}
static_assert(kRowTile == 8, "for_row_tiles covers a remainder of up to 7 rows as 4 + 2 + 1");

/// Online-softmax attention of rows [r0, r0 + R) of a group over keys [j0, j1): leaves the
/// unnormalized sum in acc [R, Dv], the running max in m and the running sum in l. Row r sees
/// keys up to L - Tq + (r0 + r) % Tq.
template <class T, class K, class V>
void attend_range(const CachedGroup<T, K, V>& g, const CachedLayout& s, T scale, std::int64_t r0, std::int64_t R,
                  std::int64_t j0, std::int64_t j1, T* acc, T* m, T* l) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::fill(acc, acc + R * s.Dv, T(0));
  std::fill(m, m + R, neg_inf);
  std::fill(l, l + R, T(0));
  constexpr std::int64_t ldp = kScoreStride<T>;
  T* scores = thread_scratch<T, ScratchSlot::CachedScores>(R * ldp);  // [R, kKeyBlock], leading dimension ldp
  const T* q = g.q + r0 * s.ldq;
  auto limit = [&](std::int64_t r) { return g.L - s.Tq + (r0 + r) % s.Tq; };
  std::int64_t reach = 0;  // the furthest key any row may see
  for (std::int64_t r = 0; r < R; ++r) reach = std::max(reach, limit(r));
  for (std::int64_t jb = j0; jb < std::min(j1, reach + 1); jb += kKeyBlock) {
    const std::int64_t n = std::min(kKeyBlock, j1 - jb);
    const K k = g.k.rows_from(jb);
    const V v = g.v.rows_from(jb);
    with_packet<T>(k.narrowest(), [&]<class P>(P) {
      for_row_tiles(R, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
        tile_scores<Rt, P>(q + r * s.ldq, s.ldq, k, n, scale, scores + r * ldp, ldp);
      });
    });
    with_packet<T>(kKeyBlock, [&]<class P>(P) {
      for (std::int64_t r = 0; r < R; ++r) {
        const std::int64_t seen = std::clamp<std::int64_t>(limit(r) - jb + 1, 0, n);
        const T correction = softmax_block<P>(scores + r * ldp, n, seen, m[r], l[r]);
        if (correction != T(1)) {
          for (std::int64_t c = 0; c < s.Dv; ++c) acc[r * s.Dv + c] *= correction;
        }
      }
    });
    with_packet<T>(s.Dv, [&]<class P>(P) {
      for_row_tiles(R, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
        tile_values<Rt, P>(scores + r * ldp, ldp, v, n, s.Dv, acc + r * s.Dv, s.Dv);
      });
    });
  }
}

/// Runs every group: work items are (group, block of rows, range of keys), the ranges of a row
/// block merged in order afterwards, so that every thread streams a different part of the
/// cache even for a single decode row of MQA or MLA.
template <class T, class GroupAt>
void cached_attend(std::int64_t groups, const CachedLayout& s, std::int64_t max_len, T scale, GroupAt group_at) {
  const std::int64_t blocks = (s.rows + kRowBlock - 1) / kRowBlock, tasks = groups * blocks;
  const std::int64_t ranges = std::clamp<std::int64_t>((kWorkItems + tasks - 1) / tasks, 1,
                                                       std::max<std::int64_t>(1, max_len / kMinRange));
  const std::int64_t per = (max_len + ranges - 1) / ranges;
  const std::int64_t range = (per + kKeyBlock - 1) / kKeyBlock * kKeyBlock;  // whole blocks
  const std::int64_t stride = kRowBlock * (s.Dv + 2);                         // one partial: acc, m, l
  T* partial = ranges > 1 ? thread_scratch<T, ScratchSlot::CachedPartials>(tasks * ranges * stride) : nullptr;

  // Work item (task, range) = ((gi * blocks + blk) * ranges + sp).
  parallel_for(tasks * ranges, groups * s.rows * max_len * s.Dk > kParallelGrain, [&](std::int64_t item) {
    const std::int64_t task = item / ranges, sp = item % ranges, gi = task / blocks, blk = task % blocks;
    const auto g = group_at(gi);
    const std::int64_t r0 = blk * kRowBlock, R = std::min(kRowBlock, s.rows - r0);
    const std::int64_t j0 = std::min(g.L, sp * range), j1 = std::min(g.L, j0 + range);
    T* acc = ranges > 1 ? partial + item * stride : g.out + r0 * s.Dv;
    T* m = ranges > 1 ? acc + R * s.Dv : thread_scratch<T, ScratchSlot::CachedRowStats>(2 * R);
    attend_range(g, s, scale, r0, R, j0, j1, acc, m, m + R);
    if (ranges == 1) {
      for (std::int64_t r = 0; r < R; ++r) {
        const T inv = T(1) / m[R + r];
        for (std::int64_t c = 0; c < s.Dv; ++c) acc[r * s.Dv + c] *= inv;
      }
    }
  });
  if (ranges == 1) return;
  // Merge the key ranges in order: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
  parallel_for(tasks, groups * s.rows * ranges * s.Dv > kParallelGrain, [&](std::int64_t task) {
    const std::int64_t gi = task / blocks, blk = task % blocks;
    const auto g = group_at(gi);
    const std::int64_t r0 = blk * kRowBlock, R = std::min(kRowBlock, s.rows - r0);
    const T* first = partial + task * ranges * stride;
    for (std::int64_t r = 0; r < R; ++r) {
      T M = -std::numeric_limits<T>::infinity();
      for (std::int64_t sp = 0; sp < ranges; ++sp) M = std::max(M, first[sp * stride + R * s.Dv + r]);
      T* o = g.out + (r0 + r) * s.Dv;
      std::fill(o, o + s.Dv, T(0));
      T total = 0;
      for (std::int64_t sp = 0; sp < ranges; ++sp) {
        const T* p = first + sp * stride;
        const T lsp = p[R * s.Dv + R + r];
        if (lsp == T(0)) continue;
        const T w = std::exp(p[R * s.Dv + r] - M);
        total += lsp * w;
        for (std::int64_t c = 0; c < s.Dv; ++c) o[c] += w * p[r * s.Dv + c];
      }
      const T inv = T(1) / total;
      for (std::int64_t c = 0; c < s.Dv; ++c) o[c] *= inv;
    }
  });
}

}  // namespace detail

/// Appends T new tokens per row: src [B, T, G, Dh] into cache [B, G, S, Dh] at slots
/// starts[b] .. starts[b] + T - 1 (a transposing copy).
template <class T>
void append_heads(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t G, std::int64_t S,
                  std::int64_t Dh, const T* src, const std::int32_t* starts, T* cache) {
  detail::parallel_for(B * Tn, B * Tn * G * Dh > detail::kParallelGrain, [&](std::int64_t bt) {
    const std::int64_t b = bt / Tn, t = bt % Tn;
    for (std::int64_t g = 0; g < G; ++g) {
      const T* from = src + (bt * G + g) * Dh;
      std::copy(from, from + Dh, cache + ((b * G + g) * S + starts[b] + t) * Dh);
    }
  });
}

/// Appends T new rows per batch row: src [B, T, W] into cache [B, S, W] at starts[b] + t.
template <class T>
void append_rows(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t S, std::int64_t W,
                 const T* src, const std::int32_t* starts, T* cache) {
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(src + b * Tn * W, src + (b + 1) * Tn * W, cache + (b * S + starts[b]) * W);
  }
}

/// Folds W_UK into the query: q_cat[b, h, t] = [q_nope[b, t, h] @ W_UK[h] | q_pe[b, t, h]].
///   q [B, T, H, N + Dr], kv_b [H * (N + Dv), Dc] (per head: N rows of W_UK, then Dv of W_UV)
///   -> q_cat [B, H, T, Dc + Dr]
template <class T>
void absorb_query(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t N,
                  std::int64_t Dr, std::int64_t Dv, std::int64_t Dc, const T* q, const T* kv_b,
                  T* q_cat) {
  const std::int64_t Wq = N + Dr, Wc = Dc + Dr;
  detail::parallel_for(B * H, B * Tn * H * N * Dc > detail::kParallelGrain, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    // [T, N] rows of this head (stride H*Wq) times W_UK[h] [N, Dc] -> [T, Dc] (stride Wc)
    detail::StridedRows<T> q_nope(q + (b * Tn * H + h) * Wq, Tn, N, Eigen::OuterStride<>(H * Wq));
    Eigen::Map<const detail::RowMatrix<T>> w_uk(kv_b + h * (N + Dv) * Dc, N, Dc);
    T* out = q_cat + bh * Tn * Wc;
    Eigen::Map<detail::RowMatrix<T>, 0, Eigen::OuterStride<>> lat(out, Tn, Dc, Eigen::OuterStride<>(Wc));
    lat.noalias() = q_nope * w_uk;
    for (std::int64_t t = 0; t < Tn; ++t) {
      const T* pe = q + ((b * Tn + t) * H + h) * Wq + N;
      std::copy(pe, pe + Dr, out + t * Wc + Dc);
    }
  });
}

/// Applies W_UV after the latent attention: out[b, t, h] = W_UV[h] @ o_lat[b, h, t].
///   o_lat [B, H, T, Dc], kv_b [H * (N + Dv), Dc] -> out [B, T, H * Dv]
template <class T>
void absorb_output(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t N,
                   std::int64_t Dv, std::int64_t Dc, const T* o_lat, const T* kv_b, T* out) {
  detail::parallel_for(B * H, B * Tn * H * Dv * Dc > detail::kParallelGrain, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    Eigen::Map<const detail::RowMatrix<T>> lat(o_lat + bh * Tn * Dc, Tn, Dc);
    Eigen::Map<const detail::RowMatrix<T>> w_uv(kv_b + (h * (N + Dv) + N) * Dc, Dv, Dc);
    Eigen::Map<detail::RowMatrix<T>, 0, Eigen::OuterStride<>> o(out + (b * Tn * H + h) * Dv, Tn, Dv,
                                                                Eigen::OuterStride<>(H * Dv));
    o.noalias() = lat * w_uv.transpose();
  });
}

namespace detail {

/// f(source) with the widening source of `rows` (T = float for the stored forms).
template <class T, class F>
void with_source(const StoredRows<T>& rows, F&& f) {
  switch (rows.dtype) {
    case CacheDtype::F32: return f(WideRows<T>{rows.wide, rows.ld});
    case CacheDtype::BF16:
      if constexpr (std::is_same_v<T, float>) return f(Bf16Rows{rows.bf16, rows.ld});
      break;
    case CacheDtype::Int8:
      if constexpr (std::is_same_v<T, float>) return f(Int8Rows{rows.int8, rows.scales, rows.ld, rows.groups});
      break;
  }
  throw std::logic_error("cached attention: quantized caches hold float values only");
}

}  // namespace detail

/// Multi-head (MHA/GQA/MQA) cached attention.
///   q [B, H, Tq, Dk], k_cache [B, G, S, Dk], v_cache [B, G, S, Dv] (rows in their stored dtype),
///   lengths [B] -> out [B, H, Tq, Dv]
/// `max_len` is the largest of the lengths (the caller's host copy).
template <class T>
void cached_attention(Cpu, const CachedAttentionShape& s, T scale, const T* q, const StoredRows<T>& k_cache,
                      const StoredRows<T>& v_cache, const std::int32_t* lengths, std::int64_t max_len, T* out) {
  const std::int64_t Hg = s.H / s.G, rows = Hg * s.Tq;  // a kv head's query rows are contiguous
  const detail::CachedLayout layout{rows, s.Tq, s.Dk, s.Dk, s.Dv};
  detail::with_source(k_cache, [&](auto k) {
    detail::with_source(v_cache, [&](auto v) {
      using K = detail::Keys<decltype(k)>;
      detail::cached_attend<T>(s.B * s.G, layout, max_len, scale, [&](std::int64_t bg) {
        return detail::CachedGroup<T, K, decltype(v)>{q + bg * rows * s.Dk, K{k.rows_from(bg * s.S), s.Dk},
                                                      v.rows_from(bg * s.S), out + bg * rows * s.Dv, lengths[bg / s.G]};
      });
    });
  });
}

/// The same over float caches as they are.
template <class T>
void cached_attention(Cpu, const CachedAttentionShape& s, T scale, const T* q, const T* k_cache, const T* v_cache,
                      const std::int32_t* lengths, std::int64_t max_len, T* out) {
  cached_attention(Cpu{}, s, scale, q, StoredRows<T>{.wide = k_cache, .ld = s.Dk},
                   StoredRows<T>{.wide = v_cache, .ld = s.Dv}, lengths, max_len, out);
}

/// MLA attention in latent space (the absorbed form).
///   q_cat [B, H, Tq, Dc + Dr]: per head, [q_nope @ W_UK | rotated q_pe]
///   cache [B, S, Dc + Dr]:     per token, [c_kv (normed) | rotated k_pe]; F32 or BF16
///   out   [B, H, Tq, Dc]:      the attention-weighted sum of the cached latents
/// An Int8 cache holds c_kv alone [B, S, Dc], and `rope` the BF16 k_pe [B, S, Dr] (unused
/// otherwise). Scores are q_cat . cache_row (one dot product over both parts); values are the
/// latents themselves. All H * Tq query rows of a batch row form one group, so each cached row
/// is read once and used by every head while it is in L1.
template <class T>
void latent_cached_attention(Cpu, std::int64_t B, std::int64_t H, std::int64_t Tq, std::int64_t S,
                             std::int64_t Dc, std::int64_t Dr, T scale, const T* q_cat, const StoredRows<T>& cache,
                             const StoredRows<T>& rope, const std::int32_t* lengths, std::int64_t max_len, T* out) {
  const std::int64_t W = Dc + Dr, rows = H * Tq;
  const detail::CachedLayout layout{rows, Tq, W, W, Dc};
  auto run = [&](auto keys, auto values) {
    using K = decltype(keys);
    using V = decltype(values);
    detail::cached_attend<T>(B, layout, max_len, scale, [&](std::int64_t b) {
      return detail::CachedGroup<T, K, V>{q_cat + b * rows * W, keys.rows_from(b * S), values.rows_from(b * S),
                                          out + b * rows * Dc, lengths[b]};
    });
  };
  if (cache.dtype == CacheDtype::Int8 && Dr > 0) {
    if constexpr (std::is_same_v<T, float>) {
      const detail::Int8Rows c{cache.int8, cache.scales, cache.ld, cache.groups};
      run(detail::Keys<detail::Int8Rows, detail::Bf16Rows>{c, Dc, detail::Bf16Rows{rope.bf16, rope.ld}, Dr}, c);
      return;
    }
  }
  // Keys are whole cached rows [c_kv | k_pe]; values are their first Dc columns.
  detail::with_source(cache, [&](auto rows_of) { run(detail::Keys<decltype(rows_of)>{rows_of, W}, rows_of); });
}

/// The same over a float cache as it is.
template <class T>
void latent_cached_attention(Cpu, std::int64_t B, std::int64_t H, std::int64_t Tq, std::int64_t S,
                             std::int64_t Dc, std::int64_t Dr, T scale, const T* q_cat, const T* cache,
                             const std::int32_t* lengths, std::int64_t max_len, T* out) {
  const StoredRows<T> rows{.wide = cache, .ld = Dc + Dr};
  latent_cached_attention(Cpu{}, B, H, Tq, S, Dc, Dr, scale, q_cat, rows, StoredRows<T>{}, lengths, max_len, out);
}

/// Appends T new tokens per row: src [B, T, G, Dh] into cache [B, G, S, Dh] (rows in their
/// stored dtype) at slots starts[b] .. starts[b] + T - 1: each (token, head) row quantized once.
template <class T>
void append_heads(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t G, std::int64_t S, std::int64_t Dh,
                  const T* src, const std::int32_t* starts, const StoredRowsOut<T>& cache) {
  detail::parallel_for(B * Tn, B * Tn * G * Dh > detail::kParallelGrain, [&](std::int64_t bt) {
    const std::int64_t b = bt / Tn, t = bt % Tn;
    for (std::int64_t g = 0; g < G; ++g) store_row(Cpu{}, cache, (b * G + g) * S + starts[b] + t, src + (bt * G + g) * Dh, Dh);
  });
}

/// Appends T new rows per batch row: src [B, T, Dc + Dr] into the latent cache at starts[b] + t:
/// whole rows (F32, BF16), or c_kv into `cache` (Int8) and k_pe into `rope` (BF16).
template <class T>
void append_latent(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t S, std::int64_t Dc, std::int64_t Dr,
                   const T* src, const std::int32_t* starts, const StoredRowsOut<T>& cache,
                   const StoredRowsOut<T>& rope) {
  const bool split = cache.dtype == CacheDtype::Int8 && Dr > 0;
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < Tn; ++t) {
      const T* row = src + (b * Tn + t) * (Dc + Dr);
      const std::int64_t at = b * S + starts[b] + t;
      store_row(Cpu{}, cache, at, row, split ? Dc : Dc + Dr);
      if (split) store_row(Cpu{}, rope, at, row + Dc, Dr);
    }
  }
}

}  // namespace mla::kernels
