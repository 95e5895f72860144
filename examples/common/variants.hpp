// examples/common/variants.hpp — from a command line's --attn/--rope (or a checkpoint's
// config) to the attention policy type. The only place the programs name the variants: each
// program's work is one template `f.template operator()<Policy>()`.
#pragma once

#include <stdexcept>
#include <string>

#include <mla/mla.hpp>

namespace examples {

template <mla::Rope R>
using GqaDynamic = mla::GQA<mla::Dynamic, R>;

/// The variants the programs build, with every size taken from the runtime config.
///   mha|gqa|mqa  x  none|full|decoupled,   mla  x  none|decoupled
template <class F>
decltype(auto) with_policy(const std::string& attn, const std::string& rope, F&& f) {
  using mla::Rope, mla::Dynamic;
  auto by_rope = [&]<template <Rope> class Family>() -> decltype(auto) {
    if (rope == "none") return f.template operator()<Family<Rope::None>>();
    if (rope == "full") return f.template operator()<Family<Rope::Full>>();
    if (rope == "decoupled") return f.template operator()<Family<Rope::Decoupled>>();
    throw std::invalid_argument("unknown --rope '" + rope + "' (expected none, full or decoupled)");
  };
  if (attn == "mha") return by_rope.template operator()<mla::MHA>();
  if (attn == "gqa") return by_rope.template operator()<GqaDynamic>();
  if (attn == "mqa") return by_rope.template operator()<mla::MQA>();
  if (attn == "mla") {
    // The rope size (0 or not) comes from the config; "full" has no meaning for MLA.
    if (rope == "full") throw std::invalid_argument("--rope full is not an MLA variant (use decoupled or none)");
    if (rope != "none" && rope != "decoupled") {
      throw std::invalid_argument("unknown --rope '" + rope + "' (expected none or decoupled for mla)");
    }
    return f.template operator()<mla::MLA<Dynamic, Dynamic, Dynamic>>();
  }
  throw std::invalid_argument("unknown --attn '" + attn + "' (expected mha, gqa, mqa or mla)");
}

/// The policy of a checkpoint's stored config.
template <class F>
decltype(auto) with_checkpoint_policy(const mla::ModelConfig& stored, F&& f) {
  return with_policy(mla::to_string(stored.attention), mla::to_string(stored.rope), std::forward<F>(f));
}

}  // namespace examples
