// mla/backend/cuda/cached_attention.hpp — attention of new queries over a KV cache
// (inference) on the Thrust/CUDA device: appending to the caches, MLA's weight absorption, and
// the cached attention itself. The CPU's kernels are in mla/backend/cpu/cached_attention.hpp.
//
// Legend: B batch rows, H query heads, G kv heads (H/G heads share one), Tq (Tn) new queries
// (tokens) per row, S cache capacity (slots), L keys valid in a row, Dh cached head dim, Dk/Dv
// key/value head dims, N no-rope query/key head dim of MLA, Dc latent rank, Dr decoupled-RoPE
// dim, W width of a cached row.
//
// Row b holds L_b = lengths[b] <= S valid keys (the new tokens already appended); its query i
// sits at position L_b - Tq + i and sees keys 0..L_b - Tq + i. Used for a decode step (Tq = 1)
// and for prefilling a chunk of a prompt on top of what is cached (Tq > 1). The per-row
// positions (starts, lengths) are int32 arrays in device memory, so a decode step reads no
// device memory from the host; max_len (the largest length) comes from the host, which knows it.
//
// Design (the portable first version): one work item per output element for the copies and
// the absorption products (a dot product in a loop), one per query row (b, h, i) for the
// attention, which walks the row's visible keys in order with an online softmax and
// accumulates its output row in place (cuda_attention_detail::attend_row, shared with the
// training forward in attention.hpp). No shared memory, so the same functors run as CUDA
// threads and as OpenMP iterations on the host; no call allocates, so a warm decode step
// allocates nothing here. Each row's keys are read by each of its query rows separately: the
// CPU kernel's sharing of a cached block by the H/G heads of a group, and its key split over
// the threads (flash decoding), are left to a tiled version.
#pragma once

#include <cstdint>

#include "mla/backend/cuda/attention.hpp"
#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_attention_detail {

/// cache[b, g, starts[b] + t, :] = src[b, t, g, :], one work item per element of src.
template <class T>
struct AppendHeadsElement {
  std::int64_t Tn, G, S, Dh;
  const T* src;                // [B, Tn, G, Dh]
  const std::int32_t* starts;  // [B]
  T* cache;                    // [B, G, S, Dh]

  MLA_HD void operator()(std::int64_t e) const {
    const std::int64_t d = e % Dh, btg = e / Dh, g = btg % G, bt = btg / G;
    const std::int64_t b = bt / Tn, t = bt % Tn;
    cache[((b * G + g) * S + starts[b] + t) * Dh + d] = src[e];
  }
};

/// cache[b, starts[b] + t, :] = src[b, t, :], one work item per element of src.
template <class T>
struct AppendRowsElement {
  std::int64_t Tn, S, W;
  const T* src;                // [B, Tn, W]
  const std::int32_t* starts;  // [B]
  T* cache;                    // [B, S, W]

  MLA_HD void operator()(std::int64_t e) const {
    const std::int64_t w = e % W, bt = e / W, b = bt / Tn, t = bt % Tn;
    cache[(b * S + starts[b] + t) * W + w] = src[e];
  }
};

/// Element (b, h, t, c) of q_cat [B, H, Tn, Dc + Dr]: q_nope[b, t, h] . W_UK[h][:, c] for
/// c < Dc, q_pe[b, t, h, c - Dc] after.
template <class T>
struct AbsorbQueryElement {
  std::int64_t Tn, H, N, Dr, Dv, Dc;
  const T* q;     // [B, Tn, H, N + Dr]
  const T* kv_b;  // [H * (N + Dv), Dc]
  T* q_cat;       // [B, H, Tn, Dc + Dr]

  MLA_HD void operator()(std::int64_t e) const {
    const std::int64_t Wc = Dc + Dr, c = e % Wc, bht = e / Wc, t = bht % Tn, bh = bht / Tn;
    const std::int64_t b = bh / H, h = bh % H;
    const T* row = q + ((b * Tn + t) * H + h) * (N + Dr);  // [q_nope (N) | q_pe (Dr)]
    if (c >= Dc) {
      q_cat[e] = row[N + c - Dc];
      return;
    }
    const T* w_uk = kv_b + h * (N + Dv) * Dc + c;  // column c of W_UK[h] [N, Dc]
    T acc = 0;
    for (std::int64_t n = 0; n < N; ++n) acc += row[n] * w_uk[n * Dc];
    q_cat[e] = acc;
  }
};

/// Element (b, t, h * Dv + e) of out [B, Tn, H * Dv]: W_UV[h][e, :] . o_lat[b, h, t].
template <class T>
struct AbsorbOutputElement {
  std::int64_t Tn, H, N, Dv, Dc;
  const T* o_lat;  // [B, H, Tn, Dc]
  const T* kv_b;   // [H * (N + Dv), Dc]
  T* out;          // [B, Tn, H * Dv]

  MLA_HD void operator()(std::int64_t e) const {
    const std::int64_t ev = e % Dv, bth = e / Dv, h = bth % H, bt = bth / H;
    const std::int64_t b = bt / Tn, t = bt % Tn;
    out[e] = dot(o_lat + ((b * H + h) * Tn + t) * Dc, kv_b + (h * (N + Dv) + N + ev) * Dc, Dc);
  }
};

/// Query row r = (b * H + h) * Tq + i of cached_attention: out's row over the keys of kv head
/// b * G + h / (H/G) that it sees; zeros when it sees none (L_b < Tq, not a valid call).
template <class T>
struct CachedRow {
  CachedAttentionShape s;
  T scale;
  const T* q;                   // [B, H, Tq, Dk]
  const T* k_cache;             // [B, G, S, Dk]
  const T* v_cache;             // [B, G, S, Dv]
  const std::int32_t* lengths;  // [B]
  T* out;                       // [B, H, Tq, Dv]

  MLA_HD void operator()(std::int64_t r) const {
    const std::int64_t bh = r / s.Tq, b = bh / s.H, h = bh % s.H;
    const std::int64_t bg = b * s.G + h / (s.H / s.G);
    const std::int64_t seen = lengths[b] - s.Tq + r % s.Tq + 1;
    T* o = out + r * s.Dv;
    if (seen <= 0) {
      for (std::int64_t d = 0; d < s.Dv; ++d) o[d] = T(0);
      return;
    }
    attend_row(q + r * s.Dk, k_cache + bg * s.S * s.Dk, s.Dk, s.Dk, v_cache + bg * s.S * s.Dv,
               s.Dv, s.Dv, seen, scale, o);
  }
};

/// Query row r = (b * H + h) * Tq + i of latent_cached_attention: scores over whole cached
/// rows [c_kv | k_pe] (W = Dc + Dr), values their first Dc columns; zeros when it sees none.
template <class T>
struct LatentCachedRow {
  std::int64_t H, Tq, S, Dc, Dr;
  T scale;
  const T* q_cat;               // [B, H, Tq, Dc + Dr]
  const T* cache;               // [B, S, Dc + Dr]
  const std::int32_t* lengths;  // [B]
  T* out;                       // [B, H, Tq, Dc]

  MLA_HD void operator()(std::int64_t r) const {
    const std::int64_t W = Dc + Dr, b = r / (H * Tq);
    const std::int64_t seen = lengths[b] - Tq + r % Tq + 1;
    T* o = out + r * Dc;
    if (seen <= 0) {
      for (std::int64_t d = 0; d < Dc; ++d) o[d] = T(0);
      return;
    }
    const T* rows = cache + b * S * W;
    attend_row(q_cat + r * W, rows, W, W, rows, W, Dc, seen, scale, o);
  }
};

}  // namespace cuda_attention_detail

/// Appends Tn new tokens per row: src [B, Tn, G, Dh] into cache [B, G, S, Dh] at slots
/// starts[b] .. starts[b] + Tn - 1 (a transposing copy). starts [B] is in device memory.
template <class T>
void append_heads(Cuda, std::int64_t B, std::int64_t Tn, std::int64_t G, std::int64_t S,
                  std::int64_t Dh, const T* src, const std::int32_t* starts, T* cache) {
  cuda_detail::for_each_index(
      "append_heads", B * Tn * G * Dh,
      cuda_attention_detail::AppendHeadsElement<T>{Tn, G, S, Dh, src, starts, cache});
}

/// Appends Tn new rows per batch row: src [B, Tn, W] into cache [B, S, W] at starts[b] + t.
/// starts [B] is in device memory.
template <class T>
void append_rows(Cuda, std::int64_t B, std::int64_t Tn, std::int64_t S, std::int64_t W,
                 const T* src, const std::int32_t* starts, T* cache) {
  cuda_detail::for_each_index(
      "append_rows", B * Tn * W,
      cuda_attention_detail::AppendRowsElement<T>{Tn, S, W, src, starts, cache});
}

/// Folds W_UK into the query: q_cat[b, h, t] = [q_nope[b, t, h] @ W_UK[h] | q_pe[b, t, h]].
///   q [B, Tn, H, N + Dr], kv_b [H * (N + Dv), Dc] (per head: N rows of W_UK, then Dv of W_UV)
///   -> q_cat [B, H, Tn, Dc + Dr]
template <class T>
void absorb_query(Cuda, std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t N,
                  std::int64_t Dr, std::int64_t Dv, std::int64_t Dc, const T* q, const T* kv_b,
                  T* q_cat) {
  cuda_detail::for_each_index(
      "absorb_query", B * H * Tn * (Dc + Dr),
      cuda_attention_detail::AbsorbQueryElement<T>{Tn, H, N, Dr, Dv, Dc, q, kv_b, q_cat});
}

/// Applies W_UV after the latent attention: out[b, t, h] = W_UV[h] @ o_lat[b, h, t].
///   o_lat [B, H, Tn, Dc], kv_b [H * (N + Dv), Dc] -> out [B, Tn, H * Dv]
template <class T>
void absorb_output(Cuda, std::int64_t B, std::int64_t Tn, std::int64_t H, std::int64_t N,
                   std::int64_t Dv, std::int64_t Dc, const T* o_lat, const T* kv_b, T* out) {
  cuda_detail::for_each_index(
      "absorb_output", B * Tn * H * Dv,
      cuda_attention_detail::AbsorbOutputElement<T>{Tn, H, N, Dv, Dc, o_lat, kv_b, out});
}

/// Multi-head (MHA/GQA/MQA) cached attention.
///   q [B, H, Tq, Dk], k_cache [B, G, S, Dk], v_cache [B, G, S, Dv], lengths [B] (device)
///   -> out [B, H, Tq, Dv]
/// max_len (max of lengths, from the host) is not needed by this version, whose work items
/// each read their row's length; it sizes the key split of a flash-decoding kernel.
template <class T>
void cached_attention(Cuda, const CachedAttentionShape& s, T scale, const T* q, const T* k_cache,
                      const T* v_cache, const std::int32_t* lengths, std::int64_t max_len, T* out) {
  (void)max_len;
  cuda_detail::for_each_index(
      "cached_attention", s.B * s.H * s.Tq,
      cuda_attention_detail::CachedRow<T>{s, scale, q, k_cache, v_cache, lengths, out});
}

/// MLA attention in latent space (the absorbed form).
///   q_cat [B, H, Tq, Dc + Dr]: per head, [q_nope @ W_UK | rotated q_pe]
///   cache [B, S, Dc + Dr]:     per token, [c_kv (normed) | rotated k_pe]
///   lengths [B] (device), max_len as for cached_attention (unused here)
///   out   [B, H, Tq, Dc]:      the attention-weighted sum of the cached latents
/// Scores are scale * q_cat . cache_row (one dot product over both parts); values are the
/// latents themselves.
template <class T>
void latent_cached_attention(Cuda, std::int64_t B, std::int64_t H, std::int64_t Tq, std::int64_t S,
                             std::int64_t Dc, std::int64_t Dr, T scale, const T* q_cat,
                             const T* cache, const std::int32_t* lengths, std::int64_t max_len,
                             T* out) {
  (void)max_len;
  cuda_detail::for_each_index(
      "latent_cached_attention", B * H * Tq,
      cuda_attention_detail::LatentCachedRow<T>{H, Tq, S, Dc, Dr, scale, q_cat, cache, lengths,
                                                out});
}

}  // namespace mla::kernels
