// mla/autodiff/closure.hpp — a move-only callable stored inline, without heap allocation.
//
// Every recorded op keeps its backward as a closure next to its forward. std::function would
// allocate for any capture larger than a pointer or two; this keeps captures inside the tape
// node, so recording a step allocates nothing once the tape has reached its size.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace mla::detail {

template <class Signature, std::size_t Capacity>
class InplaceFunction;

template <class R, class... Args, std::size_t Capacity>
class InplaceFunction<R(Args...), Capacity> {
 public:
  InplaceFunction() = default;

  template <class F>
    requires(!std::is_same_v<std::decay_t<F>, InplaceFunction> &&
             std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
  InplaceFunction(F&& f) {  // NOLINT(google-explicit-constructor): a closure converts in place
    using Fn = std::decay_t<F>;
    static_assert(sizeof(Fn) <= Capacity,
                  "mla: this backward closure captures more bytes than a tape node holds; "
                  "capture less (node ids, tensors it needs) or raise kClosureCapacity");
    static_assert(alignof(Fn) <= alignof(std::max_align_t),
                  "mla: over-aligned closure captures are not supported");
    static_assert(std::is_nothrow_move_constructible_v<Fn>,
                  "mla: closure captures must be nothrow-movable");
    ::new (static_cast<void*>(buffer_)) Fn(std::forward<F>(f));
    ops_ = &kOps<Fn>;
  }

  InplaceFunction(InplaceFunction&& other) noexcept { take(other); }
  InplaceFunction& operator=(InplaceFunction&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  InplaceFunction(const InplaceFunction&) = delete;
  InplaceFunction& operator=(const InplaceFunction&) = delete;
  ~InplaceFunction() { reset(); }

  explicit operator bool() const { return ops_ != nullptr; }
  R operator()(Args... args) { return ops_->invoke(buffer_, std::forward<Args>(args)...); }

  void reset() {
    if (ops_) ops_->destroy(buffer_);
    ops_ = nullptr;
  }

 private:
  struct Ops {
    R (*invoke)(void*, Args&&...);
    void (*move_to)(void* dst, void* src);
    void (*destroy)(void*);
  };
  template <class Fn>
  static constexpr Ops kOps = {
      [](void* p, Args&&... a) -> R { return (*static_cast<Fn*>(p))(std::forward<Args>(a)...); },
      [](void* dst, void* src) {
        ::new (dst) Fn(std::move(*static_cast<Fn*>(src)));
        static_cast<Fn*>(src)->~Fn();
      },
      [](void* p) { static_cast<Fn*>(p)->~Fn(); }};

  void take(InplaceFunction& other) noexcept {
    if (other.ops_) {
      other.ops_->move_to(buffer_, other.buffer_);
      ops_ = std::exchange(other.ops_, nullptr);
    }
  }

  alignas(std::max_align_t) std::byte buffer_[Capacity];
  const Ops* ops_ = nullptr;
};

}  // namespace mla::detail
