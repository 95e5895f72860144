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
// into ranges of even size spread over the threads and the partial results merged (flash
// decoding). The split depends on the shapes only, so results are bit-identical for any thread
// count. The score tiles read their keys from several parts of a block at once, so that a core
// keeps several streams of rows in flight (CachedTiles::scores); where four or more query rows
// share keys of 32 or 64 floats (MQA, GQA), AVX-512's score tiles instead transpose 16 keys at
// a time in registers, so that no dot product needs a sum across lanes
// (CachedTiles::scores_transposed). While the value tiles run on the block's rows, already in
// cache, the next block's lines are requested into L2 (Lookahead), so that the memory is not
// left idle.
//
// The scores and values of a block run on register tiles (cached_tile.inl) built for AVX-512,
// AVX2 or Eigen's packets, chosen at run time with the GEMM's kernel (cached_kernels.hpp).
// A cache may store its rows as bfloat16 or int8 (CacheDtype): the tiles read them through a
// source (WideRows, Bf16Rows, Int8Rows) and widen each vector of stored values to floats in
// registers as it is loaded (int8: times its group's scale) — the stored bytes are what streams
// from memory, and no dequantized copy is made. MLA's int8 latent cache keeps its rotated key
// in bfloat16: its keys are two segments, [c_kv int8 | k_pe bf16], each summed into the same
// dot products.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "mla/backend/cpu/cached_kernels.hpp"
#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/exp.hpp"
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
/// Query rows that share their keys from which the scores take the transposed tiles: a
/// transpose per vector of kLanes keys' columns pays for itself only when several rows use it.
inline constexpr std::int64_t kTransposedMinRows = 4;
/// Query rows per task.
inline constexpr std::int64_t kRowBlock = 64;
/// Query rows per register tile of the values (the scores' tiles say theirs: kScoreRows).
inline constexpr int kRowTile = 8;

template <class P>
inline constexpr int kLanes = Eigen::internal::unpacket_traits<P>::size;

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
  T sum = 0;
  if (wide_exp<T>()) {
    sum = exp_row(p, m_new, p, seen);
    std::fill(p + seen, p + std::max(n, padded), T(0));
  } else {
    const P shift = ei::pset1<P>(m_new);
    for (std::int64_t j = 0; j < padded; j += N) ei::pstoreu(p + j, ei::pexp(ei::psub(ei::ploadu<P>(p + j), shift)));
    std::fill(p + seen, p + std::max(n, padded), T(0));  // exp(-inf) is not exactly 0 in every SIMD exp
    P sums = ei::pset1<P>(T(0));
    for (std::int64_t j = 0; j < padded; j += N) sums = ei::padd(sums, ei::ploadu<P>(p + j));
    sum = ei::predux(sums);
  }
  const T correction = std::exp(m - m_new);
  l = l * correction + sum;
  m = m_new;
  return correction;
}

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
  const std::int64_t end = std::min(j1, reach + 1);  // blocks from end on are seen by no row
  for (std::int64_t jb = j0; jb < end; jb += kKeyBlock) {
    const std::int64_t n = std::min(kKeyBlock, j1 - jb);
    const K k = g.k.rows_from(jb);
    const V v = g.v.rows_from(jb);
    with_tiles<T>(k.narrowest(), [&]<class Tiles>(Tiles) {
      if constexpr (Tiles::kTransposes) {
        if (R >= kTransposedMinRows && Tiles::transposes(k)) {
          for_row_tiles<Tiles::kTransposedRows>(R, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
            Tiles::template scores_transposed<Rt>(q + r * s.ldq, s.ldq, k, n, scale, scores + r * ldp, ldp);
          });
          return;
        }
      }
      for_row_tiles<Tiles::kScoreRows>(R, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
        Tiles::template scores<Rt>(q + r * s.ldq, s.ldq, k, n, scale, scores + r * ldp, ldp);
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
    // The next block's rows, exactly as many as its scores will read.
    Lookahead ahead = jb + n < end ? Lookahead::rows_of(k, n, std::min(kKeyBlock, j1 - (jb + n))) : Lookahead{};
    with_tiles<T>(s.Dv, [&]<class Tiles>(Tiles) {
      for_row_tiles<kRowTile>(R, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
        Tiles::template values<Rt>(scores + r * ldp, ldp, v, n, s.Dv, acc + r * s.Dv, s.Dv, ahead);
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
  // Range sp holds key blocks [key_blocks * sp / ranges, key_blocks * (sp + 1) / ranges): sizes
  // that differ by a block at most, so that each thread's share of consecutive ranges is even.
  const std::int64_t key_blocks = (max_len + kKeyBlock - 1) / kKeyBlock;
  auto range_start = [&](std::int64_t sp) { return key_blocks * sp / ranges * kKeyBlock; };
  const std::int64_t stride = kRowBlock * (s.Dv + 2);                         // one partial: acc, m, l
  T* partial = ranges > 1 ? thread_scratch<T, ScratchSlot::CachedPartials>(tasks * ranges * stride) : nullptr;

  // Work item (task, range) = ((gi * blocks + blk) * ranges + sp).
  parallel_for(tasks * ranges, groups * s.rows * max_len * s.Dk > kParallelGrain, [&](std::int64_t item) {
    const std::int64_t task = item / ranges, sp = item % ranges, gi = task / blocks, blk = task % blocks;
    const auto g = group_at(gi);
    const std::int64_t r0 = blk * kRowBlock, R = std::min(kRowBlock, s.rows - r0);
    const std::int64_t j0 = std::min(g.L, range_start(sp)), j1 = std::min(g.L, range_start(sp + 1));
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
