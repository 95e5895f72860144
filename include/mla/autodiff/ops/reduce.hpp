// mla/autodiff/ops/reduce.hpp — sum and mean of every element, to a scalar (rank 0).
#pragma once

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

template <class T, Device D>
Var<T, D> reduce_all(const char* name, const Var<T, D>& x, T scale) {
  Tape<T, D>* tape = common_tape(name, x);
  Tensor<T, D> out = new_output(tape, Shape{});
  kernels::sum_forward(D{}, x.value().data(), out.data(), x.numel());
  if (scale != T(1)) kernels::scale_forward(D{}, out.data(), scale, out.data(), 1);
  if (!records(x)) return unrecorded(out, tape);
  return tape->record(out, [ix = x.node(), scale](Tape<T, D>& t, const Tensor<T, D>& dy) {
    if (auto dx = t.grad_sink(ix)) kernels::fill_backward(D{}, dy.data(), scale, dx.data(), dx.numel());
  });
}

}  // namespace detail

/// Sum of every element.
template <class T, Device D>
Var<T, D> sum(const Var<T, D>& x) {
  return detail::reduce_all("sum", x, T(1));
}

/// Mean of every element; the mean of an empty tensor is an error.
template <class T, Device D>
Var<T, D> mean(const Var<T, D>& x) {
  if (x.numel() == 0) throw ShapeError("mean: empty tensor " + x.shape().str());
  return detail::reduce_all("mean", x, T(1) / static_cast<T>(x.numel()));
}

}  // namespace mla
