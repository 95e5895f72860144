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
// the block is still in cache — every cached byte is read from memory once per step. When
// there are fewer (row, kv head) tasks than threads, as for one decode row of MQA or MLA, the
// keys are split into ranges across threads and the partial results merged (flash decoding).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {

namespace detail {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using StridedRows = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;

/// Keys per block of the online softmax: the block's rows stay in cache between the score
/// GEMM and the value GEMM, so each cached row is read from memory once.
inline constexpr std::int64_t kKeyBlock = 256;
/// Query rows per task.
inline constexpr std::int64_t kRowBlock = 64;

/// A thread's scratch, grown as needed and kept: no allocation in steady state.
template <class T, int Slot>
T* scratch(std::int64_t n) {
  thread_local std::vector<T> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
  return buffer.data();
}

/// One group of query rows and the cache rows they attend over.
template <class T>
struct CachedGroup {
  const T* q;          // [rows, Dk], leading dimension ldq
  const T* k;          // [L, Dk], leading dimension ldk
  const T* v;          // [L, Dv], leading dimension ldv
  T* out;              // [rows, Dv], contiguous
  std::int64_t L = 0;  // valid keys
};

struct CachedLayout {
  std::int64_t rows, Tq, Dk, ldq, ldk, Dv, ldv;
};

/// Online-softmax attention of rows [r0, r0 + R) of a group over keys [j0, j1): leaves the
/// unnormalized sum in acc [R, Dv], the running max in m and the running sum in l. Row r sees
/// keys up to L - Tq + (r0 + r) % Tq.
template <class T>
void attend_range(const CachedGroup<T>& g, const CachedLayout& s, T scale, std::int64_t r0, std::int64_t R,
                  std::int64_t j0, std::int64_t j1, T* acc, T* m, T* l) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::fill(acc, acc + R * s.Dv, T(0));
  std::fill(m, m + R, neg_inf);
  std::fill(l, l + R, T(0));
  T* scores = scratch<T, 0>(R * kKeyBlock);
  StridedRows<T> Q(g.q + r0 * s.ldq, R, s.Dk, Eigen::OuterStride<>(s.ldq));
  Eigen::Map<RowMatrix<T>> A(acc, R, s.Dv);
  auto limit = [&](std::int64_t r) { return g.L - s.Tq + (r0 + r) % s.Tq; };
  std::int64_t reach = 0;  // the furthest key any row may see
  for (std::int64_t r = 0; r < R; ++r) reach = std::max(reach, limit(r));
  for (std::int64_t jb = j0; jb < std::min(j1, reach + 1); jb += kKeyBlock) {
    const std::int64_t n = std::min(kKeyBlock, j1 - jb);
    StridedRows<T> K(g.k + jb * s.ldk, n, s.Dk, Eigen::OuterStride<>(s.ldk));
    StridedRows<T> V(g.v + jb * s.ldv, n, s.Dv, Eigen::OuterStride<>(s.ldv));
    Eigen::Map<RowMatrix<T>> P(scores, R, n);
    P.noalias() = scale * (Q * K.transpose());
    for (std::int64_t r = 0; r < R; ++r) {
      T* p = scores + r * n;
      const std::int64_t last = std::min(n - 1, limit(r) - jb);  // inclusive
      T block_max = neg_inf;
      for (std::int64_t j = 0; j <= last; ++j) block_max = std::max(block_max, p[j]);
      const T m_new = std::max(m[r], block_max);
      if (m_new == neg_inf) {  // nothing visible yet
        std::fill(p, p + n, T(0));
        continue;
      }
      const T correction = std::exp(m[r] - m_new);
      T sum = 0;
      for (std::int64_t j = 0; j <= last; ++j) {
        p[j] = std::exp(p[j] - m_new);
        sum += p[j];
      }
      std::fill(p + std::max<std::int64_t>(last + 1, 0), p + n, T(0));
      l[r] = l[r] * correction + sum;
      m[r] = m_new;
      if (correction != T(1)) A.row(r) *= correction;
    }
    A.noalias() += P * V;
  }
}

/// Runs every group: tasks are (group, block of rows, range of keys). When groups and row
/// blocks are fewer than the threads (one decode row, one kv head), the keys are split into
/// ranges whose partial results are merged in a fixed order, so every thread streams a
/// different part of the cache; a given thread count always gives the same bits.
template <class T, class GroupAt>
void cached_attend(std::int64_t groups, const CachedLayout& s, std::int64_t max_len, T scale, GroupAt group_at) {
  const std::int64_t blocks = (s.rows + kRowBlock - 1) / kRowBlock;
  const std::int64_t threads = num_threads(), tasks = groups * blocks;
  std::int64_t splits = 1;
  if (tasks < threads) splits = std::clamp<std::int64_t>(max_len / (2 * kKeyBlock), 1, (threads + tasks - 1) / tasks);
  const std::int64_t stride = kRowBlock * (s.Dv + 2);  // one partial: acc, m, l
  T* partial = splits > 1 ? scratch<T, 1>(tasks * splits * stride) : nullptr;

#pragma omp parallel for schedule(static) collapse(3) if (groups * s.rows * max_len * s.Dk > kParallelGrain)
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      for (std::int64_t sp = 0; sp < splits; ++sp) {
        const CachedGroup<T> g = group_at(gi);
        const std::int64_t r0 = blk * kRowBlock, R = std::min(kRowBlock, s.rows - r0);
        const std::int64_t per = (g.L + splits - 1) / splits;
        const std::int64_t j0 = std::min(g.L, sp * per), j1 = std::min(g.L, j0 + per);
        T* acc = splits > 1 ? partial + ((gi * blocks + blk) * splits + sp) * stride : g.out + r0 * s.Dv;
        T* m = splits > 1 ? acc + R * s.Dv : scratch<T, 2>(2 * R);
        attend_range(g, s, scale, r0, R, j0, j1, acc, m, m + R);
        if (splits == 1) {
          for (std::int64_t r = 0; r < R; ++r) {
            const T inv = T(1) / m[R + r];
            for (std::int64_t c = 0; c < s.Dv; ++c) acc[r * s.Dv + c] *= inv;
          }
        }
      }
    }
  }
  if (splits == 1) return;
  // Merge the key ranges in order: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
#pragma omp parallel for schedule(static) collapse(2)
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const CachedGroup<T> g = group_at(gi);
      const std::int64_t r0 = blk * kRowBlock, R = std::min(kRowBlock, s.rows - r0);
      const T* first = partial + (gi * blocks + blk) * splits * stride;
      for (std::int64_t r = 0; r < R; ++r) {
        T M = -std::numeric_limits<T>::infinity();
        for (std::int64_t sp = 0; sp < splits; ++sp) M = std::max(M, first[sp * stride + R * s.Dv + r]);
        T* o = g.out + (r0 + r) * s.Dv;
        std::fill(o, o + s.Dv, T(0));
        T total = 0;
        for (std::int64_t sp = 0; sp < splits; ++sp) {
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
    }
  }
}

}  // namespace detail

/// Appends T new tokens per row: src [B, T, G, Dh] into cache [B, G, S, Dh] at slots
/// starts[b] .. starts[b] + T - 1 (a transposing copy).
template <class T>
void append_heads(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t G, std::int64_t S,
                  std::int64_t Dh, const T* src, const std::int64_t* starts, T* cache) {
#pragma omp parallel for schedule(static) collapse(2) if (B * Tn * G * Dh > mla::kernels::detail::kParallelGrain)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < Tn; ++t) {
      for (std::int64_t g = 0; g < G; ++g) {
        const T* from = src + ((b * Tn + t) * G + g) * Dh;
        std::copy(from, from + Dh, cache + ((b * G + g) * S + starts[b] + t) * Dh);
      }
    }
  }
}

/// Appends T new rows per batch row: src [B, T, W] into cache [B, S, W] at starts[b] + t.
template <class T>
void append_rows(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t S, std::int64_t W,
                 const T* src, const std::int64_t* starts, T* cache) {
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
#pragma omp parallel for schedule(static) collapse(2) if (B * Tn * H * N * Dc > mla::kernels::detail::kParallelGrain)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t h = 0; h < H; ++h) {
      // [T, N] rows of this head (stride H*Wq) times W_UK[h] [N, Dc] -> [T, Dc] (stride Wc)
      detail::StridedRows<T> q_nope(q + (b * Tn * H + h) * Wq, Tn, N, Eigen::OuterStride<>(H * Wq));
      Eigen::Map<const detail::RowMatrix<T>> w_uk(kv_b + h * (N + Dv) * Dc, N, Dc);
      T* out = q_cat + (b * H + h) * Tn * Wc;
      Eigen::Map<detail::RowMatrix<T>, 0, Eigen::OuterStride<>> lat(out, Tn, Dc, Eigen::OuterStride<>(Wc));
      lat.noalias() = q_nope * w_uk;
      for (std::int64_t t = 0; t < Tn; ++t) {
        const T* pe = q + ((b * Tn + t) * H + h) * Wq + N;
        std::copy(pe, pe + Dr, out + t * Wc + Dc);
      }
    }
  }
}

/// Applies W_UV after the latent attention: out[b, t, h] = W_UV[h] @ o_lat[b, h, t].
///   o_lat [B, H, T, Dc], kv_b [H * (N + Dv), Dc] -> out [B, T, H * Dv]
template <class T>
void absorb_output(Cpu, std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t N,
                   std::int64_t Dv, std::int64_t Dc, const T* o_lat, const T* kv_b, T* out) {
#pragma omp parallel for schedule(static) collapse(2) if (B * Tn * H * Dv * Dc > mla::kernels::detail::kParallelGrain)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t h = 0; h < H; ++h) {
      Eigen::Map<const detail::RowMatrix<T>> lat(o_lat + (b * H + h) * Tn * Dc, Tn, Dc);
      Eigen::Map<const detail::RowMatrix<T>> w_uv(kv_b + (h * (N + Dv) + N) * Dc, Dv, Dc);
      Eigen::Map<detail::RowMatrix<T>, 0, Eigen::OuterStride<>> o(out + (b * Tn * H + h) * Dv, Tn, Dv,
                                                                  Eigen::OuterStride<>(H * Dv));
      o.noalias() = lat * w_uv.transpose();
    }
  }
}

struct CachedAttentionShape {
  std::int64_t B, H, G, Tq, S, Dk, Dv;
};

/// Multi-head (MHA/GQA/MQA) cached attention.
///   q [B, H, Tq, Dk], k_cache [B, G, S, Dk], v_cache [B, G, S, Dv], lengths [B] -> out [B, H, Tq, Dv]
template <class T>
void cached_attention(Cpu, const CachedAttentionShape& s, T scale, const T* q, const T* k_cache,
                      const T* v_cache, const std::int64_t* lengths, T* out) {
  const std::int64_t Hg = s.H / s.G, rows = Hg * s.Tq;  // a kv head's query rows are contiguous
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < s.B; ++b) max_len = std::max(max_len, lengths[b]);
  const detail::CachedLayout layout{rows, s.Tq, s.Dk, s.Dk, s.Dk, s.Dv, s.Dv};
  detail::cached_attend<T>(s.B * s.G, layout, max_len, scale, [&](std::int64_t bg) {
    return detail::CachedGroup<T>{q + bg * rows * s.Dk, k_cache + bg * s.S * s.Dk, v_cache + bg * s.S * s.Dv,
                                  out + bg * rows * s.Dv, lengths[bg / s.G]};
  });
}

/// MLA attention in latent space (the absorbed form).
///   q_cat [B, H, Tq, Dc + Dr]: per head, [q_nope @ W_UK | rotated q_pe]
///   cache [B, S, Dc + Dr]:     per token, [c_kv (normed) | rotated k_pe]
///   out   [B, H, Tq, Dc]:      the attention-weighted sum of the cached latents
/// Scores are q_cat . cache_row (one GEMM for both parts); values are the latents themselves.
template <class T>
void latent_cached_attention(Cpu, std::int64_t B, std::int64_t H, std::int64_t Tq, std::int64_t S,
                             std::int64_t Dc, std::int64_t Dr, T scale, const T* q_cat,
                             const T* cache, const std::int64_t* lengths, T* out) {
  const std::int64_t W = Dc + Dr, rows = H * Tq;
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < B; ++b) max_len = std::max(max_len, lengths[b]);
  // Keys are whole cached rows [c_kv | k_pe]; values are their first Dc columns.
  const detail::CachedLayout layout{rows, Tq, W, W, W, Dc, W};
  detail::cached_attend<T>(B, layout, max_len, scale, [&](std::int64_t b) {
    return detail::CachedGroup<T>{q_cat + b * rows * W, cache + b * S * W, cache + b * S * W, out + b * rows * Dc,
                                  lengths[b]};
  });
}

}  // namespace mla::kernels
