// mla/autodiff/ops/attention.hpp — causal scaled-dot-product attention as one fused op, for
// every attention policy (MHA, GQA, MQA, and MLA with Dk != Dv).
//
// Legend: B batch, H query heads, G kv heads (H % G == 0), Tq queries, Tk keys (Tq <= Tk),
// Dk query/key head dim, Dv value head dim.
//
//   q [B, H, Tq, Dk], k [B, G, Tk, Dk], v [B, G, Tk, Dv] -> o [B, H, Tq, Dv]
//   o = softmax(scale * q k^T, causal) v, query head h reading kv head h / (H/G); query row i
//   sits at position Tk - Tq + i and sees keys j <= Tk - Tq + i. scale defaults to 1/sqrt(Dk).
// The forward saves lse [B, H, Tq] (and the op keeps o): never the Tq x Tk matrix. Gradients
// flow to q, k and v.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

/// The sizes of causal_attention(q, k, v), or a ShapeError naming what does not fit.
inline kernels::AttentionShape attention_shape(const Shape& q, const Shape& k, const Shape& v) {
  // The shapes, for a message: built only when one is thrown.
  const auto all = [&] { return ": q " + q.str() + ", k " + k.str() + ", v " + v.str(); };
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4) {
    throw ShapeError("causal_attention: q, k and v need rank 4 ([B, heads, T, head dim])" + all());
  }
  const kernels::AttentionShape s{q[0], q[1], k[1], q[2], k[2], q[3], v[3]};
  if (k[0] != s.B || v[0] != s.B) {
    throw ShapeError("causal_attention: batch sizes B differ" + all());
  }
  if (v[1] != s.G || v[2] != s.Tk) {
    throw ShapeError("causal_attention: k and v differ in kv heads G or length Tk" + all());
  }
  if (k[3] != s.Dk) {
    throw ShapeError("causal_attention: q and k head dims Dk differ (" + std::to_string(s.Dk) +
                     " vs " + std::to_string(k[3]) + ")" + all());
  }
  if (s.Dk < 1) throw ShapeError("causal_attention: head dim Dk must be at least 1" + all());
  if (s.G < 1 || s.H % s.G != 0) {
    throw ShapeError("causal_attention: query heads H = " + std::to_string(s.H) +
                     " are not a multiple of kv heads G = " + std::to_string(s.G) + all());
  }
  if (s.Tq > s.Tk) {
    throw ShapeError("causal_attention: more queries than keys (Tq = " + std::to_string(s.Tq) +
                     " > Tk = " + std::to_string(s.Tk) + "); query i sits at position Tk - Tq + i" +
                     all());
  }
  return s;
}

}  // namespace detail

/// Causal attention of q [B, H, Tq, Dk] over k [B, G, Tk, Dk], v [B, G, Tk, Dv]: o [B, H, Tq, Dv].
/// `scale` multiplies the scores (default 1/sqrt(Dk)); it must be finite.
template <class T, Device D>
Var<T, D> causal_attention(const Var<T, D>& q, const Var<T, D>& k, const Var<T, D>& v,
                           std::optional<std::type_identity_t<T>> scale = std::nullopt) {
  const kernels::AttentionShape s = detail::attention_shape(q.shape(), k.shape(), v.shape());
  const T sc = scale ? *scale : T(1) / std::sqrt(static_cast<T>(s.Dk));
  if (!std::isfinite(sc)) {
    throw ArgumentError("causal_attention: scale must be finite, got " + std::to_string(sc));
  }
  Tape<T, D>* tape = detail::common_tape("causal_attention", q, k, v);
  const bool rec = detail::records(q, k, v);
  Tensor<T, D> out = detail::new_output(tape, Shape{s.B, s.H, s.Tq, s.Dv});
  Tensor<T, D> lse = rec ? tape->empty(Shape{s.B, s.H, s.Tq}) : Tensor<T, D>{};  // saved
  kernels::attention_forward(D{}, s, sc, q.value().data(), k.value().data(), v.value().data(),
                             out.data(), rec ? lse.data() : static_cast<T*>(nullptr));
  if (!rec) return detail::unrecorded(out, tape);

  return tape->record(
      out, [Q = q.value(), K = k.value(), V = v.value(), O = out, L = lse, iq = q.node(),
            ik = k.node(), iv = v.node(), s, sc](Tape<T, D>& t, const Tensor<T, D>& dO) {
        const Tensor<T, D> dq = t.grad_sink(iq), dk = t.grad_sink(ik), dv = t.grad_sink(iv);
        const std::int64_t n = kernels::attention_backward_scratch(D{}, s, dq || dk);
        const Tensor<T, D> drow = n > 0 ? t.empty(Shape{n}) : Tensor<T, D>{};  // Drow [B, H, Tq]
        kernels::attention_backward(D{}, s, sc, Q.data(), K.data(), V.data(), O.data(), L.data(),
                                    dO.data(), dq.data(), dk.data(), dv.data(), drow.data());
      });
}

}  // namespace mla
