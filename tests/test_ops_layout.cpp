// Layout ops: split / concat along the last axis, reshape views (split_heads, merge_heads) and
// permute: forward values against naive references, gradient checks, misuse messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <mla/autodiff/ops/layout.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::max_abs_diff;
using mla::test::random_tensor;
using VarD = Var<double>;
using Vars = std::vector<VarD>;

/// Naive permute: out axis k is x axis perm[k]; any rank 1..4.
template <class T>
static Tensor<T> permute_reference(const Tensor<T>& x, const std::vector<int>& perm) {
  const Shape& s = x.shape();
  const int r = s.rank();
  Shape so;
  for (int k = 0; k < r; ++k) so = so.appended(s[perm[static_cast<std::size_t>(k)]]);
  Tensor<T> out = Tensor<T>::empty(so);
  std::array<std::int64_t, 4> idx{};  // out multi-index
  for (std::int64_t flat = 0; flat < out.numel(); ++flat) {
    std::int64_t rem = flat;
    for (int k = r - 1; k >= 0; --k) {
      idx[static_cast<std::size_t>(k)] = rem % so[k];
      rem /= so[k];
    }
    std::array<std::int64_t, 4> in{};
    for (int k = 0; k < r; ++k)
      in[static_cast<std::size_t>(perm[static_cast<std::size_t>(k)])] =
          idx[static_cast<std::size_t>(k)];
    std::int64_t src = 0;
    for (int k = 0; k < r; ++k) src = src * s[k] + in[static_cast<std::size_t>(k)];
    out[flat] = x[src];
  }
  return out;
}

static std::string str(const std::vector<int>& perm) {
  std::string s = "{";
  for (int k : perm) s += (s.size() > 1 ? ", " : "") + std::to_string(k);
  return s + "}";
}

static std::vector<std::vector<int>> all_perms(int rank) {
  std::vector<int> p(static_cast<std::size_t>(rank));
  std::iota(p.begin(), p.end(), 0);
  std::vector<std::vector<int>> all;
  do all.push_back(p);
  while (std::next_permutation(p.begin(), p.end()));
  return all;
}

// ---- split / concat --------------------------------------------------------------------------

TEST_CASE_TEMPLATE("split and concat: hand case and round trip", T, float, double) {
  Tape<T> tape;
  auto x = tape.leaf(Tensor<T>::from({2, 5}, {0, 1, 2, 3, 4, 10, 11, 12, 13, 14}));
  auto parts = split(x, {2, 0, 3});
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{2, 2});
  CHECK(parts[1].shape() == Shape{2, 0});
  CHECK(parts[2].shape() == Shape{2, 3});
  CHECK(parts[0].value().to_vector() == std::vector<T>{0, 1, 10, 11});
  CHECK(parts[2].value().to_vector() == std::vector<T>{2, 3, 4, 12, 13, 14});
  CHECK(concat(parts).value().to_vector() == x.value().to_vector());
  CHECK(concat({parts[2], parts[0]}).value().to_vector() ==
        std::vector<T>{2, 3, 4, 0, 1, 12, 13, 14, 10, 11});

  const auto big = random_tensor<T>({3, 1, 4, 17}, 1);
  auto pieces = split(tape.constant(big), {5, 1, 11});
  CHECK(max_abs_diff(concat(pieces).value(), big) == 0.0);
}

TEST_CASE("split: gradient check (pieces reordered and weighted through concat)") {
  const Shape shapes[] = {{6}, {2, 6}, {3, 1, 6}, {2, 2, 3, 6}};
  std::uint64_t seed = 10;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    check_jacobian(
        [](auto&, Vars& v) {
          auto p = split(v[0], {2, 3, 0, 1});
          return concat({scale(p[1], 2.0), p[3], scale(p[0], -0.5), p[2]});
        },
        {random_tensor(s, seed++)});
    check_jacobian(
        [](auto&, Vars& v) {
          return split(v[0], {1, 5})[1];
        },
        {random_tensor(s, seed++)});
  }
}

TEST_CASE("concat: gradient check, odd widths, size 1, a constant part, many parts") {
  std::uint64_t seed = 20;
  check_jacobian(
      [](auto&, Vars& v) {
        return concat({v[0], v[1], v[2]});
      },
      {random_tensor({2, 3, 1}, seed++), random_tensor({2, 3, 4}, seed++),
       random_tensor({2, 3, 3}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return concat({v[0], v[1]});
      },
      {random_tensor({1}, seed++), random_tensor({5}, seed++)});
  const auto fixed = random_tensor({3, 2}, seed++);
  check_jacobian(
      [&](auto& tape, Vars& v) {
        return concat({tape.constant(fixed), v[0], v[1]});
      },
      {random_tensor({3, 3}, seed++), random_tensor({3, 1}, seed++)});
  // more parts than one node holds (grouped internally)
  std::vector<Tensor<double>> inputs;
  for (int k = 0; k < 37; ++k) inputs.push_back(random_tensor({2, 1 + k % 3}, seed++));
  check_jacobian([](auto&, Vars& v) { return concat(v); }, inputs);
  Tape<double> tape;
  std::vector<VarD> vars;
  std::vector<double> expected;
  for (int k = 0; k < 70; ++k)
    vars.push_back(tape.constant(Tensor<double>::from({1}, {double(k)})));
  for (int k = 0; k < 70; ++k) expected.push_back(k);
  CHECK(concat(vars).value().to_vector() == expected);
}

TEST_CASE("split, concat: float agrees with double") {
  check_float_matches_double(
      [](auto&, auto& v) {
        auto p = split(v[0], {7, 9});
        return concat({p[1], v[1], p[0]});
      },
      {random_tensor({4, 3, 16}, 1), random_tensor({4, 3, 5}, 2)});
}

// ---- reshape views -------------------------------------------------------------------------

TEST_CASE("reshape, split_heads, merge_heads: views share storage; gradient check") {
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({2, 3, 12}, 30));
  auto r = reshape(x, {6, 12});
  CHECK(r.value().data() == x.value().data());
  CHECK(r.shape() == Shape{6, 12});
  auto h = split_heads(x, 4);
  CHECK(h.shape() == Shape{2, 3, 4, 3});
  CHECK(h.value().data() == x.value().data());
  auto m = merge_heads(h);
  CHECK(m.shape() == Shape{2, 3, 12});
  CHECK(m.value().data() == x.value().data());

  std::uint64_t seed = 31;
  // composed with permute so that a wrong element order in the backward would show
  check_jacobian(
      [](auto&, Vars& v) {
        return permute(reshape(v[0], {3, 2, 4}), {2, 0, 1});
      },
      {random_tensor({2, 12}, seed++)});
  check_jacobian([](auto&, Vars& v) { return reshape(v[0], {5}); },
                 {random_tensor({5, 1}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return permute(split_heads(v[0], 3), {0, 2, 1, 3});
      },
      {random_tensor({2, 5, 6}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return merge_heads(permute(v[0], {0, 2, 1, 3}));
      },
      {random_tensor({2, 3, 5, 2}, seed++)});
  // gradients of two views of one input add up
  check_jacobian([](auto&, Vars& v) { return reshape(v[0], {6}) + merge_heads(v[0]); },
                 {random_tensor({3, 2}, seed++)});
}

// ---- permute -------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("permute: every permutation of ranks 2, 3 and 4 matches the naive reference", T,
                   float, double) {
  const Shape shapes[] = {{3, 5}, {1, 7}, {2, 3, 4}, {3, 1, 5}, {2, 3, 4, 5}, {3, 1, 2, 7}};
  std::uint64_t seed = 40;
  for (const Shape& s : shapes) {
    const auto x = random_tensor<T>(s, seed++);
    Tape<T> tape;
    for (const auto& perm : all_perms(s.rank())) {
      CAPTURE(s.str());
      CAPTURE(str(perm));
      const auto out = permute(tape.constant(x), std::span<const int>(perm)).value();
      CHECK(max_abs_diff(out, permute_reference(x, perm)) == 0.0);
    }
  }
}

TEST_CASE("permute: large shapes (parallel, tiled paths) match the naive reference") {
  const auto x = random_tensor<float>({3, 67, 5, 40}, 50);  // [B, T, H, Dh], odd sizes
  Tape<float> tape;
  for (const std::vector<int>& perm :
       std::vector<std::vector<int>>{{0, 2, 1, 3}, {0, 2, 3, 1}, {3, 1, 0, 2}, {1, 0, 3, 2}}) {
    CAPTURE(str(perm));
    const auto out = permute(tape.constant(x), std::span<const int>(perm)).value();
    CHECK(max_abs_diff(out, permute_reference(x, perm)) == 0.0);
  }
  const auto m = random_tensor<float>({301, 257}, 51);  // a plain transpose, ragged tiles
  CHECK(max_abs_diff(permute(tape.constant(m), {1, 0}).value(), permute_reference(m, {1, 0})) ==
        0.0);
}

TEST_CASE("permute: gradient check over all rank-3 perms and some rank-2/4 perms") {
  std::uint64_t seed = 60;
  for (const Shape& s : {Shape{2, 3, 4}, Shape{3, 1, 5}}) {
    for (const auto& perm : all_perms(3)) {
      CAPTURE(s.str());
      CAPTURE(str(perm));
      check_jacobian([&](auto&, Vars& v) { return permute(v[0], std::span<const int>(perm)); },
                     {random_tensor(s, seed++)});
    }
  }
  const std::array<int, 4> bhtd{0, 2, 1, 3};
  check_jacobian([&](auto&, Vars& v) { return permute(v[0], bhtd); },
                 {random_tensor({2, 3, 5, 2}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return permute(v[0], {3, 0, 2, 1});
      },
      {random_tensor({2, 3, 1, 5}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return permute(v[0], {1, 0});
      },
      {random_tensor({3, 5}, seed++)});
  check_jacobian(
      [](auto&, Vars& v) {
        return permute(v[0], {1, 0});
      },
      {random_tensor({1, 1}, seed++)});
}

TEST_CASE("permute: a permutation followed by its inverse is the identity") {
  const auto x = random_tensor({2, 7, 3, 5}, 70);
  Tape<double> tape;
  for (const auto& perm : all_perms(4)) {
    std::vector<int> inverse(4);
    for (int k = 0; k < 4; ++k)
      inverse[static_cast<std::size_t>(perm[static_cast<std::size_t>(k)])] = k;
    CAPTURE(str(perm));
    auto y = permute(permute(tape.constant(x), std::span<const int>(perm)),
                     std::span<const int>(inverse));
    CHECK(y.shape() == x.shape());
    CHECK(max_abs_diff(y.value(), x) == 0.0);
  }
}

TEST_CASE("permute: float agrees with double") {
  check_float_matches_double(
      [](auto&, auto& v) {
        return permute(v[0], {0, 2, 1, 3});
      },
      {random_tensor({2, 9, 4, 8}, 80)});
}

// ---- misuse --------------------------------------------------------------------------------

TEST_CASE("layout ops: misuse messages name the problem") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::zeros({2, 6}));
  check_throws_naming<ShapeError>(
      [&] {
        (void)split(x, {2, 3});
      },
      {"split", "{2, 3}", "add up to 5", "C = 6", "[2, 6]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)split(x, {7, -1});
      },
      {"split", "{7, -1}", "negative", "C = 6"});
  auto y = tape.leaf(Tensor<double>::zeros({3, 6}));
  check_throws_naming<ShapeError>([&] { (void)concat({x, y}); }, {"concat", "[2, 6]", "[3, 6]"});
  auto z = tape.leaf(Tensor<double>::zeros({2, 1, 6}));
  check_throws_naming<ShapeError>([&] { (void)concat({x, z}); }, {"concat", "[2, 6]", "[2, 1, 6]"});
  check_throws_naming<ShapeError>([&] { (void)concat(std::vector<VarD>{}); },
                                  {"concat", "at least one"});
  Tape<double> other;
  check_throws_naming<AutodiffError>(
      [&] {
        (void)concat({x, other.leaf(Tensor<double>::zeros({2, 1}))});
      },
      {"concat", "different tapes"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)reshape(x, {5, 2});
      },
      {"reshape", "[2, 6]", "[5, 2]"});
  check_throws_naming<ShapeError>([&] { (void)split_heads(x, 4); }, {"split_heads", "4 heads"});
  auto x3 = tape.leaf(Tensor<double>::zeros({2, 3, 4}));
  check_throws_naming<ShapeError>(
      [&] {
        (void)permute(x3, {0, 0, 1});
      },
      {"permute", "{0, 0, 1}", "not a permutation", "[2, 3, 4]"});
  check_throws_naming<ShapeError>(
      [&] {
        (void)permute(x3, {1, 0});
      },
      {"permute", "{1, 0}", "3 axes"});
  check_throws_naming<ShapeError>([&] { (void)permute(x3, {0, 3, 1}); }, {"permute", "{0, 3, 1}"});
  check_throws_naming<ShapeError>(
      [&] { (void)permute(tape.leaf(Tensor<double>::zeros({4})), {0}); },
      {"permute", "rank 2 to 4", "[4]"});
}

TEST_CASE("layout ops record nothing without grad mode") {
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({2, 4, 6}, 90));
  const std::int32_t before = tape.size();
  {
    NoGradGuard guard;
    auto p = split(x, {3, 3});
    auto c = concat({p[1], p[0]});
    auto q = permute(reshape(c, {8, 6}), {1, 0});
    CHECK_FALSE(q.requires_grad());
    CHECK_FALSE(p[0].requires_grad());
  }
  CHECK(tape.size() == before);
}

TEST_CASE("layout ops: backward adds to a gradient that already holds values") {
  // A leaf's gradient buffer starts at 1 everywhere; each op's backward must add, not overwrite.
  const auto x = random_tensor({2, 3, 4}, 95);
  const auto seed = random_tensor({2, 3, 4}, 96);
  auto run = [&](auto op) {
    Tape<double> tape;
    Tensor<double> grad = Tensor<double>::empty(x.shape());
    for (std::int64_t i = 0; i < grad.numel(); ++i) grad[i] = 1.0;
    auto v = tape.leaf(x.clone(), grad);
    auto y = op(v);
    Tensor<double> s = Tensor<double>::empty(y.shape());
    for (std::int64_t i = 0; i < s.numel(); ++i) s[i] = seed[i];
    y.backward(s);
    double total = 0;
    for (std::int64_t i = 0; i < grad.numel(); ++i) total += grad[i];
    double expected = static_cast<double>(grad.numel());
    for (std::int64_t i = 0; i < s.numel(); ++i) expected += s[i];  // each op only moves elements
    CHECK(total == doctest::Approx(expected).epsilon(1e-12));
  };
  run([](const VarD& v) { return permute(v, {2, 0, 1}); });
  run([](const VarD& v) { return permute(v, {1, 0, 2}); });
  run([](const VarD& v) { return reshape(v, {4, 6}); });
  run([](const VarD& v) {
    auto p = split(v, {1, 3});
    return concat({p[1], p[0]});
  });
}
