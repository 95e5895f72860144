// mla/autodiff/ops/norm.hpp — LayerNorm and RMSNorm over the last axis, as single fused ops.
//
// Legend: R rows (every axis but the last), C channels (the last axis).
//
//   layernorm(x [..., C], weight [C], bias [C], eps) -> [..., C]
//     y = (x - mean) / sqrt(var + eps) * weight + bias, biased variance, per row
//   rmsnorm(x [..., C], weight [C], eps) -> [..., C]
//     y = x / sqrt(mean(x^2) + eps) * weight, per row
//
// When recording, the forward saves mean (R) and rstd (R) in the tape's arena for the backward.
#pragma once

#include <string>
#include <type_traits>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

/// `op: name [..] must be [C], the last axis of x [...]`.
template <class T, Device D>
void check_norm_param(const char* op, const char* name, const Var<T, D>& p, const Var<T, D>& x) {
  if (!(p.shape() == Shape{x.shape().cols()}) || x.shape().rank() == 0) {
    throw ShapeError(std::string(op) + ": " + name + " " + p.shape().str() + " must be [" +
                     std::to_string(x.shape().cols()) + "], the last axis of x " +
                     x.shape().str());
  }
}

template <class T>
void check_norm_eps(const char* op, T eps) {
  if (!(eps >= T(0))) {
    throw ArgumentError(std::string(op) + ": eps must be >= 0, got " + std::to_string(eps));
  }
}

}  // namespace detail

template <class T, Device D>
Var<T, D> layernorm(const Var<T, D>& x, const Var<T, D>& weight, const Var<T, D>& bias,
                    std::type_identity_t<T> eps = T(1e-5)) {
  detail::check_norm_param("layernorm", "weight", weight, x);
  detail::check_norm_param("layernorm", "bias", bias, x);
  detail::check_norm_eps("layernorm", eps);
  const std::int64_t R = x.shape().rows(), C = x.shape().cols();
  Tape<T, D>* tape = detail::common_tape("layernorm", x, weight, bias);
  Tensor<T, D> out = detail::new_output(tape, x.shape());
  const bool recording = detail::records(x, weight, bias);
  Tensor<T, D> mean, rstd;  // (R), saved for the backward
  if (recording) {
    mean = tape->empty(Shape{R});
    rstd = tape->empty(Shape{R});
  }
  kernels::layernorm_forward(D{}, x.value().data(), weight.value().data(), bias.value().data(),
                             eps, out.data(), mean.data(), rstd.data(), R, C);
  if (!recording) return detail::unrecorded(out, tape);

  return tape->record(out, [X = x.value(), W = weight.value(), mean, rstd, ix = x.node(),
                            iw = weight.node(), ib = bias.node(), R,
                            C](Tape<T, D>& t, const Tensor<T, D>& dy) {
    Tensor<T, D> dx = t.grad_sink(ix), dw = t.grad_sink(iw), db = t.grad_sink(ib);
    Tensor<T, D> scratch;  // (chunks, 2, C): per-chunk column sums of dw and db
    const std::int64_t n = kernels::layernorm_backward_scratch(D{}, R, C);
    if ((dw || db) && n > 0) scratch = t.empty(Shape{n});
    kernels::layernorm_backward(D{}, dy.data(), X.data(), W.data(), mean.data(), rstd.data(),
                                dx.data(), dw.data(), db.data(), scratch.data(), R, C);
  });
}

template <class T, Device D>
Var<T, D> rmsnorm(const Var<T, D>& x, const Var<T, D>& weight,
                  std::type_identity_t<T> eps = T(1e-5)) {
  detail::check_norm_param("rmsnorm", "weight", weight, x);
  detail::check_norm_eps("rmsnorm", eps);
  const std::int64_t R = x.shape().rows(), C = x.shape().cols();
  Tape<T, D>* tape = detail::common_tape("rmsnorm", x, weight);
  Tensor<T, D> out = detail::new_output(tape, x.shape());
  const bool recording = detail::records(x, weight);
  Tensor<T, D> rstd;  // (R), saved for the backward
  if (recording) rstd = tape->empty(Shape{R});
  kernels::rmsnorm_forward(D{}, x.value().data(), weight.value().data(), eps, out.data(),
                           rstd.data(), R, C);
  if (!recording) return detail::unrecorded(out, tape);

  return tape->record(out, [X = x.value(), W = weight.value(), rstd, ix = x.node(),
                            iw = weight.node(), R, C](Tape<T, D>& t, const Tensor<T, D>& dy) {
    Tensor<T, D> dx = t.grad_sink(ix), dw = t.grad_sink(iw);
    Tensor<T, D> scratch;  // (chunks, C): per-chunk column sums of dw
    const std::int64_t n = kernels::rmsnorm_backward_scratch(D{}, R, C);
    if (dw && n > 0) scratch = t.empty(Shape{n});
    kernels::rmsnorm_backward(D{}, dy.data(), X.data(), W.data(), rstd.data(), dx.data(),
                              dw.data(), scratch.data(), R, C);
  });
}

}  // namespace mla
