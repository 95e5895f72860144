// mla/autodiff/ops/elementwise.hpp — add, sub, mul (with a broadcast row), scale, relu, gelu.
//
//   add/sub/mul(a [..., C], b): b is either the same shape as a, or a row [C] broadcast over
//   every row of a (a bias, a norm weight).
#pragma once

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

template <class T, Device D>
Var<T, D> binary(const char* name, kernels::Binary op, const Var<T, D>& a, const Var<T, D>& b) {
  const bool b_row = !(b.shape() == a.shape());
  if (b_row && !(b.shape().rank() == 1 && a.shape().rank() >= 1 && b.shape()[0] == a.shape()[-1])) {
    throw ShapeError(std::string(name) + ": cannot broadcast b " + b.shape().str() +
                     " over a " + a.shape().str() + " (b must match a, or be a row of " +
                     std::to_string(a.shape().cols()) + ")");
  }
  const std::int64_t R = a.shape().rows(), C = a.shape().cols();
  Tape<T, D>* tape = common_tape(name, a, b);
  Tensor<T, D> out = new_output(tape, a.shape());
  kernels::binary_forward(D{}, op, a.value().data(), b.value().data(), b_row, out.data(), R, C);
  if (!records(a, b)) return unrecorded(out, tape);
  return tape->record(out, [A = a.value(), B = b.value(), ia = a.node(), ib = b.node(), op, b_row,
                            R, C](Tape<T, D>& t, const Tensor<T, D>& dout) {
    // A broadcast row's gradient sums over rows, so it accumulates; the rest may overwrite.
    const auto da = t.grad_target(ia);
    const auto db = b_row ? typename Tape<T, D>::GradTarget{t.grad_sink(ib), true} : t.grad_target(ib);
    kernels::binary_backward(D{}, op, A.data(), B.data(), b_row, dout.data(), da.grad.data(),
                             db.grad.data(), R, C, da.accumulate, db.accumulate);
  });
}

/// An op y = f(x) whose backward needs only x: `forward(x, y, n)`, and
/// `backward(x, dy, dx, n, accumulate)` adding into dx, or writing it when accumulate is false.
template <class T, Device D, class Forward, class Backward>
Var<T, D> unary(const char* name, const Var<T, D>& x, Forward forward, Backward backward) {
  Tape<T, D>* tape = common_tape(name, x);
  Tensor<T, D> out = new_output(tape, x.shape());
  forward(x.value().data(), out.data(), x.numel());
  if (!records(x)) return unrecorded(out, tape);
  return tape->record(out, [X = x.value(), ix = x.node(), backward](Tape<T, D>& t,
                                                                      const Tensor<T, D>& dy) {
    if (const auto dx = t.grad_target(ix)) backward(X.data(), dy.data(), dx.grad.data(), X.numel(), dx.accumulate);
  });
}

}  // namespace detail

template <class T, Device D>
Var<T, D> add(const Var<T, D>& a, const Var<T, D>& b) {
  return detail::binary("add", kernels::Binary::Add, a, b);
}
template <class T, Device D>
Var<T, D> sub(const Var<T, D>& a, const Var<T, D>& b) {
  return detail::binary("sub", kernels::Binary::Sub, a, b);
}
template <class T, Device D>
Var<T, D> mul(const Var<T, D>& a, const Var<T, D>& b) {
  return detail::binary("mul", kernels::Binary::Mul, a, b);
}

/// s * x.
template <class T, Device D>
Var<T, D> scale(const Var<T, D>& x, T s) {
  return detail::unary(
      "scale", x, [s](const T* in, T* out, std::int64_t n) { kernels::scale_forward(D{}, in, s, out, n); },
      [s](const T*, const T* dy, T* dx, std::int64_t n, bool accumulate) {
        kernels::scale_backward(D{}, s, dy, dx, n, accumulate);
      });
}

template <class T, Device D>
Var<T, D> relu(const Var<T, D>& x) {
  return detail::unary(
      "relu", x, [](const T* in, T* out, std::int64_t n) { kernels::relu_forward(D{}, in, out, n); },
      [](const T* in, const T* dy, T* dx, std::int64_t n, bool accumulate) {
        kernels::relu_backward(D{}, in, dy, dx, n, accumulate);
      });
}

/// GELU with the exact normal CDF.
template <class T, Device D>
Var<T, D> gelu(const Var<T, D>& x) {
  return detail::unary(
      "gelu", x, [](const T* in, T* out, std::int64_t n) { kernels::gelu_forward(D{}, in, out, n); },
      [](const T* in, const T* dy, T* dx, std::int64_t n, bool accumulate) {
        kernels::gelu_backward(D{}, in, dy, dx, n, accumulate);
      });
}

// Operands of two scalar types do not mix: no silent conversion between float and double.
template <class T, class U, Device D>
  requires(!std::same_as<T, U>)
Var<T, D> add(const Var<T, D>&, const Var<U, D>&) {
  static_assert(detail::always_false<T, U>,
                "mla::add: operands have different scalar types (float and double do not mix)");
}
template <class T, class U, Device D>
  requires(!std::same_as<T, U>)
Var<T, D> sub(const Var<T, D>&, const Var<U, D>&) {
  static_assert(detail::always_false<T, U>,
                "mla::sub: operands have different scalar types (float and double do not mix)");
}
template <class T, class U, Device D>
  requires(!std::same_as<T, U>)
Var<T, D> mul(const Var<T, D>&, const Var<U, D>&) {
  static_assert(detail::always_false<T, U>,
                "mla::mul: operands have different scalar types (float and double do not mix)");
}

template <class T, Device D>
Var<T, D> operator+(const Var<T, D>& a, const Var<T, D>& b) { return add(a, b); }
template <class T, Device D>
Var<T, D> operator-(const Var<T, D>& a, const Var<T, D>& b) { return sub(a, b); }
template <class T, Device D>
Var<T, D> operator*(const Var<T, D>& a, const Var<T, D>& b) { return mul(a, b); }

}  // namespace mla
