// mla/autodiff/ops/softmax.hpp — softmax over the last axis.
//
// Legend: R rows (every axis but the last), C channels (the last axis).
//
//   softmax(x [..., C]) -> [..., C], each row max-subtracted before exp (numerically stable).
// The backward needs only the output, which the closure keeps: dx = y * (dy - sum(dy * y)).
#pragma once

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {

template <class T, Device D>
Var<T, D> softmax(const Var<T, D>& x) {
  const std::int64_t R = x.shape().rows(), C = x.shape().cols();
  Tape<T, D>* tape = detail::common_tape("softmax", x);
  Tensor<T, D> out = detail::new_output(tape, x.shape());
  kernels::softmax_forward(D{}, x.value().data(), out.data(), R, C);
  if (!detail::records(x)) return detail::unrecorded(out, tape);

  return tape->record(out, [Y = out, ix = x.node(), R, C](Tape<T, D>& t, const Tensor<T, D>& dy) {
    if (auto dx = t.grad_sink(ix)) {
      kernels::softmax_backward(D{}, Y.data(), dy.data(), dx.data(), R, C);
    }
  });
}

}  // namespace mla
