// Embedding and rotary position embedding (rope): forward values on hand-computed cases,
// gradient checks, properties (position shift, per-batch offsets, norm preservation), misuse.
#include <doctest/doctest.h>

#include <cmath>
#include <mla/autodiff/ops/embedding.hpp>
#include <mla/autodiff/ops/rope.hpp>
#include <vector>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::random_tensor;
using VarD = Var<double>;
using Vars = std::vector<VarD>;
using Ids = Tensor<std::int32_t>;

// ---- embedding -----------------------------------------------------------------------------

TEST_CASE_TEMPLATE("embedding: forward gathers rows by id", T, float, double) {
  Tape<T> tape;
  auto w = tape.leaf(Tensor<T>::from({4, 3}, {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32}));
  const Ids ids = Ids::from({2, 3}, {3, 0, 3, 1, 2, 0});
  auto out = embedding(w, ids);
  CHECK(out.shape() == Shape{2, 3, 3});
  CHECK(out.value().to_vector() ==
        std::vector<T>{30, 31, 32, 0, 1, 2, 30, 31, 32, 10, 11, 12, 20, 21, 22, 0, 1, 2});
  // rank-1 ids
  auto one = embedding(w, Ids::from({1}, {2}));
  CHECK(one.shape() == Shape{1, 3});
  CHECK(one.value().to_vector() == std::vector<T>{20, 21, 22});
}

TEST_CASE("embedding: backward scatter-adds, repeated ids accumulate") {
  Tape<double> tape;
  Tensor<double> grad = Tensor<double>::zeros({3, 2});
  auto w = tape.leaf(Tensor<double>::zeros({3, 2}), grad);
  auto out = embedding(w, Ids::from({4}, {2, 0, 2, 2}));
  out.backward(Tensor<double>::from({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8}));
  CHECK(grad.to_vector() == std::vector<double>{3, 4, 0, 0, 13, 16});
}

TEST_CASE("embedding: gradient check with repeated ids, ids of rank 1 to 3") {
  struct Case {
    Shape w;
    Ids ids;
  };
  const Case cases[] = {
      {{5, 3}, Ids::from({6}, {1, 4, 1, 1, 0, 4})},
      {{1, 1}, Ids::from({3}, {0, 0, 0})},
      {{7, 5}, Ids::from({2, 3}, {6, 2, 6, 0, 2, 2})},
      {{4, 2}, Ids::from({2, 2, 2}, {3, 3, 1, 0, 1, 3, 2, 3})},
  };
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    CAPTURE(c.w.str());
    CAPTURE(c.ids.shape().str());
    check_jacobian([&](auto&, Vars& v) { return embedding(v[0], c.ids); },
                   {random_tensor(c.w, seed++)});
  }
}

TEST_CASE("embedding: parallel backward equals the serial reference exactly, any thread count") {
  const std::int64_t V = 37, C = 300, N = 4000;  // N * C above the parallel grain, many bands
  Ids ids = Ids::empty({N});
  for (std::int64_t n = 0; n < N; ++n) ids[n] = static_cast<std::int32_t>((n * 7919) % V);
  const auto dout = random_tensor<float>({N, C}, 5);
  std::vector<float> reference(static_cast<std::size_t>(V * C), 0.0f);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      reference[static_cast<std::size_t>(ids[n] * C + c)] += dout[n * C + c];

  for (int nt : {1, 2, 3}) {
    const test::ThreadsGuard guard(nt);
    Tape<float> tape;
    Tensor<float> grad = Tensor<float>::zeros({V, C});
    auto w = tape.leaf(random_tensor<float>({V, C}, 6), grad);
    embedding(w, ids).backward(dout);
    CHECK(grad.to_vector() == reference);
  }
}

TEST_CASE("embedding: float agrees with double") {
  const Ids ids = Ids::from({2, 4}, {0, 9, 3, 3, 7, 1, 9, 2});
  check_float_matches_double([&](auto&, auto& v) { return embedding(v[0], ids); },
                             {random_tensor({10, 33}, 3)});
}

TEST_CASE("embedding: misuse names the id, its position and the vocab, before any work") {
  Tape<double> tape;
  auto w = tape.leaf(Tensor<double>::zeros({64, 4}));
  const std::int32_t before = tape.size();
  check_throws_naming<ArgumentError>(
      [&] {
        (void)embedding(w, Ids::from({2, 3}, {1, 2, 3, 4, 70, 5}));
      },
      {"embedding", "id 70", "position 4", "64"});
  check_throws_naming<ArgumentError>(
      [&] {
        (void)embedding(w, Ids::from({3}, {0, -1, 2}));
      },
      {"embedding", "id -1", "position 1", "64"});
  check_throws_naming<ArgumentError>([&] { (void)embedding(w, Ids::from({1}, {64})); },
                                     {"id 64", "position 0", "64"});
  CHECK(tape.size() == before);  // nothing was recorded
  check_throws_naming<ShapeError>(
      [&] { (void)embedding(tape.leaf(Tensor<double>::zeros({8})), Ids::from({1}, {0})); },
      {"embedding", "weight", "[8]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)embedding(w, Ids::zeros({1, 1, 1, 1}));
      },
      {"embedding", "ids", "[1, 1, 1, 1]"});
}

// ---- rope ----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("rope: R = 2 rotates position t by t radians", T, float, double) {
  Tape<T> tape;
  // [B=1, T=2, R=2]: two tokens, both (1, 0); then both (0, 1)
  auto a = rope(tape.constant(Tensor<T>::from({1, 2, 2}, {1, 0, 1, 0}))).value();
  CHECK(a[0] == 1);  // position 0: unchanged
  CHECK(a[1] == 0);
  CHECK(a[2] == doctest::Approx(std::cos(1.0)).epsilon(1e-6));
  CHECK(a[3] == doctest::Approx(std::sin(1.0)).epsilon(1e-6));
  auto b = rope(tape.constant(Tensor<T>::from({1, 2, 2}, {0, 1, 0, 1}))).value();
  CHECK(b[2] == doctest::Approx(-std::sin(1.0)).epsilon(1e-6));
  CHECK(b[3] == doctest::Approx(std::cos(1.0)).epsilon(1e-6));
}

TEST_CASE("rope: R = 4 uses inv_freq = [1, 0.01] with theta 10000 (rotate-half pairs i, i + R/2)") {
  Tape<double> tape;
  const double x0 = 0.3, x1 = -1.2, x2 = 0.7, x3 = 2.5, p = 3.0;
  auto out = rope(tape.constant(Tensor<double>::from({1, 1, 4}, {x0, x1, x2, x3})), 3).value();
  const double c0 = std::cos(p), s0 = std::sin(p), c1 = std::cos(0.01 * p), s1 = std::sin(0.01 * p);
  CHECK(out[0] == doctest::Approx(x0 * c0 - x2 * s0).epsilon(1e-14));
  CHECK(out[1] == doctest::Approx(x1 * c1 - x3 * s1).epsilon(1e-14));
  CHECK(out[2] == doctest::Approx(x2 * c0 + x0 * s0).epsilon(1e-14));
  CHECK(out[3] == doctest::Approx(x3 * c1 + x1 * s1).epsilon(1e-14));
  // another theta: inv_freq = [1, 1/sqrt(theta)]
  auto o2 =
      rope(tape.constant(Tensor<double>::from({1, 1, 4}, {x0, x1, x2, x3})), 3, 100.0).value();
  CHECK(o2[1] == doctest::Approx(x1 * std::cos(0.3) - x3 * std::sin(0.3)).epsilon(1e-14));
}

/// x[:, t0:t0+n] of a [B, T, ...] tensor, copied.
static Tensor<double> time_slice(const Tensor<double>& x, std::int64_t t0, std::int64_t n) {
  Shape s = x.shape();
  const std::int64_t inner = x.numel() / (s[0] * s[1]);
  const std::int64_t Tn = s[1];
  s[1] = n;
  Tensor<double> out = Tensor<double>::empty(s);
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t i = 0; i < inner; ++i)
        out[(b * n + t) * inner + i] = x[(b * Tn + t0 + t) * inner + i];
  return out;
}

TEST_CASE("rope: a token at offset p equals the same token at position p of a longer sequence") {
  const auto x = random_tensor({2, 9, 3, 6}, 11);
  Tape<double> tape;
  for (std::int64_t start : {0, 4}) {
    const auto full = rope(tape.constant(x), start).value();
    for (std::int64_t t : {0, 3, 8}) {
      CAPTURE(start);
      CAPTURE(t);
      const auto one = rope(tape.constant(time_slice(x, t, 1)), start + t).value();
      CHECK(mla::test::max_abs_diff(one, time_slice(full, t, 1)) == 0.0);
    }
    // a chunk of 3 tokens (prefill continuation)
    const auto chunk = rope(tape.constant(time_slice(x, 5, 3)), start + 5).value();
    CHECK(mla::test::max_abs_diff(chunk, time_slice(full, 5, 3)) == 0.0);
  }
}

TEST_CASE("rope: per-batch offsets rotate each batch row from its own start") {
  const auto x = random_tensor({3, 4, 2, 8}, 12);
  const std::vector<std::int64_t> offsets{0, 5, 1000};
  Tape<double> tape;
  const auto ragged = rope(tape.constant(x), offsets).value();
  for (std::int64_t b = 0; b < 3; ++b) {
    CAPTURE(b);
    const auto row =
        rope(tape.constant(x.slice(b, b + 1)), offsets[static_cast<std::size_t>(b)]).value();
    CHECK(mla::test::max_abs_diff(row, ragged.slice(b, b + 1).clone()) == 0.0);
  }
  // equal offsets give the uniform-offset result
  const std::vector<std::int64_t> same{7, 7, 7};
  CHECK(mla::test::max_abs_diff(rope(tape.constant(x), same).value(),
                                rope(tape.constant(x), 7).value()) == 0.0);
}

TEST_CASE("rope: gradient check over shapes (with and without a head axis, R = 2, odd T)") {
  const Shape shapes[] = {{1, 1, 2}, {2, 3, 4}, {2, 5, 3, 6}, {1, 3, 1, 2}, {3, 1, 2, 4}};
  std::uint64_t seed = 20;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    const auto x = random_tensor(s, seed++);
    check_jacobian([](auto&, Vars& v) { return rope(v[0]); }, {x});
    check_jacobian([](auto&, Vars& v) { return rope(v[0], 13, 500.0); }, {x});
    std::vector<std::int64_t> offsets;
    for (std::int64_t b = 0; b < s[0]; ++b) offsets.push_back(3 * b + 1);
    check_jacobian([&](auto&, Vars& v) { return rope(v[0], offsets); }, {x});
  }
}

TEST_CASE("rope: a rotation preserves norms and its backward is the inverse rotation") {
  const Shape s{2, 5, 3, 8};
  const auto x = random_tensor(s, 30);
  Tape<double> tape;
  Tensor<double> grad = Tensor<double>::zeros(s);
  auto v = tape.leaf(x.clone(), grad);
  auto y = rope(v, 123456);
  const auto yv = y.value();
  // each (i, i + R/2) pair keeps its length
  for (std::int64_t row = 0; row < s.rows(); ++row) {
    for (std::int64_t i = 0; i < 4; ++i) {
      const std::int64_t a = row * 8 + i, b = a + 4;
      CHECK(std::hypot(yv[a], yv[b]) == doctest::Approx(std::hypot(x[a], x[b])).epsilon(1e-13));
    }
  }
  // R^T (R x) = x: backpropagating y itself gives back x
  y.backward(yv.clone());
  CHECK(mla::test::max_abs_diff(grad, x) < 1e-13);
}

TEST_CASE("rope: float agrees with double, also at large positions") {
  const auto x = random_tensor({2, 7, 3, 16}, 40);
  check_float_matches_double([](auto&, auto& v) { return rope(v[0]); }, {x});
  check_float_matches_double([](auto&, auto& v) { return rope(v[0], 1000000); }, {x});
  const std::vector<std::int64_t> offsets{5, 300000};
  check_float_matches_double([&](auto&, auto& v) { return rope(v[0], offsets); }, {x});
}

TEST_CASE("rope: misuse messages") {
  Tape<double> tape;
  auto odd = tape.leaf(Tensor<double>::zeros({2, 3, 5}));
  check_throws_naming<ShapeError>([&] { (void)rope(odd); }, {"rope", "R = 5", "even"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)rope(tape.leaf(Tensor<double>::zeros({3, 4})));
      },
      {"rope", "[3, 4]"});
  auto x = tape.leaf(Tensor<double>::zeros({2, 3, 4}));
  check_throws_naming<ArgumentError>([&] { (void)rope(x, -1); }, {"rope", "-1", "negative"});
  const std::vector<std::int64_t> bad{0, -7};
  check_throws_naming<ArgumentError>([&] { (void)rope(x, bad); }, {"rope", "-7", "batch row 1"});
  const std::vector<std::int64_t> three{0, 1, 2};
  check_throws_naming<ShapeError>([&] { (void)rope(x, three); },
                                  {"rope", "3 batch offsets", "[2, 3, 4]"});
  check_throws_naming<ArgumentError>([&] { (void)rope(x, 0, 0.0); }, {"rope", "theta"});
}

TEST_CASE("embedding, rope: backward adds to a gradient that already holds values") {
  Tape<double> tape;
  Tensor<double> gw = Tensor<double>::from({2, 2}, {1, 1, 1, 1});
  auto w = tape.leaf(Tensor<double>::zeros({2, 2}), gw);
  embedding(w, Ids::from({1}, {1})).backward(Tensor<double>::from({1, 2}, {5, 7}));
  CHECK(gw.to_vector() == std::vector<double>{1, 1, 6, 8});

  Tensor<double> gx = Tensor<double>::from({1, 1, 2}, {1, 1});
  auto x = tape.leaf(Tensor<double>::zeros({1, 1, 2}), gx);
  rope(x, 2).backward(Tensor<double>::from({1, 1, 2}, {1, 0}));  // inverse rotation of (1, 0)
  CHECK(gx[0] == doctest::Approx(1 + std::cos(2.0)).epsilon(1e-14));
  CHECK(gx[1] == doctest::Approx(1 - std::sin(2.0)).epsilon(1e-14));
}
