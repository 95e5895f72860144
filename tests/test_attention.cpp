// Causal attention: the tiled (flash) kernels against the reference, the op's gradients,
// causality, determinism across runs and thread counts, and misuse errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <mla/autodiff/ops/attention.hpp>
#include <mla/backend/cpu/attention.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using kernels::AttentionShape;
using mla::test::cast;
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::bit_identical;
using mla::test::random_tensor;
using mla::test::rel_diff;
using mla::test::ThreadsGuard;
using Vars = std::vector<Var<double>>;

namespace {

Shape q_shape(const AttentionShape& s) { return {s.B, s.H, s.Tq, s.Dk}; }
Shape k_shape(const AttentionShape& s) { return {s.B, s.G, s.Tk, s.Dk}; }
Shape v_shape(const AttentionShape& s) { return {s.B, s.G, s.Tk, s.Dv}; }
Shape o_shape(const AttentionShape& s) { return {s.B, s.H, s.Tq, s.Dv}; }

std::string describe(const AttentionShape& s) {
  return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " G=" + std::to_string(s.G) +
         " Tq=" + std::to_string(s.Tq) + " Tk=" + std::to_string(s.Tk) +
         " Dk=" + std::to_string(s.Dk) + " Dv=" + std::to_string(s.Dv);
}

/// Inputs of one case, random in [-1, 1) (q scaled up so the softmax is not flat).
template <class T>
struct Inputs {
  Tensor<T> q, k, v, dout;
  Inputs(const AttentionShape& s, std::uint64_t seed)
      : q(cast<T>(random_tensor(q_shape(s), seed, -2.0, 2.0))),
        k(cast<T>(random_tensor(k_shape(s), seed + 1))),
        v(cast<T>(random_tensor(v_shape(s), seed + 2))),
        dout(cast<T>(random_tensor(o_shape(s), seed + 3))) {}
};

/// Every shape combination of the flash-vs-reference test.
std::vector<AttentionShape> kernel_cases() {
  struct Heads {
    std::int64_t H, G;
  };
  struct Lens {
    std::int64_t Tq, Tk;
  };
  struct Dims {
    std::int64_t Dk, Dv;
  };
  const Heads heads[] = {{2, 2}, {4, 2}, {3, 1}};  // MHA, GQA, MQA
  const Lens lens[] = {{1, 1},  {5, 5},  {64, 64},  {65, 65}, {130, 130},
                       {1, 37}, {7, 70}, {70, 133}, {67, 260}};
  const Dims dims[] = {{8, 8}, {12, 5}};
  std::vector<AttentionShape> out;
  for (std::int64_t B : {1, 3})
    for (const Heads& h : heads)
      for (std::size_t i = 0; i < std::size(lens); ++i) {
        const Dims& d = dims[(i + static_cast<std::size_t>(B / 3)) % 2];  // each length gets both
        out.push_back({B, h.H, h.G, lens[i].Tq, lens[i].Tk, d.Dk, d.Dv});
      }
  return out;
}

/// Runs the op on leaves with gradient buffers; returns o, dq, dk, dv. The gradients
/// accumulate into buffers that already hold values (as a parameter's gradient does), so that
/// a change in the order of the additions shows in the bits.
template <class T>
std::vector<Tensor<T>> op_forward_backward(const AttentionShape& s, const Inputs<T>& in) {
  Tape<T> tape;
  std::vector<Tensor<T>> grads = {cast<T>(random_tensor(q_shape(s), 91)),
                                  cast<T>(random_tensor(k_shape(s), 92)),
                                  cast<T>(random_tensor(v_shape(s), 93))};
  auto q = tape.leaf(in.q.clone(), grads[0]);
  auto k = tape.leaf(in.k.clone(), grads[1]);
  auto v = tape.leaf(in.v.clone(), grads[2]);
  auto o = causal_attention(q, k, v);
  o.backward(in.dout);
  return {o.value().clone(), grads[0], grads[1], grads[2]};
}

}  // namespace

TEST_CASE("causal_attention: forward on a hand-computed case") {
  // B = H = G = 1, T = 2, D = 1, scale 1. Row 0 sees key 0 only; row 1 sees scores 2*1, 2*3.
  Tape<double> tape;
  auto q = tape.constant(Tensor<double>::from({1, 1, 2, 1}, {1.0, 2.0}));
  auto k = tape.constant(Tensor<double>::from({1, 1, 2, 1}, {1.0, 3.0}));
  auto v = tape.constant(Tensor<double>::from({1, 1, 2, 1}, {10.0, 20.0}));
  const double p1 = std::exp(6.0) / (std::exp(2.0) + std::exp(6.0));
  const auto o = causal_attention(q, k, v).value();  // default scale 1/sqrt(1)
  CHECK(o[0] == doctest::Approx(10.0).epsilon(1e-14));
  CHECK(o[1] == doctest::Approx(10.0 * (1 - p1) + 20.0 * p1).epsilon(1e-14));

  // Scale 0.5: scores 1 and 3.
  const double h1 = std::exp(3.0) / (std::exp(1.0) + std::exp(3.0));
  const auto oh = causal_attention(q, k, v, 0.5).value();
  CHECK(oh[1] == doctest::Approx(10.0 * (1 - h1) + 20.0 * h1).epsilon(1e-14));

  // One query against the two keys (decode): it sits at position 1 and sees both.
  auto q1 = tape.constant(Tensor<double>::from({1, 1, 1, 1}, {2.0}));
  const auto od = causal_attention(q1, k, v).value();
  CHECK(od.shape() == Shape{1, 1, 1, 1});
  CHECK(od[0] == doctest::Approx(o[1]).epsilon(1e-14));

  // The kernels' log-sum-exp, flash and reference.
  const AttentionShape s{1, 1, 1, 2, 2, 1, 1};
  double out[2], lse[2], out_ref[2], lse_ref[2];
  kernels::attention_forward(Cpu{}, s, 1.0, q.value().data(), k.value().data(), v.value().data(),
                             out, lse);
  kernels::attention_reference_forward(Cpu{}, s, 1.0, q.value().data(), k.value().data(),
                                       v.value().data(), out_ref, lse_ref);
  CHECK(lse[0] == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(lse[1] == doctest::Approx(std::log(std::exp(2.0) + std::exp(6.0))).epsilon(1e-14));
  CHECK(lse_ref[1] == doctest::Approx(lse[1]).epsilon(1e-14));
  CHECK(out_ref[1] == doctest::Approx(out[1]).epsilon(1e-14));
}

TEST_CASE_TEMPLATE("attention kernels: flash matches the reference, forward and backward", T, float,
                   double) {
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;
  ThreadsGuard threads(2);  // both backward schedules: fused (B*G >= 2) and two-pass (MQA, B=1)
  std::uint64_t seed = 1000;
  for (const AttentionShape& s : kernel_cases()) {
    CAPTURE(describe(s));
    const Inputs<T> in(s, seed += 10);
    const T scale = T(1) / std::sqrt(T(s.Dk));
    Tensor<T> o = Tensor<T>::empty(o_shape(s)), o_ref = Tensor<T>::empty(o_shape(s));
    Tensor<T> lse = Tensor<T>::empty({s.B, s.H, s.Tq}),
              lse_ref = Tensor<T>::empty({s.B, s.H, s.Tq});
    kernels::attention_forward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), o.data(),
                               lse.data());
    kernels::attention_reference_forward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(),
                                         o_ref.data(), lse_ref.data());
    CHECK(rel_diff(o, o_ref) <= tol);
    CHECK(rel_diff(lse, lse_ref) <= tol);

    // Gradients accumulate: both start from the same nonzero values.
    const Tensor<T> g0q = cast<T>(random_tensor(q_shape(s), seed + 5));
    const Tensor<T> g0k = cast<T>(random_tensor(k_shape(s), seed + 6));
    const Tensor<T> g0v = cast<T>(random_tensor(v_shape(s), seed + 7));
    Tensor<T> dq = g0q.clone(), dk = g0k.clone(), dv = g0v.clone();
    Tensor<T> dq_ref = g0q.clone(), dk_ref = g0k.clone(), dv_ref = g0v.clone();
    kernels::attention_backward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), o.data(),
                                lse.data(), in.dout.data(), dq.data(), dk.data(), dv.data());
    kernels::attention_reference_backward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(),
                                          in.dout.data(), dq_ref.data(), dk_ref.data(),
                                          dv_ref.data());
    CHECK(rel_diff(dq, dq_ref) <= tol);
    CHECK(rel_diff(dk, dk_ref) <= tol);
    CHECK(rel_diff(dv, dv_ref) <= tol);

    // One gradient at a time (the others null), as when only some inputs require grad.
    Tensor<T> dq1 = g0q.clone(), dk1 = g0k.clone(), dv1 = g0v.clone();
    kernels::attention_backward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), o.data(),
                                lse.data(), in.dout.data(), dq1.data(), static_cast<T*>(nullptr),
                                static_cast<T*>(nullptr));
    kernels::attention_backward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), o.data(),
                                lse.data(), in.dout.data(), static_cast<T*>(nullptr), dk1.data(),
                                static_cast<T*>(nullptr));
    kernels::attention_backward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), o.data(),
                                lse.data(), in.dout.data(), static_cast<T*>(nullptr),
                                static_cast<T*>(nullptr), dv1.data());
    CHECK(bit_identical(dq1, dq));
    CHECK(bit_identical(dk1, dk));
    CHECK(bit_identical(dv1, dv));
  }
}

TEST_CASE("causal_attention: gradient check over shapes (odd, size 1, GQA, MQA, Tq < Tk)") {
  const AttentionShape cases[] = {
      {1, 1, 1, 1, 1, 1, 1},  // size 1
      {2, 2, 2, 3, 3, 3, 2},  // MHA, odd sizes, Dk != Dv
      {1, 4, 2, 5, 5, 3, 4},  // GQA
      {2, 3, 1, 4, 4, 2, 3},  // MQA
      {1, 2, 1, 2, 5, 3, 2},  // Tq < Tk (prefill against a cache)
      {2, 2, 1, 1, 4, 2, 2},  // one query (decode)
  };
  std::uint64_t seed = 1;
  for (const AttentionShape& s : cases) {
    CAPTURE(describe(s));
    check_jacobian([](auto&, Vars& v) { return causal_attention(v[0], v[1], v[2]); },
                   {random_tensor(q_shape(s), seed, -2.0, 2.0), random_tensor(k_shape(s), seed + 1),
                    random_tensor(v_shape(s), seed + 2)});
    seed += 3;
  }
  SUBCASE("explicit scale") {
    const AttentionShape s{1, 2, 1, 3, 4, 2, 3};
    check_jacobian([](auto&, Vars& v) { return causal_attention(v[0], v[1], v[2], -0.7); },
                   {random_tensor(q_shape(s), 50), random_tensor(k_shape(s), 51),
                    random_tensor(v_shape(s), 52)});
  }
  SUBCASE("q, k and v are one tensor (self-attention of x with itself)") {
    check_jacobian([](auto&, Vars& v) { return causal_attention(v[0], v[0], v[0]); },
                   {random_tensor({2, 2, 4, 3}, 60)});
  }
}

TEST_CASE("causal_attention: float agrees with double") {
  const AttentionShape s{2, 4, 2, 70, 70, 12, 5};
  check_float_matches_double([](auto&, auto& v) { return causal_attention(v[0], v[1], v[2]); },
                             {random_tensor(q_shape(s), 3, -2.0, 2.0), random_tensor(k_shape(s), 4),
                              random_tensor(v_shape(s), 5)});
}

TEST_CASE(
    "causal_attention: the op matches the reference with the default scale, and only "
    "inputs that require grad get one") {
  const AttentionShape s{2, 4, 2, 9, 20, 6, 3};
  const Inputs<double> in(s, 77);
  const double scale = 1.0 / std::sqrt(6.0);
  Tensor<double> o_ref = Tensor<double>::empty(o_shape(s));
  kernels::attention_reference_forward(Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(),
                                       o_ref.data(), static_cast<double*>(nullptr));
  Tensor<double> dq_ref = Tensor<double>::zeros(q_shape(s));
  kernels::attention_reference_backward(
      Cpu{}, s, scale, in.q.data(), in.k.data(), in.v.data(), in.dout.data(), dq_ref.data(),
      static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  Tape<double> tape;
  auto q = tape.leaf(in.q);
  auto k = tape.constant(in.k);
  auto v = tape.constant(in.v);
  auto o = causal_attention(q, k, v);
  CHECK(o.shape() == o_shape(s));
  CHECK(rel_diff(o.value(), o_ref) <= 1e-12);
  o.backward(in.dout);
  REQUIRE(q.grad().defined());
  CHECK(rel_diff(q.grad(), dq_ref) <= 1e-12);

  // Under NoGradGuard nothing is recorded.
  NoGradGuard no_grad;
  auto o2 = causal_attention(q, k, v);
  CHECK_FALSE(o2.requires_grad());
  CHECK(bit_identical(o2.value(), o.value()));
}

TEST_CASE("causal_attention: a key or value at a later position does not change earlier rows") {
  struct Case {
    AttentionShape s;
    std::int64_t j;  // the key position perturbed
  };
  const Case cases[] = {{{2, 4, 2, 130, 130, 8, 6}, 100},
                        {{1, 3, 1, 7, 70, 5, 5}, 66},
                        {{1, 2, 2, 129, 129, 4, 4}, 128}};
  for (const Case& c : cases) {
    const AttentionShape& s = c.s;
    CAPTURE(describe(s));
    const Inputs<double> in(s, 5);
    Tape<double> tape;
    const auto base =
        causal_attention(tape.constant(in.q), tape.constant(in.k), tape.constant(in.v)).value();
    Tensor<double> k2 = in.k.clone(), v2 = in.v.clone();
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t g = 0; g < s.G; ++g) {
        for (std::int64_t d = 0; d < s.Dk; ++d) k2.at(b, g, c.j, d) += 3.0;
        for (std::int64_t d = 0; d < s.Dv; ++d) v2.at(b, g, c.j, d) -= 5.0;
      }
    const auto moved =
        causal_attention(tape.constant(in.q), tape.constant(k2), tape.constant(v2)).value();
    const std::int64_t first_seeing = c.j - s.offset();  // first query row that sees key j
    bool earlier_same = true, later_changed = true;
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t h = 0; h < s.H; ++h)
        for (std::int64_t i = 0; i < s.Tq; ++i) {
          bool same = true;
          for (std::int64_t d = 0; d < s.Dv; ++d)
            same = same && base.at(b, h, i, d) == moved.at(b, h, i, d);
          if (i < first_seeing)
            earlier_same = earlier_same && same;
          else
            later_changed = later_changed && !same;
        }
    CHECK(earlier_same);
    CHECK(later_changed);
  }
}

TEST_CASE_TEMPLATE("causal_attention: bit-identical across runs and thread counts", T, float,
                   double) {
  const AttentionShape cases[] = {
      {2, 4, 4, 130, 130, 16, 16},  // MHA: one backward task per (b, g)
      {1, 4, 2, 130, 130, 12, 8},   // GQA with two tasks
      {1, 8, 1, 130, 130, 16, 8},   // MQA, B=1: one (b, g) task, two-pass split with threads
      {3, 4, 1, 70, 133, 8, 8},     // MQA, B=3, Tq < Tk
  };
  for (const AttentionShape& s : cases) {
    CAPTURE(describe(s));
    const Inputs<T> in(s, 31);
    std::vector<Tensor<T>> first;
    {
      ThreadsGuard one(1);
      first = op_forward_backward(s, in);
      const auto again = op_forward_backward(s, in);
      for (std::size_t i = 0; i < first.size(); ++i) CHECK(bit_identical(again[i], first[i]));
    }
    for (int n : {2, 3}) {
      CAPTURE(n);
      ThreadsGuard threads(n);
      const auto run = op_forward_backward(s, in);
      const auto again = op_forward_backward(s, in);
      for (std::size_t i = 0; i < first.size(); ++i) {
        CAPTURE(i);
        CHECK(bit_identical(run[i], first[i]));
        CHECK(bit_identical(again[i], first[i]));
      }
    }
  }
}

TEST_CASE("causal_attention: misuse throws and names the problem") {
  Tape<double> tape;
  auto z = [&](Shape s) { return tape.leaf(Tensor<double>::zeros(s)); };
  auto q = z({2, 4, 5, 8});
  auto k = z({2, 2, 5, 8});
  auto v = z({2, 2, 5, 6});
  CHECK(causal_attention(q, k, v).shape() == Shape{2, 4, 5, 6});

  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, z({2, 3, 5, 8}), z({2, 3, 5, 6}));
      },
      {"causal_attention", "H = 4", "G = 3", "multiple"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, z({3, 2, 5, 8}), z({3, 2, 5, 6}));
      },
      {"causal_attention", "batch", "[2, 4, 5, 8]", "[3, 2, 5, 8]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, z({2, 2, 5, 7}), v);
      },
      {"causal_attention", "Dk", "8 vs 7"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, k, z({2, 2, 6, 6}));
      },
      {"causal_attention", "length Tk", "[2, 2, 5, 8]", "[2, 2, 6, 6]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, k, z({2, 1, 5, 6}));
      },
      {"causal_attention", "kv heads G"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(z({2, 4, 6, 8}), k, v);
      },
      {"causal_attention", "Tq = 6 > Tk = 5"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(z({4, 5, 8}), k, v);
      },
      {"causal_attention", "rank 4", "[4, 5, 8]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)causal_attention(q, z({2, 0, 5, 8}), z({2, 0, 5, 6}));
      },
      {"causal_attention", "G = 0"});
  check_throws_naming<ArgumentError>(
      [&] { (void)causal_attention(q, k, v, std::numeric_limits<double>::infinity()); },
      {"causal_attention", "scale", "finite"});
  Tape<double> other;
  check_throws_naming<AutodiffError>(
      [&] {
        (void)causal_attention(q, other.leaf(Tensor<double>::zeros({2, 2, 5, 8})), v);
      },
      {"causal_attention", "different tapes"});
}
