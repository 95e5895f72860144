// tests/support/policies.hpp — the attention variants the model tests run over, and their
// small model: every attention of the reference experiments, GQA, and MLA without query
// compression.
#pragma once

#include <mla/mla.hpp>

namespace mla::test {

using MhaNoRope = MHA<Rope::None>;
using MhaRope = MHA<Rope::Full>;
using MhaDecoupled = MHA<Rope::Decoupled>;
using MqaRope = MQA<Rope::Full>;
using MqaNoRope = MQA<Rope::None>;
using Gqa = GQA<2, Rope::Full>;
using GqaDecoupled = GQA<2, Rope::Decoupled>;
using MlaNoRope = MLA<Dynamic, 0, Dynamic>;
using MlaRope = MLA<>;
using MlaNoQ = MLA<12, 4, 0>;

/// d_model 32, 4 heads, 2 layers: small enough to check in double, large enough for every path.
inline ModelConfig small_config() {
  return ModelConfig{.vocab_size = 37, .d_model = 32, .n_heads = 4, .n_layers = 2, .max_seq_len = 48};
}

}  // namespace mla::test

/// Every variant above, for TEST_CASE_TEMPLATE.
#define MLA_TEST_ALL_POLICIES                                                                               \
  mla::test::MhaNoRope, mla::test::MhaRope, mla::test::MhaDecoupled, mla::test::MqaRope, mla::test::MqaNoRope, \
      mla::test::Gqa, mla::test::GqaDecoupled, mla::test::MlaNoRope, mla::test::MlaRope, mla::test::MlaNoQ
