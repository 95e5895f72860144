// mla/autodiff/ops/loss.hpp — cross-entropy from logits, fused (log-softmax + NLL + mean).
//
// Legend: B batch, T time, V vocab, N targets (every axis of logits but the last).
//
//   cross_entropy(logits [..., V], targets [...] int32) -> scalar (rank 0)
//     loss = mean over the N targets of -log softmax(logits)[target]
//   e.g. logits [B, T, V] with targets [B, T].
// The forward saves the per-row logsumexp lse (N); the backward recomputes the probabilities
// from logits and lse instead of storing them: dlogits = (softmax - onehot) * dloss / N.
//
//   linear_cross_entropy(x [..., In], w [V, In], bias [V], targets [...]) -> scalar
//     = cross_entropy(linear(x, w, bias), targets), the same math, but the logits [N, V] never
//       exist whole: a language model's head and loss, which for the default model would
//       otherwise write and re-read a [2048, 8192] matrix (64 MiB) and its gradient.
// The forward takes `chunk_rows` rows at a time into one [chunk, V] buffer: their logits, their
// lse and their summed loss (the loss = that sum over every chunk, in double, / N). When it
// records, it also turns the chunk's logits into dlogits for dloss = 1 in place,
// (exp(logit - max) / sum - onehot) / N, reusing the exponentials the row's sum was taken of
// (one exponential per logit), and adds the chunk's share to dx (dlogits @ w), dw and db before
// the next chunk overwrites the buffer. The loss is the last op of a step, so the backward only
// scales the stored dx, dw and db by dloss. Its values equal cross_entropy(linear(...)) up to
// rounding, which differs: dw and db are summed a chunk at a time, and dloss is applied after
// the products rather than before.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {

namespace detail {
/// Throws ArgumentError naming the first of the N targets outside [0, V), if any.
template <Device D>
void check_targets(const char* op, const Tensor<std::int32_t, D>& targets, std::int64_t N, std::int64_t V) {
  const std::int64_t bad = kernels::find_bad_target(D{}, targets.data(), N, V);
  if (bad < 0) return;
  std::int32_t id = 0;
  D::copy_to_host(&id, targets.data() + bad, sizeof id);
  throw ArgumentError(std::string(op) + ": target id " + std::to_string(id) + " at position " + std::to_string(bad) +
                      " is outside the vocabulary [0, " + std::to_string(V) + ") (V = " + std::to_string(V) + ")");
}
}  // namespace detail

template <class T, Device D>
Var<T, D> cross_entropy(const Var<T, D>& logits, const Tensor<std::int32_t, D>& targets) {
  const Shape& sl = logits.shape();
  const Shape expected = sl.without_cols();
  if (sl.rank() == 0 || !(targets.shape() == expected)) {
    throw ShapeError("cross_entropy: targets " + targets.shape().str() + " must be " +
                     expected.str() + ", the shape of logits " + sl.str() +
                     " without its last (vocab) axis");
  }
  const std::int64_t N = sl.rows(), V = sl.cols();
  if (N == 0) throw ShapeError("cross_entropy: no targets to average over, logits " + sl.str());
  detail::check_targets("cross_entropy", targets, N, V);

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

/// Rows of logits linear_cross_entropy holds at a time: [1024, 8192] floats, 32 MiB, for the
/// default model, against 128 MiB for its logits and their gradient. Each chunk's product for
/// dx packs all of w again: in 256-row chunks the default model's training step (MHA) took 4%
/// longer than unfused, in 1024-row chunks as long (within 2%; paired steps, in one process).
inline constexpr std::int64_t kLossChunkRows = 1024;

template <class T, Device D>
Var<T, D> linear_cross_entropy(const Var<T, D>& x, const Var<T, D>& w, const Var<T, D>& bias,
                               const Tensor<std::int32_t, D>& targets, std::int64_t chunk_rows = kLossChunkRows) {
  const Shape &sx = x.shape(), &sw = w.shape();
  if (sx.rank() < 1 || sw.rank() != 2 || sx[-1] != sw[1] || bias.shape().rank() != 1 || bias.shape()[0] != sw[0]) {
    throw ShapeError("linear_cross_entropy: x " + sx.str() + ", weight " + sw.str() + " and bias " +
                     bias.shape().str() + " do not fit x [..., In] @ weight [V, In].T + bias [V]");
  }
  const Shape expected = sx.without_cols();
  if (!(targets.shape() == expected)) {
    throw ShapeError("linear_cross_entropy: targets " + targets.shape().str() + " must be " + expected.str() +
                     ", the shape of x " + sx.str() + " without its last (feature) axis");
  }
  const std::int64_t N = sx.rows(), In = sw[1], V = sw[0];
  if (N == 0 || V == 0) {
    throw ShapeError("linear_cross_entropy: no targets to average over or no classes, x " + sx.str() + " and weight " +
                     sw.str());
  }
  if (chunk_rows < 1) {
    throw ArgumentError("linear_cross_entropy: chunk_rows = " + std::to_string(chunk_rows) + " must be at least 1");
  }
  detail::check_targets("linear_cross_entropy", targets, N, V);

  Tape<T, D>* tape = detail::common_tape("linear_cross_entropy", x, w, bias);
  const bool grads = detail::records(x, w, bias);
  const std::int64_t C = std::min(N, chunk_rows);
  Tensor<T, D> out = detail::new_output(tape, Shape{});
  Tensor<T, D> logits = detail::new_output(tape, Shape{C, V}), lse = detail::new_output(tape, Shape{C});
  Tensor<T, D> target_logits;  // [C]: the chunk's logits at its targets, when it records
  if (grads) target_logits = detail::new_output(tape, Shape{C});
  // The gradients for dloss = 1: of x (every element written), of w and bias (summed into).
  Tensor<T, D> dx, dw, db;
  if (grads && x.requires_grad()) dx = detail::new_output(tape, sx);
  if (grads && w.requires_grad()) (dw = detail::new_output(tape, sw)).fill_zero();
  if (grads && bias.requires_grad()) (db = detail::new_output(tape, bias.shape())).fill_zero();

  const T* W = w.value().data();
  const T g = T(1) / static_cast<T>(N);  // cross_entropy's dloss / N for dloss = 1
  // Each chunk's sum of row losses, in double on the device; their mean is taken there too, so
  // the loss never makes the host wait.
  const std::int64_t chunks = (N + C - 1) / C;
  const Tensor<double, D> sums = tape ? tape->template empty_as<double>(Shape{chunks})
                                      : Tensor<double, D>::empty(Shape{chunks});
  for (std::int64_t r0 = 0; r0 < N; r0 += C) {
    double* sum = sums.data() + r0 / C;
    const std::int64_t R = std::min(C, N - r0);
    const T* xc = x.value().data() + r0 * In;
    const std::int32_t* tc = targets.data() + r0;
    kernels::linear_forward(D{}, R, V, In, xc, W, bias.value().data(), logits.data());
    if (!grads) {
      kernels::crossentropy_rows(D{}, logits.data(), tc, lse.data(), R, V, sum);
      continue;
    }
    kernels::crossentropy_rows_grad(D{}, logits.data(), tc, lse.data(), target_logits.data(), g, R, V, sum);
    if (dx) kernels::gemm(D{}, Transpose::No, Transpose::No, R, In, V, T(1), logits.data(), W, T(0), dx.data() + r0 * In);
    if (dw || db) kernels::linear_param_grads(D{}, R, V, In, logits.data(), xc, dw ? dw.data() : nullptr, db ? db.data() : nullptr);
  }
  kernels::mean_of_sums(D{}, sums.data(), chunks, N, out.data());
  if (!grads) return detail::unrecorded(out, tape);

  return tape->record(out, [dx, dw, db, ix = x.node(), iw = w.node(), ib = bias.node()](Tape<T, D>& t,
                                                                                       const Tensor<T, D>& dloss) {
    const T* s = dloss.data();
    if (dx) {
      if (const auto target = t.grad_target(ix)) {
        kernels::scale_by_backward(D{}, s, dx.data(), target.grad.data(), dx.numel(), target.accumulate);
      }
    }
    if (dw) kernels::scale_by_backward(D{}, s, dw.data(), t.grad_sink(iw).data(), dw.numel());
    if (db) kernels::scale_by_backward(D{}, s, db.data(), t.grad_sink(ib).data(), db.numel());
  });
}

}  // namespace mla
