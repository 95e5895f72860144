// mla/autodiff/ops/embedding.hpp — token embedding: rows of a table gathered by id.
//
//   embedding(weight [V, C], ids [T] | [B, T] | [B, T, K]) -> [ids..., C]
//   out[..., :] = weight[ids[...], :]; the backward scatter-adds into dweight (repeated ids
//   accumulate). Ids are not differentiable.
//
// Legend: V vocab, C channels, B batch, T time, N number of ids (all positions, flattened).
#pragma once

#include <string>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {

/// Gathers `weight` rows by `ids`. Every id must lie in [0, V): an id outside throws
/// ArgumentError naming it, its flat position and V, before any work is done.
template <class T, Device D>
Var<T, D> embedding(const Var<T, D>& weight, const Tensor<std::int32_t, D>& ids) {
  const Shape& sw = weight.shape();
  const Shape& si = ids.shape();
  if (sw.rank() != 2) {
    throw ShapeError("embedding: weight must be [V, C], got " + sw.str());
  }
  if (si.rank() < 1 || si.rank() > 3) {
    throw ShapeError("embedding: ids must have rank 1 to 3, got " + si.str());
  }
  const std::int64_t V = sw[0], C = sw[1], N = si.numel();
  if (const std::int64_t bad = kernels::embedding_first_bad_id(D{}, ids.data(), N, V); bad >= 0) {
    throw ArgumentError("embedding: id " +
                        std::to_string(kernels::embedding_id_at(D{}, ids.data(), bad)) +
                        " at position " + std::to_string(bad) + " (flat index into ids " +
                        si.str() + ") is out of range for vocab size V = " + std::to_string(V));
  }

  Tape<T, D>* tape = detail::common_tape("embedding", weight);
  Tensor<T, D> out = detail::new_output(tape, si.appended(C));  // (N, C)
  kernels::embedding_forward(D{}, weight.value().data(), ids.data(), out.data(), N, C);
  if (!detail::records(weight)) return detail::unrecorded(out, tape);
  return tape->record(out,
                      [I = ids, iw = weight.node(), N, C](Tape<T, D>& t, const Tensor<T, D>& dout) {
                        if (auto dw = t.grad_sink(iw))
                          kernels::embedding_backward(D{}, I.data(), dout.data(), dw.data(), N, C);
                      });
}

}  // namespace mla
