// Gradient checks, forward values and misuse: layernorm, rmsnorm, softmax.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <mla/autodiff/ops/norm.hpp>
#include <mla/autodiff/ops/softmax.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::random_tensor;
using VarD = Var<double>;
using Vars = std::vector<VarD>;

namespace {

template <class T>
std::vector<T> ones(std::size_t n) { return std::vector<T>(n, T(1)); }

template <class T>
Tensor<T> tensor(Shape s, std::vector<T> v) { return Tensor<T>::from(s, v); }

// Shapes for the norms: odd sizes, a single row, a single channel, and more rows than one
// chunk of the column sums (32), so that the chunked dweight/dbias path is checked too.
const Shape kNormShapes[] = {{7}, {2, 3, 5}, {1, 2}, {3, 1, 4}, {1, 1, 3}, {70, 3}, {2, 33, 2}};

}  // namespace

// ---------------------------------------------------------------------------------------------
// layernorm

TEST_CASE_TEMPLATE("layernorm: forward on hand-computed cases", T, float, double) {
  Tape<T> tape;
  // [1, 2, 3]: mean 2, biased var 2/3 -> (x - 2) / sqrt(2/3 + eps)
  auto x = tape.leaf(tensor<T>({3}, {1, 2, 3}));
  auto w = tape.leaf(tensor<T>({3}, ones<T>(3)));
  auto b = tape.leaf(Tensor<T>::zeros({3}));
  const double s = 1.0 / std::sqrt(2.0 / 3.0 + 1e-5);
  auto y = layernorm(x, w, b).value();
  CHECK(y[0] == doctest::Approx(-s).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(0.0));
  CHECK(y[2] == doctest::Approx(s).epsilon(1e-6));

  // Two rows with weight and bias; a constant row has var 0 and gives the bias.
  auto x2 = tape.leaf(tensor<T>({2, 3}, {1, 2, 3, 4, 4, 4}));
  auto w2 = tape.leaf(tensor<T>({3}, {1, 2, 3}));
  auto b2 = tape.leaf(tensor<T>({3}, {0.5, 0, -0.5}));
  auto y2 = layernorm(x2, w2, b2, T(0.5)).value();  // eps 0.5: rstd = 1/sqrt(2/3 + 1/2)
  const double s2 = 1.0 / std::sqrt(2.0 / 3.0 + 0.5);
  const double want[] = {-s2 + 0.5, 0.0, 3 * s2 - 0.5, 0.5, 0.0, -0.5};
  for (int i = 0; i < 6; ++i) CHECK(y2[i] == doctest::Approx(want[i]).epsilon(1e-6));
}

TEST_CASE("layernorm: gradient check for x, weight and bias over shapes") {
  std::uint64_t seed = 1;
  for (const Shape& s : kNormShapes) {
    CAPTURE(s.str());
    const Shape row{s.cols()};
    auto x = random_tensor(s, seed++, -2, 2);
    auto w = random_tensor(row, seed++, 0.5, 1.5);
    auto b = random_tensor(row, seed++);
    check_jacobian([](auto&, Vars& v) { return layernorm(v[0], v[1], v[2]); }, {x, w, b});
    // Only the parameters need a gradient (dx null), and only x (dw, db null).
    check_jacobian([&](auto& tape, Vars& v) { return layernorm(tape.constant(x), v[0], v[1]); },
                   {w, b});
    check_jacobian([&](auto& tape, Vars& v) {
      return layernorm(v[0], tape.constant(w), tape.constant(b), 0.1);
    }, {x});
  }
  // C = 1: the output is the bias whatever x is; the Jacobian is the identity in b.
  check_jacobian([](auto&, Vars& v) { return layernorm(v[0], v[1], v[2]); },
                 {random_tensor({4, 1}, 90), random_tensor({1}, 91), random_tensor({1}, 92)});
}

TEST_CASE("layernorm: weight and bias gradients do not depend on the thread count") {
  // 300 x 256 is above the parallel grain and spans 10 chunks of the column sums.
  auto x = mla::test::random_tensor<float>({300, 256}, 5, -3, 3);
  auto w = mla::test::random_tensor<float>({256}, 6);
  auto b = mla::test::random_tensor<float>({256}, 7);
  auto dy = mla::test::random_tensor<float>({300, 256}, 8);
  auto run = [&](int threads) {
    const mla::test::ThreadsGuard guard(threads);
    Tape<float> tape;
    auto gx = Tensor<float>::zeros(x.shape()), gw = Tensor<float>::zeros(w.shape()),
         gb = Tensor<float>::zeros(b.shape());
    layernorm(tape.leaf(x, gx), tape.leaf(w, gw), tape.leaf(b, gb)).backward(dy);
    std::vector<float> all = gx.to_vector();
    for (float v : gw.to_vector()) all.push_back(v);
    for (float v : gb.to_vector()) all.push_back(v);
    return all;
  };
  const auto one = run(1), two = run(2);
  REQUIRE(one.size() == two.size());
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
  // And the chunked column sums agree with a plain double sum over rows.
  double want = 0;
  for (std::int64_t r = 0; r < 300; ++r) want += dy[r * 256 + 17];
  CHECK(one[300 * 256 + 256 + 17] == doctest::Approx(want).epsilon(1e-5));
}

TEST_CASE("layernorm, rmsnorm: float agrees with double") {
  check_float_matches_double([](auto&, auto& v) { return layernorm(v[0], v[1], v[2]); },
                             {random_tensor({5, 7, 33}, 1, -3, 3), random_tensor({33}, 2),
                              random_tensor({33}, 3)});
  check_float_matches_double([](auto&, auto& v) { return rmsnorm(v[0], v[1]); },
                             {random_tensor({5, 7, 33}, 4, -3, 3), random_tensor({33}, 5)});
}

TEST_CASE("layernorm: parameters of the wrong size throw and name both shapes") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::zeros({2, 3}));
  auto w3 = tape.leaf(Tensor<double>::zeros({3}));
  auto w4 = tape.leaf(Tensor<double>::zeros({4}));
  auto w13 = tape.leaf(Tensor<double>::zeros({1, 3}));
  check_throws_naming<ShapeError>([&] { (void)layernorm(x, w4, w3); },
                                  {"layernorm", "weight", "[4]", "[2, 3]"});
  check_throws_naming<ShapeError>([&] { (void)layernorm(x, w3, w13); },
                                  {"layernorm", "bias", "[1, 3]", "[2, 3]"});
  check_throws_naming<ShapeError>([&] { (void)rmsnorm(x, w4); },
                                  {"rmsnorm", "weight", "[4]", "[2, 3]"});
  check_throws_naming<ArgumentError>([&] { (void)layernorm(x, w3, w3, -1.0); },
                                     {"layernorm", "eps", "-1"});
  CHECK(tape.size() == 4);  // nothing was recorded by the failed calls
}

TEST_CASE("layernorm: records nothing without grad mode, and saves no statistics") {
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({4, 5}, 3));
  auto w = tape.leaf(random_tensor({5}, 4));
  auto b = tape.leaf(random_tensor({5}, 5));
  const Tensor<double> recorded = layernorm(x, w, b).value();
  const std::size_t used = tape.arena().used();
  NoGradGuard guard;
  auto y = layernorm(x, w, b);
  CHECK_FALSE(y.requires_grad());
  const std::size_t out_bytes = (4 * 5 * sizeof(double) + kAlignment - 1) / kAlignment * kAlignment;
  CHECK(tape.arena().used() - used == out_bytes);  // the output only, no mean / rstd
  CHECK(mla::test::max_abs_diff(y.value(), recorded) == 0.0);
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

TEST_CASE_TEMPLATE("rmsnorm: forward on hand-computed cases", T, float, double) {
  Tape<T> tape;
  // [3, 4]: mean square 12.5 -> [3, 4] / sqrt(12.5), times weight [1, 2]
  auto x = tape.leaf(tensor<T>({1, 2}, {3, 4}));
  auto w = tape.leaf(tensor<T>({2}, {1, 2}));
  auto y = rmsnorm(x, w, T(0)).value();
  CHECK(y[0] == doctest::Approx(3 / std::sqrt(12.5)).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(8 / std::sqrt(12.5)).epsilon(1e-6));
  // eps enters under the root: [1] with eps 3 -> 1 / 2
  auto y1 = rmsnorm(tape.leaf(tensor<T>({1}, {1})), tape.leaf(tensor<T>({1}, {1})), T(3)).value();
  CHECK(y1[0] == doctest::Approx(0.5));
}

TEST_CASE("rmsnorm: gradient check for x and weight over shapes") {
  std::uint64_t seed = 50;
  for (const Shape& s : kNormShapes) {
    CAPTURE(s.str());
    auto x = random_tensor(s, seed++, -2, 2);
    auto w = random_tensor({s.cols()}, seed++, 0.5, 1.5);
    check_jacobian([](auto&, Vars& v) { return rmsnorm(v[0], v[1]); }, {x, w});
    check_jacobian([&](auto& tape, Vars& v) { return rmsnorm(tape.constant(x), v[0]); }, {w});
    check_jacobian([&](auto& tape, Vars& v) { return rmsnorm(v[0], tape.constant(w), 0.1); }, {x});
  }
  // A single channel, with an eps large enough that dy/dx is far from zero.
  check_jacobian([](auto&, Vars& v) { return rmsnorm(v[0], v[1], 0.5); },
                 {random_tensor({1, 1}, 93), random_tensor({1}, 94)});
}

// ---------------------------------------------------------------------------------------------
// softmax

TEST_CASE_TEMPLATE("softmax: forward on hand-computed cases", T, float, double) {
  Tape<T> tape;
  auto y = softmax(tape.leaf(tensor<T>({2}, {0, T(std::log(2.0))}))).value();
  CHECK(y[0] == doctest::Approx(1.0 / 3).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(2.0 / 3).epsilon(1e-6));
  // Large logits do not overflow: max-subtracted.
  auto big = softmax(tape.leaf(tensor<T>({2, 2}, {1000, 1000, -1000, 0}))).value();
  CHECK(big[0] == doctest::Approx(0.5));
  CHECK(big[1] == doctest::Approx(0.5));
  CHECK(big[2] < 1e-30);  // exp(-1000) underflows
  CHECK(big[3] == doctest::Approx(1.0));
  // One column: always 1, and no gradient flows.
  auto x1 = tape.leaf(tensor<T>({3, 1}, {-5, 0, 7}));
  auto y1 = softmax(x1);
  CHECK(y1.value().to_vector() == std::vector<T>{1, 1, 1});
  y1.backward(tensor<T>({3, 1}, {1, 2, 3}));
  CHECK(x1.grad().to_vector() == std::vector<T>{0, 0, 0});
}

TEST_CASE("softmax: gradient check over shapes") {
  const Shape shapes[] = {{7}, {2, 3, 5}, {1, 2}, {5, 1, 2}, {1, 1, 3}, {40, 3}};
  std::uint64_t seed = 70;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    check_jacobian([](auto&, Vars& v) { return softmax(v[0]); }, {random_tensor(s, seed++, -3, 3)});
  }
  // Composed with a weighting, so the Jacobian of a scalar is checked too.
  check_jacobian([](auto&, Vars& v) { return sum(mul(softmax(v[0]), v[1])); },
                 {random_tensor({3, 4}, 80), random_tensor({3, 4}, 81)});
}

TEST_CASE("softmax: rows sum to one, float agrees with double") {
  Tape<float> tape;
  auto y = softmax(tape.leaf(mla::test::random_tensor<float>({64, 1000}, 9, -20, 20))).value();
  for (std::int64_t r = 0; r < 64; ++r) {
    double s = 0;
    for (std::int64_t c = 0; c < 1000; ++c) s += y[r * 1000 + c];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
  }
  check_float_matches_double([](auto&, auto& v) { return softmax(v[0]); },
                             {random_tensor({4, 9, 33}, 10, -5, 5)});
}
