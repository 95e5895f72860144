// mla/backend/cpu/attention.hpp — causal scaled-dot-product attention, flash-style: tiled,
// with an online softmax, never storing the Tq x Tk score matrix. The slow reference it is
// tested against lives in attention_reference.hpp (which also defines AttentionShape).
//
// Legend: B batch, H query heads, G kv heads (H % G == 0; query head h reads kv head
// h / (H/G): MHA G = H, GQA 1 < G < H, MQA G = 1), Tq queries, Tk keys (Tq <= Tk),
// Dk query/key head dim, Dv value head dim, Br x Bc the query x key tile.
//
//   q [B, H, Tq, Dk], k [B, G, Tk, Dk], v [B, G, Tk, Dv] -> o [B, H, Tq, Dv], lse [B, H, Tq]
//   Query row i sits at absolute position p = Tk - Tq + i and sees keys j <= p, so Tq == Tk is
//   training and Tq < Tk is prefill or decoding against a longer cache.
//
// Forward. For each (b, h) and each tile of Br query rows, walk the key tiles of Bc keys in
// order, skipping those wholly after the tile's last position (fully masked). Per tile:
//   S = scale * Q K^T                              [Br, Bc], one GEMM
//   m' = max(m, rowmax S)   P = exp(S - m')        masked keys (j > p) get P = 0
//   l = l * exp(m - m') + rowsum P                 the running softmax denominator
//   O = O * exp(m - m') + P V                      [Br, Dv], one GEMM, rescaled in place
// and finally O /= l, lse = m + log l. The forward saves only lse (the op also keeps O).
//
// Backward. With Drow = rowsum(dO * O) [Tq] (which equals rowsum(P * dP)), per block of
// (query tile, key tile) P is recomputed exactly as exp(S - lse), then
//   dV += P^T dO     dP = dO V^T     dS = scale * P * (dP - Drow)
//   dK += dS^T Q     dQ += dS K                      five GEMMs per block in all.
// One task per (b, g) handles every query head of its group, so the dK, dV rows of a kv head
// are written by one thread: no atomics, and each gradient element is summed in one fixed
// order (key tiles ascending for dQ; heads, then query tiles ascending for dK and dV). When
// there are too few (b, g) tasks for the threads (MQA with B = 1), the same blocks run as two
// passes instead — tasks (b, g, key tile) for dK, dV, then (b, h, query tile) for dQ — which
// recomputes S and dP (seven GEMMs a block) but adds in the same order: the gradients are
// bit-identical whichever way, and so do not depend on the thread count.
//
// Memory. The reference materializes P [Tq, Tk] per (b, h), and an unfused graph would keep
// S and P for all of [B, H, Tq, Tk] until backward: for B=8, H=8, T=1024 in float that is
// 256 MiB each. Here the forward keeps lse [B, H, Tq] (256 KiB for that case) and each thread
// two Br x Bc tiles (64 KiB each at 128 x 128 in float), allocated on its first call and kept,
// so a steady-state step allocates nothing; backward adds Drow [B, H, Tq] (caller's scratch).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include <Eigen/Core>

#include "mla/backend/cpu/attention_reference.hpp"
#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/exp.hpp"
#include "mla/backend/cpu/gemm.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla::kernels {
namespace detail {

/// Query rows (Br) and keys (Bc) per tile. Larger tiles amortize the packing of each small
/// GEMM; on an AVX-512 core 128 x 128 ran about 15% faster than 64 x 64 forward at T = 512
/// (D = 64, float) and the same at T <= 128, where it computes more masked scores. The tile
/// products run on kernels::gemm, one thread each (the tasks are the parallel loop): for float,
/// on the register-tile kernel gemm_kernel() chose (AVX-512's at T = 256, D = 32, one thread:
/// forward 4%, backward 9% faster than on Eigen's products).
inline constexpr std::int64_t kAttentionTileQ = 128;
inline constexpr std::int64_t kAttentionTileK = 128;

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// One thread's scratch, 64-byte aligned, so that the vectorized loops over it split the same
/// way on every thread and in every pass. Each thread allocates its tiles once, on its first
/// attention call (thread_tiles), and keeps them for the next calls.
template <class T>
struct AttentionTiles {
  static constexpr std::size_t padded(std::int64_t n) {
    return (static_cast<std::size_t>(n) * sizeof(T) + 63) / 64 * 64;
  }
  static constexpr std::size_t kTile = padded(kAttentionTileQ * kAttentionTileK);
  static constexpr std::size_t kRow = padded(kAttentionTileQ);

  AttentionTiles() : block(Cpu::allocate(2 * kTile + 2 * kRow)) {
    std::byte* base = block.get();
    s = reinterpret_cast<T*>(base);
    ds = reinterpret_cast<T*>(base + kTile);
    m = reinterpret_cast<T*>(base + 2 * kTile);
    l = reinterpret_cast<T*>(base + 2 * kTile + kRow);
  }

  std::shared_ptr<std::byte> block;
  T* s;   // [Br, Bc] scores S, then probabilities P
  T* ds;  // [Br, Bc] dP, then dS (backward)
  T* m;   // [Br] running row max (forward)
  T* l;   // [Br] running row sum (forward)
};

/// This thread's tiles: allocated on its first use, then kept (no allocation per call).
template <class T>
AttentionTiles<T>& thread_tiles() {
  thread_local AttentionTiles<T> w;
  return w;
}

/// task(i, tiles) for every i in [0, n), each thread with its own tiles: shared out over the
/// threads when `parallel` and a region would fork (one task at a time with `dynamic`, else a
/// static schedule), in order on this thread otherwise. No region is entered that would run on
/// one thread (see can_fork).
template <class T, class F>
void for_each_task(std::int64_t n, bool parallel, bool dynamic, F&& task) {
#if defined(_OPENMP)
  if (parallel && can_fork()) {
#pragma omp parallel
    {
      AttentionTiles<T>& w = thread_tiles<T>();
      if (dynamic) {
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t i = 0; i < n; ++i) task(i, w);
      } else {
#pragma omp for schedule(static)
        for (std::int64_t i = 0; i < n; ++i) task(i, w);
      }
    }
    return;
  }
#endif
  AttentionTiles<T>& w = thread_tiles<T>();
  for (std::int64_t i = 0; i < n; ++i) task(i, w);
}

/// row[j] = exp(row[j] - shift) for the `seen` keys of a row of `nc` scores, 0 for the masked
/// rest. On Eigen's exp (not wide_exp) the exponentials run in whole vectors past `seen` where
/// the row has room (the masked scores' values are then overwritten): Eigen computes a partial
/// vector's lanes one by one, through libm, and a causal tile's rows end anywhere.
template <class T>
void exp_shifted(T* row, std::int64_t seen, std::int64_t nc, T shift) {
  if (wide_exp<T>()) {
    exp_row(row, shift, row, seen);
  } else {
    constexpr std::int64_t kLanes = Eigen::internal::packet_traits<T>::size;
    const std::int64_t whole = std::min(nc, (seen + kLanes - 1) / kLanes * kLanes);
    ArrayMap<T> scores(row, whole);
    scores = (scores - shift).exp();
  }
  std::fill(row + seen, row + nc, T(0));
}

/// How many keys of a key tile [j0, j0 + nc) the query at position `pos` sees.
inline std::int64_t keys_seen(std::int64_t pos, std::int64_t j0, std::int64_t nc) {
  return std::clamp<std::int64_t>(pos - j0 + 1, 0, nc);
}

/// Forward of query tile `it` of head `bh` = b * H + h: o rows and lse (if not null).
template <class T>
void attention_forward_tile(const AttentionShape& s, T scale, std::int64_t bh, std::int64_t it,
                            const T* q, const T* k, const T* v, T* o, T* lse,
                            AttentionTiles<T>& w) {
  const std::int64_t bg = (bh / s.H) * s.G + (bh % s.H) / s.group();
  const std::int64_t i0 = it * kAttentionTileQ, nr = std::min(kAttentionTileQ, s.Tq - i0);
  const std::int64_t row0 = bh * s.Tq + i0;          // first row of the tile in [B*H*Tq]
  const std::int64_t pos0 = s.offset() + i0;         // its absolute position
  const std::int64_t kend = pos0 + nr;               // keys [0, kend) are seen by some row
  const T* kg = k + bg * s.Tk * s.Dk;                // [Tk, Dk]
  const T* vg = v + bg * s.Tk * s.Dv;                // [Tk, Dv]
  const T* Q = q + row0 * s.Dk;                      // [nr, Dk]
  RowMajorMap<T> O(o + row0 * s.Dv, nr, s.Dv);       // [nr, Dv], unnormalized until the end
  O.setZero();
  std::fill(w.m, w.m + nr, -std::numeric_limits<T>::infinity());
  std::fill(w.l, w.l + nr, T(0));

  for (std::int64_t j0 = 0; j0 < kend; j0 += kAttentionTileK) {
    const std::int64_t nc = std::min(kAttentionTileK, kend - j0);
    gemm(Cpu{}, Transpose::No, Transpose::Yes, nr, nc, s.Dk, scale, Q, kg + j0 * s.Dk, T(0), w.s);  // S [nr, nc]
    const bool masked = j0 + nc - 1 > pos0;  // some key lies after the first row's position
    for (std::int64_t r = 0; r < nr; ++r) {
      T* sr = w.s + r * nc;
      const std::int64_t seen = masked ? keys_seen(pos0 + r, j0, nc) : nc;
      if (seen == 0) {
        std::fill(sr, sr + nc, T(0));
        continue;
      }
      ArrayMap<T> row(sr, seen);
      const T m_new = std::max(w.m[r], row.maxCoeff());
      exp_shifted(sr, seen, nc, m_new);
      const T alpha = std::exp(w.m[r] - m_new);  // rescales what was summed so far
      w.l[r] = w.l[r] * alpha + row.sum();
      w.m[r] = m_new;
      if (alpha != T(1)) O.row(r) *= alpha;
    }
    gemm(Cpu{}, Transpose::No, Transpose::No, nr, s.Dv, nc, T(1), w.s, vg + j0 * s.Dv, T(1), O.data());
  }
  for (std::int64_t r = 0; r < nr; ++r) {
    O.row(r) *= T(1) / w.l[r];
    if (lse) lse[row0 + r] = w.m[r] + std::log(w.l[r]);
  }
}

/// Backward of one block: query tile starting at row i0 of head bh, key tile starting at key
/// j0 of kv head bg. Adds into whichever of dq, dk, dv is not null.
template <class T>
void attention_backward_block(const AttentionShape& s, T scale, std::int64_t bh, std::int64_t bg,
                              std::int64_t i0, std::int64_t j0, const T* q, const T* k, const T* v,
                              const T* dout, const T* lse, const T* drow, T* dq, T* dk, T* dv,
                              AttentionTiles<T>& w) {
  const std::int64_t nr = std::min(kAttentionTileQ, s.Tq - i0);
  const std::int64_t nc = std::min(kAttentionTileK, s.Tk - j0);
  const std::int64_t row0 = bh * s.Tq + i0, key0 = bg * s.Tk + j0, pos0 = s.offset() + i0;
  const T* Q = q + row0 * s.Dk;      // [nr, Dk]
  const T* dO = dout + row0 * s.Dv;  // [nr, Dv]
  const T* K = k + key0 * s.Dk;      // [nc, Dk]
  const T* V = v + key0 * s.Dv;      // [nc, Dv]

  gemm(Cpu{}, Transpose::No, Transpose::Yes, nr, nc, s.Dk, scale, Q, K, T(0), w.s);  // P [nr, nc]
  const bool masked = j0 + nc - 1 > pos0;
  for (std::int64_t r = 0; r < nr; ++r) {
    T* pr = w.s + r * nc;
    exp_shifted(pr, masked ? keys_seen(pos0 + r, j0, nc) : nc, nc, lse[row0 + r]);
  }
  if (dv) gemm(Cpu{}, Transpose::Yes, Transpose::No, nc, s.Dv, nr, T(1), w.s, dO, T(1), dv + key0 * s.Dv);
  if (!dq && !dk) return;

  gemm(Cpu{}, Transpose::No, Transpose::Yes, nr, nc, s.Dv, T(1), dO, V, T(0), w.ds);  // dP [nr, nc]
  for (std::int64_t r = 0; r < nr; ++r) {
    ArrayMap<T> dsr(w.ds + r * nc, nc);
    dsr = scale * ArrayMap<T>(w.s + r * nc, nc) * (dsr - drow[row0 + r]);
  }
  if (dk) gemm(Cpu{}, Transpose::Yes, Transpose::No, nc, s.Dk, nr, T(1), w.ds, Q, T(1), dk + key0 * s.Dk);
  if (dq) gemm(Cpu{}, Transpose::No, Transpose::No, nr, s.Dk, nc, T(1), w.ds, K, T(1), dq + row0 * s.Dk);
}

/// Every block whose keys start at j0 in kv head bg: the query heads of the group in order,
/// each over the query tiles that see key j0, in order.
template <class T>
void attention_backward_key_tile(const AttentionShape& s, T scale, std::int64_t bg, std::int64_t j0,
                                 const T* q, const T* k, const T* v, const T* dout, const T* lse,
                                 const T* drow, T* dq, T* dk, T* dv, AttentionTiles<T>& w) {
  const std::int64_t b = bg / s.G, g = bg % s.G;
  // Query row i sees key j0 when offset + i >= j0.
  const std::int64_t first = std::max<std::int64_t>(0, j0 - s.offset()) / kAttentionTileQ;
  for (std::int64_t hh = 0; hh < s.group(); ++hh) {
    const std::int64_t bh = b * s.H + g * s.group() + hh;
    for (std::int64_t i0 = first * kAttentionTileQ; i0 < s.Tq; i0 += kAttentionTileQ) {
      attention_backward_block(s, scale, bh, bg, i0, j0, q, k, v, dout, lse, drow, dq, dk, dv, w);
    }
  }
}

/// Whether one task per (b, g) keeps the threads busy enough to beat the two-pass split,
/// which does 7/5 of the work but balances perfectly.
inline bool fused_backward_pays(std::int64_t tasks, std::int64_t threads) {
  if (threads <= 1) return true;
  const std::int64_t rounds = (tasks + threads - 1) / threads;
  return tasks * 7 >= rounds * threads * 5;
}

}  // namespace detail

/// o = softmax(scale * q k^T, causal) v; saves lse [B, H, Tq] for the backward when `lse` is
/// not null. Tasks are (b, h, query tile), the longest (last) query tiles first.
template <class T>
void attention_forward(Cpu, const AttentionShape& s, T scale, const T* q, const T* k, const T* v,
                       T* o, T* lse) {
  const std::int64_t n_qt = (s.Tq + detail::kAttentionTileQ - 1) / detail::kAttentionTileQ;
  const std::int64_t BH = s.B * s.H, n_tasks = BH * n_qt;
  const std::int64_t work = BH * s.Tq * s.Tk * (s.Dk + s.Dv);  // a bound on the multiply-adds
  auto query_tile = [&](std::int64_t task, detail::AttentionTiles<T>& w) {
    const std::int64_t it = n_qt - 1 - task / BH, bh = task % BH;
    detail::attention_forward_tile(s, scale, bh, it, q, k, v, o, lse, w);
  };
  detail::for_each_task<T>(n_tasks, work > detail::kParallelGrain, true, query_tile);
}

/// Elements of the `drow` scratch attention_backward needs: Drow [B, H, Tq], or 0 when only
/// dv is wanted.
inline std::int64_t attention_backward_scratch(Cpu, const AttentionShape& s, bool dq_or_dk) {
  return dq_or_dk ? s.B * s.H * s.Tq : 0;
}

/// dq, dk, dv += the gradients of attention_forward given dout [B, H, Tq, Dv], its output o and
/// saved lse. Any of dq, dk, dv may be null (no gradient wanted). `drow` holds
/// attention_backward_scratch(s, dq || dk) elements. Deterministic: the result does not depend
/// on the thread count.
template <class T>
void attention_backward(Cpu, const AttentionShape& s, T scale, const T* q, const T* k, const T* v,
                        const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv, T* drow) {
  const bool want_kv = dk != nullptr || dv != nullptr;
  if (!dq && !want_kv) return;
  const std::int64_t BH = s.B * s.H, BG = s.B * s.G, rows = BH * s.Tq;
  const std::int64_t work = BH * s.Tq * s.Tk * (s.Dk + s.Dv);
  const bool parallel = work > detail::kParallelGrain;

  // Drow [B, H, Tq] = rowsum(dout * o), the softmax backward's per-row term (not needed when
  // only dv is wanted).
  if (dq || dk) {
    detail::parallel_for(rows, rows * s.Dv > detail::kParallelGrain, [&](std::int64_t r) {
      const T* g = dout + r * s.Dv;
      const T* y = o + r * s.Dv;
      T acc = 0;
      for (std::int64_t d = 0; d < s.Dv; ++d) acc += g[d] * y[d];
      drow[r] = acc;
    });
  }
  const T* dr = drow;
  const std::int64_t n_qt = (s.Tq + detail::kAttentionTileQ - 1) / detail::kAttentionTileQ;
  const std::int64_t n_kt = (s.Tk + detail::kAttentionTileK - 1) / detail::kAttentionTileK;

  if (dq && want_kv && (!parallel || detail::fused_backward_pays(BG, num_threads()))) {
    // One task per (b, g): it owns dk, dv of its kv head and dq of its group's query heads.
    auto group = [&](std::int64_t bg, detail::AttentionTiles<T>& w) {
      for (std::int64_t j0 = 0; j0 < s.Tk; j0 += detail::kAttentionTileK) {
        detail::attention_backward_key_tile(s, scale, bg, j0, q, k, v, dout, lse, dr, dq, dk, dv,
                                            w);
      }
    };
    detail::for_each_task<T>(BG, parallel, false, group);
    return;
  }
  if (want_kv) {  // pass 1: tasks (b, g, key tile), key tile 0 (seen by every row) first
    auto key_tile = [&](std::int64_t task, detail::AttentionTiles<T>& w) {
      const std::int64_t j0 = task / BG * detail::kAttentionTileK, bg = task % BG;
      detail::attention_backward_key_tile(s, scale, bg, j0, q, k, v, dout, lse, dr,
                                          static_cast<T*>(nullptr), dk, dv, w);
    };
    detail::for_each_task<T>(BG * n_kt, parallel, true, key_tile);
  }
  if (dq) {  // pass 2: tasks (b, h, query tile), the last query tile (most keys) first
    auto query_tile = [&](std::int64_t task, detail::AttentionTiles<T>& w) {
      const std::int64_t it = n_qt - 1 - task / BH, bh = task % BH;
      const std::int64_t bg = (bh / s.H) * s.G + (bh % s.H) / s.group();
      const std::int64_t i0 = it * detail::kAttentionTileQ;
      const std::int64_t kend = s.offset() + std::min(s.Tq, i0 + detail::kAttentionTileQ);
      for (std::int64_t j0 = 0; j0 < kend; j0 += detail::kAttentionTileK) {
        detail::attention_backward_block(s, scale, bh, bg, i0, j0, q, k, v, dout, lse, dr, dq,
                                         static_cast<T*>(nullptr), static_cast<T*>(nullptr), w);
      }
    };
    detail::for_each_task<T>(BH * n_qt, parallel, true, query_tile);
  }
}

/// attention_backward with its scratch allocated here (the op passes one from the tape).
template <class T>
void attention_backward(Cpu cpu, const AttentionShape& s, T scale, const T* q, const T* k,
                        const T* v, const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  std::vector<T> drow(static_cast<std::size_t>(attention_backward_scratch(cpu, s, dq || dk)));
  attention_backward(cpu, s, scale, q, k, v, o, lse, dout, dq, dk, dv, drow.data());
}

}  // namespace mla::kernels
