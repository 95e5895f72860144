// mla/backend/cuda/attention.hpp — causal scaled-dot-product attention on the Thrust/CUDA
// device: the portable first version, one work item per row, no shared memory. The CPU's
// tiled kernels are in mla/backend/cpu/attention.hpp; both are tested against the reference
// in mla/backend/cpu/attention_reference.hpp.
//
// Legend: B batch, H query heads, G kv heads (H % G == 0; query head h reads kv head
// h / (H/G): MHA G = H, GQA 1 < G < H, MQA G = 1), Tq queries, Tk keys (Tq <= Tk),
// Dk query/key head dim, Dv value head dim (Dk != Dv for MLA).
//
//   q [B, H, Tq, Dk], k [B, G, Tk, Dk], v [B, G, Tk, Dv] -> o [B, H, Tq, Dv], lse [B, H, Tq]
//   Query row i sits at absolute position p = Tk - Tq + i and sees keys j <= p, so Tq == Tk is
//   training and Tq < Tk is prefill against a longer cache.
//
// Forward. One work item per query row (b, h, i) walks the keys it sees in order with an
// online softmax (running max m and sum l), accumulating the unnormalized output straight into
// its row of o; when a score raises the max, what was summed is rescaled by e^(m - m'). At the
// end o /= l and lse = m + log l. The Tq x Tk matrix is never stored; the forward saves lse.
//
// Backward. With Drow = rowsum(dO * O) [B, H, Tq] (which equals rowsum(P * dP)), each
// probability is recomputed exactly as P = exp(S - lse), then
//   dP = dO V^T     dS = scale * P * (dP - Drow)
//   dQ += dS K      one work item per query row (b, h, i), over the keys it sees in order
//   dV += P^T dO    one work item per key row (b, g, j), over the group's query heads in
//   dK += dS^T Q    order, each over the query rows that see key j in order
// Every gradient row is written by one work item and each element sums in one fixed order:
// no atomics, and the result does not depend on how the items are scheduled. The key-row
// items recompute S and dP that the query-row items also compute; that is the price of
// having no atomics and no Tq x Tk scratch.
//
// Why this design. A work item per row needs no shared memory, no block size and no tiling,
// so the very same functors run as CUDA threads and as OpenMP iterations on the host (the
// tests' build): it is the correct, portable baseline that a tiled kernel will be checked
// against. No call allocates memory (Drow is the caller's scratch), so a warm training step
// allocates nothing here.
#pragma once

#include <cstdint>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_attention_detail {

using cuda_detail::exp_of;  // exp and log of the operand's own precision, also in device code
using cuda_detail::log_of;

/// a . b over n elements, summed in order.
template <class T>
MLA_HD T dot(const T* a, const T* b, std::int64_t n) {
  T acc = 0;
  for (std::int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

/// out [Dv] = sum_j softmax_j(scale * q . k_j) v_j over keys j in [0, n), n >= 1, with an
/// online softmax: keys in order, out accumulated in place. Returns log sum_j e^(scale q.k_j).
///   q [Dk], k [n, Dk] (row stride ldk), v [n, Dv] (row stride ldv), out [Dv]
template <class T>
MLA_HD T attend_row(const T* q, const T* k, std::int64_t ldk, std::int64_t Dk, const T* v,
                    std::int64_t ldv, std::int64_t Dv, std::int64_t n, T scale, T* out) {
  // Key 0 starts the running max m and sum l = e^(s_0 - m) = 1.
  T m = scale * dot(q, k, Dk);
  T l = 1;
  for (std::int64_t d = 0; d < Dv; ++d) out[d] = v[d];
  for (std::int64_t j = 1; j < n; ++j) {
    const T sc = scale * dot(q, k + j * ldk, Dk);
    const T* vj = v + j * ldv;
    if (sc > m) {  // a new max: rescale what was summed by e^(m - sc), then add e^0 v_j
      const T alpha = exp_of(m - sc);
      l = l * alpha + T(1);
      for (std::int64_t d = 0; d < Dv; ++d) out[d] = out[d] * alpha + vj[d];
      m = sc;
    } else {
      const T p = exp_of(sc - m);
      l += p;
      for (std::int64_t d = 0; d < Dv; ++d) out[d] += p * vj[d];
    }
  }
  const T inv = T(1) / l;
  for (std::int64_t d = 0; d < Dv; ++d) out[d] *= inv;
  return m + log_of(l);
}

/// Flat kv-head index b * G + g of query-head index bh = b * H + h.
MLA_HD inline std::int64_t kv_head(const AttentionShape& s, std::int64_t bh) {
  return (bh / s.H) * s.G + (bh % s.H) / s.group();
}

/// Forward of query row r = (b * H + h) * Tq + i: o's row and lse[r] (when lse is not null).
template <class T>
struct ForwardRow {
  AttentionShape s;
  T scale;
  const T* q;  // [B, H, Tq, Dk]
  const T* k;  // [B, G, Tk, Dk]
  const T* v;  // [B, G, Tk, Dv]
  T* o;        // [B, H, Tq, Dv]
  T* lse;      // [B, H, Tq] or null

  MLA_HD void operator()(std::int64_t r) const {
    const std::int64_t bg = kv_head(s, r / s.Tq), seen = s.offset() + r % s.Tq + 1;
    const T l = attend_row(q + r * s.Dk, k + bg * s.Tk * s.Dk, s.Dk, s.Dk, v + bg * s.Tk * s.Dv,
                           s.Dv, s.Dv, seen, scale, o + r * s.Dv);
    if (lse) lse[r] = l;
  }
};

/// drow[r] = dout_r . o_r for row r of [B * H * Tq].
template <class T>
struct DrowRow {
  std::int64_t Dv;
  const T* dout;  // [B, H, Tq, Dv]
  const T* o;     // [B, H, Tq, Dv]
  T* drow;        // [B, H, Tq]

  MLA_HD void operator()(std::int64_t r) const { drow[r] = dot(dout + r * Dv, o + r * Dv, Dv); }
};

/// dq_r += sum_j dS_rj k_j for query row r = (b * H + h) * Tq + i, keys j <= Tk - Tq + i in order.
template <class T>
struct BackwardQueryRow {
  AttentionShape s;
  T scale;
  const T* q;     // [B, H, Tq, Dk]
  const T* k;     // [B, G, Tk, Dk]
  const T* v;     // [B, G, Tk, Dv]
  const T* lse;   // [B, H, Tq]
  const T* dout;  // [B, H, Tq, Dv]
  const T* drow;  // [B, H, Tq]
  T* dq;          // [B, H, Tq, Dk]

  MLA_HD void operator()(std::int64_t r) const {
    const std::int64_t bg = kv_head(s, r / s.Tq), seen = s.offset() + r % s.Tq + 1;
    const T* qr = q + r * s.Dk;
    const T* dor = dout + r * s.Dv;
    const T* kg = k + bg * s.Tk * s.Dk;
    const T* vg = v + bg * s.Tk * s.Dv;
    T* dqr = dq + r * s.Dk;
    for (std::int64_t j = 0; j < seen; ++j) {
      const T* kj = kg + j * s.Dk;
      const T p = exp_of(scale * dot(qr, kj, s.Dk) - lse[r]);
      const T ds = scale * p * (dot(dor, vg + j * s.Dv, s.Dv) - drow[r]);
      for (std::int64_t d = 0; d < s.Dk; ++d) dqr[d] += ds * kj[d];
    }
  }
};

/// dk_j += sum dS_rj q_r and dv_j += sum P_rj dout_r for key row (b * G + g) * Tk + j: the
/// group's query heads in order, each over its query rows i >= j - (Tk - Tq) in order. Either
/// of dk, dv may be null; drow is read only for dk.
template <class T>
struct BackwardKeyRow {
  AttentionShape s;
  T scale;
  const T* q;     // [B, H, Tq, Dk]
  const T* k;     // [B, G, Tk, Dk]
  const T* v;     // [B, G, Tk, Dv]
  const T* lse;   // [B, H, Tq]
  const T* dout;  // [B, H, Tq, Dv]
  const T* drow;  // [B, H, Tq], or null when dk is
  T* dk;          // [B, G, Tk, Dk] or null
  T* dv;          // [B, G, Tk, Dv] or null

  MLA_HD void operator()(std::int64_t kr) const {
    const std::int64_t bg = kr / s.Tk, j = kr % s.Tk, b = bg / s.G, g = bg % s.G;
    const std::int64_t first = j > s.offset() ? j - s.offset() : 0;  // first query row seeing j
    const T* kj = k + kr * s.Dk;
    const T* vj = v + kr * s.Dv;
    for (std::int64_t hh = 0; hh < s.group(); ++hh) {
      const std::int64_t bh = b * s.H + g * s.group() + hh;
      for (std::int64_t r = bh * s.Tq + first; r < (bh + 1) * s.Tq; ++r) {
        const T* qr = q + r * s.Dk;
        const T* dor = dout + r * s.Dv;
        const T p = exp_of(scale * dot(qr, kj, s.Dk) - lse[r]);
        if (dv) {
          T* dvj = dv + kr * s.Dv;
          for (std::int64_t d = 0; d < s.Dv; ++d) dvj[d] += p * dor[d];
        }
        if (dk) {
          const T ds = scale * p * (dot(dor, vj, s.Dv) - drow[r]);
          T* dkj = dk + kr * s.Dk;
          for (std::int64_t d = 0; d < s.Dk; ++d) dkj[d] += ds * qr[d];
        }
      }
    }
  }
};

}  // namespace cuda_attention_detail

/// o = softmax(scale * q k^T, causal) v; saves lse [B, H, Tq] for the backward when `lse` is
/// not null. One work item per query row.
template <class T>
void attention_forward(Cuda, const AttentionShape& s, T scale, const T* q, const T* k, const T* v,
                       T* o, T* lse) {
  cuda_detail::for_each_index("attention_forward", s.B * s.H * s.Tq,
                              cuda_attention_detail::ForwardRow<T>{s, scale, q, k, v, o, lse});
}

/// Elements of the `drow` scratch attention_backward needs: Drow [B, H, Tq], or 0 when only
/// dv is wanted.
inline std::int64_t attention_backward_scratch(Cuda, const AttentionShape& s, bool dq_or_dk) {
  return dq_or_dk ? s.B * s.H * s.Tq : 0;
}

/// dq, dk, dv += the gradients of attention_forward given dout [B, H, Tq, Dv], its output o and
/// saved lse. Any of dq, dk, dv may be null (no gradient wanted). `drow` (device memory) holds
/// attention_backward_scratch(s, dq || dk) elements. Deterministic: each gradient element sums
/// in one fixed order, without atomics.
template <class T>
void attention_backward(Cuda, const AttentionShape& s, T scale, const T* q, const T* k, const T* v,
                        const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv, T* drow) {
  namespace ad = cuda_attention_detail;
  if (!dq && !dk && !dv) return;
  const std::int64_t rows = s.B * s.H * s.Tq;
  if (dq || dk) {
    cuda_detail::for_each_index("attention_backward (Drow)", rows,
                                ad::DrowRow<T>{s.Dv, dout, o, drow});
  }
  if (dq) {
    cuda_detail::for_each_index("attention_backward (dq)", rows,
                                ad::BackwardQueryRow<T>{s, scale, q, k, v, lse, dout, drow, dq});
  }
  if (dk || dv) {
    cuda_detail::for_each_index("attention_backward (dk, dv)", s.B * s.G * s.Tk,
                                ad::BackwardKeyRow<T>{s, scale, q, k, v, lse, dout, drow, dk, dv});
  }
}

}  // namespace mla::kernels
