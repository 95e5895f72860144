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
// Both kernels turn the work of one (row, kv head) into two small GEMMs that stream the cached
// rows once per block of queries: scores = Q K^T over every valid key, a masked softmax per
// query row, then P V. Blocks of query rows are independent tasks, so a single decode row with
// one kv head (MQA, MLA) still spreads over the threads.
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

/// Row-wise softmax of scores [R, L] in place, where row r may see keys 0..limit(r) only.
template <class T, class Limit>
void masked_softmax_rows(T* scores, std::int64_t R, std::int64_t L, Limit limit) {
  for (std::int64_t r = 0; r < R; ++r) {
    T* s = scores + r * L;
    const std::int64_t last = limit(r);  // inclusive
    T m = -std::numeric_limits<T>::infinity();
    for (std::int64_t j = 0; j <= last; ++j) m = std::max(m, s[j]);
    T sum = 0;
    for (std::int64_t j = 0; j <= last; ++j) {
      s[j] = std::exp(s[j] - m);
      sum += s[j];
    }
    const T inv = T(1) / sum;
    for (std::int64_t j = 0; j <= last; ++j) s[j] *= inv;
    for (std::int64_t j = last + 1; j < L; ++j) s[j] = T(0);
  }
}

/// Scratch for one thread's scores, grown as needed and kept: no allocation in steady state.
template <class T>
T* score_scratch(std::int64_t n) {
  thread_local std::vector<T> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
  return buffer.data();
}

/// Splits `rows` query rows of each of `groups` groups into blocks so that there are at least
/// as many tasks as threads when the groups alone are too few.
inline std::int64_t rows_per_block(std::int64_t groups, std::int64_t rows) {
  const std::int64_t threads = num_threads();
  std::int64_t blocks = std::max<std::int64_t>(1, (threads + groups - 1) / groups);
  blocks = std::min(blocks, rows);
  return std::min<std::int64_t>(64, (rows + blocks - 1) / blocks);
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
  const std::int64_t Hg = s.H / s.G, rows = Hg * s.Tq;  // one group's query rows are contiguous
  const std::int64_t block = detail::rows_per_block(s.B * s.G, rows);
  const std::int64_t blocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(static) collapse(2)
  for (std::int64_t bg = 0; bg < s.B * s.G; ++bg) {
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::int64_t b = bg / s.G;
      const std::int64_t L = lengths[b];
      const std::int64_t r0 = blk * block, R = std::min(block, rows - r0);
      const std::int64_t q_row0 = (bg * rows + r0);  // (b, g*Hg, 0) + r0 in [B, H, Tq] rows
      Eigen::Map<const detail::RowMatrix<T>> Q(q + q_row0 * s.Dk, R, s.Dk);
      Eigen::Map<const detail::RowMatrix<T>> K(k_cache + bg * s.S * s.Dk, L, s.Dk);
      Eigen::Map<const detail::RowMatrix<T>> V(v_cache + bg * s.S * s.Dv, L, s.Dv);
      Eigen::Map<detail::RowMatrix<T>> P(detail::score_scratch<T>(R * L), R, L);
      Eigen::Map<detail::RowMatrix<T>> O(out + q_row0 * s.Dv, R, s.Dv);
      P.noalias() = scale * (Q * K.transpose());
      detail::masked_softmax_rows(P.data(), R, L,
                                  [&](std::int64_t r) { return L - s.Tq + (r0 + r) % s.Tq; });
      O.noalias() = P * V;
    }
  }
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
  const std::int64_t block = detail::rows_per_block(B, rows);
  const std::int64_t blocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(static) collapse(2)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::int64_t L = lengths[b];
      const std::int64_t r0 = blk * block, R = std::min(block, rows - r0);
      Eigen::Map<const detail::RowMatrix<T>> Q(q_cat + (b * rows + r0) * W, R, W);
      Eigen::Map<const detail::RowMatrix<T>> C(cache + b * S * W, L, W);
      detail::StridedRows<T> latents(cache + b * S * W, L, Dc, Eigen::OuterStride<>(W));
      Eigen::Map<detail::RowMatrix<T>> P(detail::score_scratch<T>(R * L), R, L);
      Eigen::Map<detail::RowMatrix<T>> O(out + (b * rows + r0) * Dc, R, Dc);
      P.noalias() = scale * (Q * C.transpose());
      detail::masked_softmax_rows(P.data(), R, L,
                                  [&](std::int64_t r) { return L - Tq + (r0 + r) % Tq; });
      O.noalias() = P * latents;
    }
  }
}

}  // namespace mla::kernels
