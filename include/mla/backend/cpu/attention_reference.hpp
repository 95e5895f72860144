// mla/backend/cpu/attention_reference.hpp — the slow, obvious causal attention that the
// tiled kernels in attention.hpp are tested against. It materializes the whole Tq x Tk
// probability matrix of each (batch, head); use it in tests, never in a model.
//
// Legend: B batch, H query heads, G kv heads (H % G == 0; query head h reads kv head
// h / (H/G)), Tq queries, Tk keys (Tq <= Tk), Dk query/key head dim, Dv value head dim.
//
//   q [B, H, Tq, Dk], k [B, G, Tk, Dk], v [B, G, Tk, Dv] -> o [B, H, Tq, Dv], lse [B, H, Tq]
//   Query row i sits at absolute position p = Tk - Tq + i and sees keys j <= p.
//   S = scale * q k^T, P = softmax(S) over the visible keys, o = P v, lse = log sum_j exp(S_ij).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

namespace detail {

/// P [Tq, Tk] of head (b, h): row i = softmax over keys j <= offset + i, zero beyond.
/// Also returns each row's log-sum-exp in `lse` [Tq] when it is not null.
template <class T>
void attention_reference_probs(const AttentionShape& s, T scale, const T* q, const T* k, T* P,
                               T* lse) {
  for (std::int64_t i = 0; i < s.Tq; ++i) {
    const std::int64_t last = s.offset() + i;  // the last key row i sees
    const T* qi = q + i * s.Dk;
    T* pi = P + i * s.Tk;
    T mx = -std::numeric_limits<T>::infinity();
    for (std::int64_t j = 0; j <= last; ++j) {
      T dot = 0;
      for (std::int64_t d = 0; d < s.Dk; ++d) dot += qi[d] * k[j * s.Dk + d];
      pi[j] = scale * dot;
      mx = std::max(mx, pi[j]);
    }
    T sum = 0;
    for (std::int64_t j = 0; j <= last; ++j) {
      pi[j] = std::exp(pi[j] - mx);
      sum += pi[j];
    }
    for (std::int64_t j = 0; j <= last; ++j) pi[j] /= sum;
    for (std::int64_t j = last + 1; j < s.Tk; ++j) pi[j] = 0;
    if (lse) lse[i] = mx + std::log(sum);
  }
}

}  // namespace detail

/// o = softmax(scale * q k^T, causal) v, one (b, h) at a time; `lse` [B, H, Tq] may be null.
template <class T>
void attention_reference_forward(Cpu, const AttentionShape& s, T scale, const T* q, const T* k,
                                 const T* v, T* o, T* lse) {
  std::vector<T> P(static_cast<std::size_t>(s.Tq * s.Tk));  // [Tq, Tk]
  for (std::int64_t b = 0; b < s.B; ++b) {
    for (std::int64_t h = 0; h < s.H; ++h) {
      const std::int64_t bh = b * s.H + h, bg = b * s.G + h / s.group();
      const T* vg = v + bg * s.Tk * s.Dv;
      detail::attention_reference_probs(s, scale, q + bh * s.Tq * s.Dk, k + bg * s.Tk * s.Dk,
                                        P.data(), lse ? lse + bh * s.Tq : nullptr);
      for (std::int64_t i = 0; i < s.Tq; ++i) {
        T* oi = o + (bh * s.Tq + i) * s.Dv;
        for (std::int64_t d = 0; d < s.Dv; ++d) oi[d] = 0;
        for (std::int64_t j = 0; j < s.Tk; ++j) {
          const T p = P[static_cast<std::size_t>(i * s.Tk + j)];
          for (std::int64_t d = 0; d < s.Dv; ++d) oi[d] += p * vg[j * s.Dv + d];
        }
      }
    }
  }
}

/// dq += scale dS k, dk += scale dS^T q, dv += P^T dout, with dP = dout v^T and
/// dS = P * (dP - rowsum(P * dP)). Any of dq, dk, dv may be null (no gradient wanted).
template <class T>
void attention_reference_backward(Cpu, const AttentionShape& s, T scale, const T* q, const T* k,
                                  const T* v, const T* dout, T* dq, T* dk, T* dv) {
  const auto n = static_cast<std::size_t>(s.Tq * s.Tk);
  std::vector<T> P(n), dS(n);  // [Tq, Tk] each
  for (std::int64_t b = 0; b < s.B; ++b) {
    for (std::int64_t h = 0; h < s.H; ++h) {
      const std::int64_t bh = b * s.H + h, bg = b * s.G + h / s.group();
      const T* qh = q + bh * s.Tq * s.Dk;
      const T* kg = k + bg * s.Tk * s.Dk;
      const T* vg = v + bg * s.Tk * s.Dv;
      const T* doh = dout + bh * s.Tq * s.Dv;
      detail::attention_reference_probs(s, scale, qh, kg, P.data(), static_cast<T*>(nullptr));
      for (std::int64_t i = 0; i < s.Tq; ++i) {
        T row = 0;  // sum_j P_ij dP_ij
        for (std::int64_t j = 0; j < s.Tk; ++j) {
          T dp = 0;
          for (std::int64_t d = 0; d < s.Dv; ++d) dp += doh[i * s.Dv + d] * vg[j * s.Dv + d];
          dS[static_cast<std::size_t>(i * s.Tk + j)] = dp;
          row += P[static_cast<std::size_t>(i * s.Tk + j)] * dp;
        }
        for (std::int64_t j = 0; j < s.Tk; ++j) {
          const auto ij = static_cast<std::size_t>(i * s.Tk + j);
          dS[ij] = P[ij] * (dS[ij] - row);
        }
      }
      for (std::int64_t i = 0; i < s.Tq; ++i) {
        for (std::int64_t j = 0; j < s.Tk; ++j) {
          const auto ij = static_cast<std::size_t>(i * s.Tk + j);
          if (dq) {
            for (std::int64_t d = 0; d < s.Dk; ++d)
              dq[(bh * s.Tq + i) * s.Dk + d] += scale * dS[ij] * kg[j * s.Dk + d];
          }
          if (dk) {
            for (std::int64_t d = 0; d < s.Dk; ++d)
              dk[(bg * s.Tk + j) * s.Dk + d] += scale * dS[ij] * qh[i * s.Dk + d];
          }
          if (dv) {
            for (std::int64_t d = 0; d < s.Dv; ++d)
              dv[(bg * s.Tk + j) * s.Dv + d] += P[ij] * doh[i * s.Dv + d];
          }
        }
      }
    }
  }
}

}  // namespace mla::kernels
