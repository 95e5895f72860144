// mla/autodiff/ops/dropout.hpp — inverted dropout with a reproducible, recomputed mask.
//
//   dropout(x [...], p, seed) -> [...]
//     training (GradMode on): each element is zeroed with probability p, kept ones scaled by
//     1 / (1 - p); the mask is a hash of (seed, flat element index) — the same for any thread
//     count — and the backward recomputes it instead of storing it.
//     inference (GradMode off) or p == 0: returns x itself and records nothing.
// A training loop passes a fresh seed per call site and step (e.g. mix of step and layer).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {

template <class T, Device D>
Var<T, D> dropout(const Var<T, D>& x, std::type_identity_t<T> p, std::uint64_t seed) {
  if (!(p >= T(0) && p < T(1))) {
    throw ArgumentError("dropout: probability p = " + std::to_string(p) +
                        " is outside [0, 1)");
  }
  if (!GradMode::enabled() || p == T(0)) return x;
  const std::int64_t n = x.numel();
  Tape<T, D>* tape = detail::common_tape("dropout", x);
  Tensor<T, D> out = detail::new_output(tape, x.shape());
  kernels::dropout_forward(D{}, x.value().data(), out.data(), n, p, seed);
  if (!detail::records(x)) return detail::unrecorded(out, tape);

  return tape->record(out, [ix = x.node(), n, p, seed](Tape<T, D>& t, const Tensor<T, D>& dy) {
    if (auto dx = t.grad_sink(ix)) kernels::dropout_backward(D{}, dy.data(), dx.data(), n, p, seed);
  });
}

}  // namespace mla
