// mla/autodiff/tape.hpp — reverse-mode autodiff: the tape of recorded ops and the Var handle.
//
// A Tape is a flat vector of nodes in the order the forward ran them, so it is already
// topologically sorted: backward walks it from the root down once. Each node holds its
// gradient buffer and the closure that pushes that gradient to its inputs. `clear()` keeps
// the vector's capacity and resets the activation arena, so a training step that records the
// same graph every time allocates nothing after the first one.
//
//   Tape<float> tape;
//   Var<float> w = tape.leaf(weights, weight_grads);   // a parameter: grads accumulate there
//   Var<float> x = tape.constant(inputs);
//   Var<float> loss = mean(relu(matmul(x, w, Transpose::No, Transpose::Yes)));
//   loss.backward();                                    // weight_grads += d loss / d w
//   tape.clear();                                       // ready for the next step
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mla/autodiff/closure.hpp"
#include "mla/autodiff/grad_mode.hpp"
#include "mla/core/arena.hpp"
#include "mla/core/error.hpp"
#include "mla/core/tensor.hpp"

namespace mla {

template <class T, Device D>
class Tape;

/// Bytes a backward closure may capture: enough for five tensors and a few sizes.
inline constexpr std::size_t kClosureCapacity = 448;

/// A tensor value together with its place on a tape (if any). Cheap to copy.
template <class T, Device D = Cpu>
class Var {
 public:
  using TensorT = Tensor<T, D>;

  Var() = default;
  /// A constant that is on no tape.
  explicit Var(TensorT value) : value_(std::move(value)) {}
  /// A value on `tape` at `node`; node -1 is a constant that only uses the tape's arena.
  Var(TensorT value, Tape<T, D>* tape, std::int32_t node = -1)
      : value_(std::move(value)), tape_(tape), node_(node) {}

  [[nodiscard]] const TensorT& value() const { return value_; }
  [[nodiscard]] const Shape& shape() const { return value_.shape(); }
  [[nodiscard]] std::int64_t numel() const { return value_.numel(); }
  [[nodiscard]] Tape<T, D>* tape() const { return tape_; }
  [[nodiscard]] std::int32_t node() const { return node_; }
  [[nodiscard]] bool requires_grad() const { return tape_ != nullptr && node_ >= 0; }

  /// Backpropagates from this scalar (one element) with seed 1.
  void backward() const;
  /// Backpropagates from this value with `seed` as its gradient (same shape).
  void backward(const TensorT& seed) const;
  /// The gradient accumulated for this value by the last backward; undefined if none reached it.
  [[nodiscard]] TensorT grad() const;

 private:
  TensorT value_;
  Tape<T, D>* tape_ = nullptr;
  std::int32_t node_ = -1;
};

template <class T, Device D = Cpu>
class Tape {
 public:
  using TensorT = Tensor<T, D>;
  using VarT = Var<T, D>;
  /// Propagates `grad_out` (the node's gradient) into the gradients of the node's inputs.
  using Backward = detail::InplaceFunction<void(Tape&, const TensorT& grad_out), kClosureCapacity>;

  /// A gradient buffer and whether an op adds into it (true) or must overwrite it (false).
  struct GradTarget {
    TensorT grad;
    bool accumulate = true;
    explicit operator bool() const { return grad.defined(); }
  };

  Tape() = default;
  Tape(const Tape&) = delete;  // Vars point at their tape
  Tape& operator=(const Tape&) = delete;

  /// A leaf that requires grad; its gradient buffer comes from the tape.
  VarT leaf(TensorT value) { return push(std::move(value), TensorT{}, Backward{}); }
  /// A leaf whose gradient accumulates into `grad` (same shape), e.g. a parameter's gradient.
  VarT leaf(TensorT value, TensorT grad) {
    if (!(grad.shape() == value.shape())) {
      throw ShapeError("leaf: gradient buffer " + grad.shape().str() + " for value " +
                       value.shape().str());
    }
    return push(std::move(value), std::move(grad), Backward{});
  }
  /// A value that needs no gradient but lives beside the tape.
  VarT constant(TensorT value) { return VarT(std::move(value), this, -1); }

  /// Uninitialized activation memory, valid until the next `clear()`.
  TensorT empty(Shape shape) { return TensorT::empty(shape, arena_); }
  /// Uninitialized activation memory holding another element type (token ids, positions).
  template <TensorScalar U>
  Tensor<U, D> empty_as(Shape shape) {
    return Tensor<U, D>::empty(shape, arena_);
  }
  TensorT zeros(Shape shape) {
    TensorT t = empty(shape);
    t.fill_zero();
    return t;
  }

  /// Records an op's output `value` whose gradient `backward` propagates to its inputs.
  VarT record(TensorT value, Backward backward) {
    return push(std::move(value), TensorT{}, std::move(backward));
  }

  /// Gradient buffer of `node` for accumulation (`+=`), zero-filled on first use; undefined
  /// for node -1 (a constant), so a closure can skip inputs that need no gradient.
  TensorT grad_sink(std::int32_t node) {
    if (node < 0) return {};
    Node& n = nodes_[static_cast<std::size_t>(node)];
    if (!n.grad) {
      n.grad = empty(n.shape);
      n.blank = true;
    }
    if (n.blank) {
      n.grad.fill_zero();
      n.blank = false;
    }
    return n.grad;
  }

  /// Gradient buffer of `node` for an op that writes its whole contribution in one go: with
  /// `accumulate` false the buffer holds nothing yet and the op must overwrite every element
  /// (no zero-fill first); with true it adds, as into grad_sink. Undefined for node -1.
  GradTarget grad_target(std::int32_t node) {
    if (node < 0) return {};
    Node& n = nodes_[static_cast<std::size_t>(node)];
    if (!n.grad) n.grad = empty(n.shape);
    else if (!n.blank) return {n.grad, true};
    n.blank = false;
    return {n.grad, false};
  }

  /// The gradient currently held for `node`; undefined if nothing reached it.
  [[nodiscard]] TensorT grad(std::int32_t node) const {
    if (node < 0 || node >= size()) return {};
    const Node& n = nodes_[static_cast<std::size_t>(node)];
    return n.blank ? TensorT{} : n.grad;
  }

  /// Backpropagates from `root` with gradient `seed`. Gradients of leaves accumulate across
  /// calls; those of intermediate nodes start from zero at every call.
  void backward(const VarT& root, const TensorT& seed) {
    if (root.tape() != this || !root.requires_grad()) {
      throw AutodiffError("backward: the value was not recorded on this tape (it needs no grad)");
    }
    if (!(seed.shape() == root.shape())) {
      throw ShapeError("backward: seed " + seed.shape().str() + " for value " +
                       root.shape().str());
    }
    for (Node& n : nodes_) {
      if (n.backward && n.grad) n.blank = true;  // an earlier backward's: start from nothing
    }
    grad_target(root.node()).grad.copy_from(seed);
    for (std::int32_t i = root.node(); i >= 0; --i) {
      Node& n = nodes_[static_cast<std::size_t>(i)];
      if (n.backward && n.grad && !n.blank) n.backward(*this, n.grad);
    }
  }

  /// Forgets every node and recycles the activation arena; capacities are kept.
  void clear() {
    nodes_.clear();
    arena_.reset();
  }

  [[nodiscard]] std::int32_t size() const { return static_cast<std::int32_t>(nodes_.size()); }
  [[nodiscard]] const Arena<D>& arena() const { return arena_; }

 private:
  struct Node {
    Shape shape;
    TensorT grad;
    Backward backward;   // empty for leaves
    bool blank = false;  // grad's memory holds no gradient yet (not even zeros)
  };

  VarT push(TensorT value, TensorT grad, Backward backward) {
    const Shape shape = value.shape();
    nodes_.push_back(Node{shape, std::move(grad), std::move(backward)});
    return VarT(std::move(value), this, size() - 1);
  }

  std::vector<Node> nodes_;
  Arena<D> arena_;
};

template <class T, Device D>
void Var<T, D>::backward() const {
  if (numel() != 1) {
    throw AutodiffError("backward: needs a scalar (one element) to start from, got shape " +
                        shape().str() + "; pass a seed gradient for a non-scalar");
  }
  if (!requires_grad()) {
    throw AutodiffError("backward: the value was not recorded on a tape (it needs no grad)");
  }
  TensorT seed = tape_->empty(shape());
  const T one = 1;
  D::copy_from_host(seed.data(), &one, sizeof(T));
  tape_->backward(*this, seed);
}

template <class T, Device D>
void Var<T, D>::backward(const TensorT& seed) const {
  if (!requires_grad()) {
    throw AutodiffError("backward: the value was not recorded on a tape (it needs no grad)");
  }
  tape_->backward(*this, seed);
}

template <class T, Device D>
Tensor<T, D> Var<T, D>::grad() const {
  return tape_ ? tape_->grad(node_) : TensorT{};
}

}  // namespace mla
