// mla/autodiff/op_support.hpp — internal: what every differentiable op does before its math.
//
// An op (1) finds the tape its inputs share, (2) allocates its output from that tape's arena
// (or the device heap for values on no tape), (3) runs the forward kernel, and (4) records a
// backward closure only when grad mode is on and some input requires grad.
#pragma once

#include <string>

#include "mla/autodiff/tape.hpp"
#include "mla/core/error.hpp"

namespace mla::detail {

/// The tape shared by the inputs of `op` (nullptr when none is on a tape).
template <class T, Device D, class... Rest>
Tape<T, D>* common_tape(const char* op, const Var<T, D>& first, const Rest&... rest) {
  Tape<T, D>* tape = first.tape();
  [[maybe_unused]] auto take = [&](const Var<T, D>& v) {
    if (v.tape() == nullptr) return;
    if (tape != nullptr && tape != v.tape()) {
      throw AutodiffError(std::string(op) + ": inputs were recorded on different tapes");
    }
    tape = v.tape();
  };
  (take(rest), ...);
  return tape;
}

/// Output storage: the tape's arena when there is a tape, else the device allocator.
template <class T, Device D>
Tensor<T, D> new_output(Tape<T, D>* tape, Shape shape) {
  return tape ? tape->empty(shape) : Tensor<T, D>::empty(shape);
}

/// Whether the op must record a backward: grad mode is on and some input requires grad.
template <class... V>
bool records(const V&... inputs) {
  return GradMode::enabled() && (inputs.requires_grad() || ...);
}

/// The op's result when it records nothing.
template <class T, Device D>
Var<T, D> unrecorded(Tensor<T, D> value, Tape<T, D>* tape) {
  return Var<T, D>(std::move(value), tape, -1);
}

/// False, but only once instantiated: the condition of a static_assert that must fire only for
/// the overload chosen by a misuse.
template <class...>
inline constexpr bool always_false = false;

/// "op: what a [2, 3] b [4]" — the shape part of an error message.
inline std::string shapes(const Shape& a, const Shape& b) { return a.str() + " and " + b.str(); }

}  // namespace mla::detail
