// mla/autodiff/ops/loss.hpp — cross-entropy from logits, fused (log-softmax + NLL + mean).
//
// Legend: B batch, T time, V vocab, N targets (every axis of logits but the last).
//
//   cross_entropy(logits [..., V], targets [...] int32) -> scalar (rank 0)
//     loss = mean over the N targets of -log softmax(logits)[target]
//   e.g. logits [B, T, V] with targets [B, T].
// The forward saves the per-row logsumexp lse (N); the backward recomputes the probabilities
// from logits and lse instead of storing them: dlogits = (softmax - onehot) * dloss / N.
#pragma once

#include <cstdint>
#include <string>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/cpu/softmax.hpp"

namespace mla {

template <class T, Device D>
Var<T, D> cross_entropy(const Var<T, D>& logits, const Tensor<std::int32_t, D>& targets) {
  const Shape& sl = logits.shape();
  Shape expected;  // logits' shape without the last axis
  for (int i = 0; i + 1 < sl.rank(); ++i) expected = expected.appended(sl[i]);
  if (sl.rank() == 0 || !(targets.shape() == expected)) {
    throw ShapeError("cross_entropy: targets " + targets.shape().str() + " must be " +
                     expected.str() + ", the shape of logits " + sl.str() +
                     " without its last (vocab) axis");
  }
  const std::int64_t N = sl.rows(), V = sl.cols();
  if (N == 0) throw ShapeError("cross_entropy: no targets to average over, logits " + sl.str());
  const std::int64_t bad = kernels::find_bad_target(D{}, targets.data(), N, V);
  if (bad >= 0) {
    std::int32_t id = 0;
    D::copy_to_host(&id, targets.data() + bad, sizeof id);
    throw ArgumentError("cross_entropy: target id " + std::to_string(id) + " at position " +
                        std::to_string(bad) + " is outside the vocabulary [0, " +
                        std::to_string(V) + ") (V = " + std::to_string(V) + ")");
  }

  Tape<T, D>* tape = detail::common_tape("cross_entropy", logits);
  Tensor<T, D> out = detail::new_output(tape, Shape{});
  Tensor<T, D> lse = detail::new_output(tape, Shape{N});  // (N), saved for the backward
  kernels::crossentropy_forward(D{}, logits.value().data(), targets.data(), lse.data(),
                                out.data(), N, V);
  if (!detail::records(logits)) return detail::unrecorded(out, tape);

  return tape->record(out, [L = logits.value(), targets, lse, il = logits.node(), N,
                            V](Tape<T, D>& t, const Tensor<T, D>& dloss) {
    if (const auto dl = t.grad_target(il)) {
      kernels::crossentropy_backward(D{}, L.data(), targets.data(), lse.data(), dloss.data(),
                                     dl.grad.data(), N, V, dl.accumulate);
    }
  });
}

}  // namespace mla
