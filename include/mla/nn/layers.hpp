// mla/nn/layers.hpp — the building blocks the model's layers share.
//
//   bind(tape, store, id)          a parameter on the tape: a leaf whose gradient accumulates
//                                  into the store (training), a constant under NoGradGuard
//   linear(x [..., In], W [Out, In] (, b [Out]))      x @ W.T (+ b), PyTorch's Linear
//   LayerNormParams                weight and bias of a LayerNorm, declared by name
//   LatentNormParams               an MLA latent's norm: LayerNorm, RMSNorm (weight) or none
//   expand_heads(x [B, T, R], H)   -> [B, T, H, R], every head a copy (its gradient the sum)
#pragma once

#include <algorithm>
#include <array>
#include <span>
#include <string>

#include "mla/autodiff.hpp"
#include "mla/model/config.hpp"
#include "mla/nn/parameters.hpp"

namespace mla::nn {

template <class T, Device D>
Var<T, D> bind(Tape<T, D>& tape, const ParameterStore<T, D>& store, std::int32_t id) {
  return GradMode::enabled() ? tape.leaf(store.value(id), store.grad(id))
                             : tape.constant(store.value(id));
}

template <class T, Device D>
Var<T, D> linear(const Var<T, D>& x, const Var<T, D>& weight) {
  return matmul(x, weight, Transpose::No, Transpose::Yes);
}
template <class T, Device D>
Var<T, D> linear(const Var<T, D>& x, const Var<T, D>& weight, const Var<T, D>& bias) {
  return mla::linear(x, weight, bias);
}

struct LayerNormParams {
  std::int32_t weight = -1, bias = -1;

  template <class T, Device D>
  static LayerNormParams declare(ParameterStore<T, D>& store, const std::string& name,
                                 std::int64_t size) {
    return {store.declare(name + ".weight", {size}, ParamInit::Ones),
            store.declare(name + ".bias", {size}, ParamInit::Zeros)};
  }
  template <class T, Device D>
  Var<T, D> operator()(Tape<T, D>& tape, const ParameterStore<T, D>& store, const Var<T, D>& x,
                       double eps) const {
    return layernorm(x, bind(tape, store, weight), bind(tape, store, bias), static_cast<T>(eps));
  }
};

/// The norm of an MLA latent, by the config's latent_norm: LayerNorm (NAME.weight, NAME.bias),
/// RMSNorm (NAME.weight) or the identity (no parameters).
struct LatentNormParams {
  LatentNorm kind = LatentNorm::LayerNorm;
  std::int32_t weight = -1, bias = -1;

  template <class T, Device D>
  static LatentNormParams declare(ParameterStore<T, D>& store, const std::string& name, std::int64_t size,
                                  LatentNorm kind) {
    LatentNormParams p{kind};
    if (kind == LatentNorm::None) return p;
    p.weight = store.declare(name + ".weight", {size}, ParamInit::Ones);
    if (kind == LatentNorm::LayerNorm) p.bias = store.declare(name + ".bias", {size}, ParamInit::Zeros);
    return p;
  }
  template <class T, Device D>
  Var<T, D> operator()(Tape<T, D>& tape, const ParameterStore<T, D>& store, const Var<T, D>& x,
                       double eps) const {
    switch (kind) {
      case LatentNorm::LayerNorm:
        return layernorm(x, bind(tape, store, weight), bind(tape, store, bias), static_cast<T>(eps));
      case LatentNorm::RmsNorm: return rmsnorm(x, bind(tape, store, weight), static_cast<T>(eps));
      case LatentNorm::None: break;
    }
    return x;
  }
};

template <class T, Device D>
Var<T, D> expand_heads(const Var<T, D>& x, std::int64_t heads) {
  const Shape& s = x.shape();
  const Var<T, D> one = reshape(x, Shape{s[0], s[1], 1, s[2]});
  if (heads == 1) return one;
  // `heads` copies of `one` side by side, grouped as concat groups a longer list (the first
  // kConcatInline, then that and the next kConcatInline - 1, ...), from an array on the stack.
  constexpr auto kInline = static_cast<std::int64_t>(mla::detail::kConcatInline);
  std::array<Var<T, D>, mla::detail::kConcatInline> group;
  group.fill(one);
  std::int64_t n = std::min(heads, kInline);
  Var<T, D> out = concat(std::span<const Var<T, D>>(group.data(), static_cast<std::size_t>(n)));
  for (std::int64_t left = heads - n; left > 0; left -= n) {
    n = std::min(left, kInline - 1);
    group[0] = out;
    out = concat(std::span<const Var<T, D>>(group.data(), static_cast<std::size_t>(n + 1)));
  }
  return reshape(out, Shape{s[0], s[1], heads, s[2]});
}

}  // namespace mla::nn
