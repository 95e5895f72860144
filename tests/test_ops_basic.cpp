// Gradient checks and forward values: matmul, linear, add/sub/mul with broadcasting, scale, sum,
// mean, relu, gelu. The GEMM kernels themselves: test_gemm_kernels.cpp.
#include <doctest/doctest.h>

#include <cmath>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::random_tensor;
using VarD = Var<double>;
using Vars = std::vector<VarD>;

TEST_CASE("matmul: forward on a hand-computed case") {
  Tape<double> tape;
  auto a = tape.constant(Tensor<double>::from({2, 3}, {1, 2, 3, 4, 5, 6}));
  auto b = tape.constant(Tensor<double>::from({3, 2}, {7, 8, 9, 10, 11, 12}));
  CHECK(matmul(a, b).value().to_vector() == std::vector<double>{58, 64, 139, 154});
  // a @ a^T
  CHECK(matmul(a, a, Transpose::No, Transpose::Yes).value().to_vector() ==
        std::vector<double>{14, 32, 32, 77});
}

TEST_CASE("matmul: gradient check over transposes, batches, odd sizes and size 1") {
  struct Case {
    Shape a, b;
    Transpose ta, tb;
  };
  const Case cases[] = {
      {{3, 5}, {5, 4}, Transpose::No, Transpose::No},
      {{5, 3}, {5, 4}, Transpose::Yes, Transpose::No},
      {{3, 5}, {4, 5}, Transpose::No, Transpose::Yes},
      {{5, 3}, {4, 5}, Transpose::Yes, Transpose::Yes},
      {{1, 1}, {1, 1}, Transpose::No, Transpose::No},
      {{2, 3, 5}, {4, 5}, Transpose::No, Transpose::Yes},     // a Linear layer over a batch
      {{2, 5, 3}, {5, 4}, Transpose::Yes, Transpose::No},     // shared b, transposed a
      {{2, 5, 3}, {4, 5}, Transpose::Yes, Transpose::Yes},    // shared b, both transposed
      {{2, 1, 3, 5}, {2, 1, 5, 1}, Transpose::No, Transpose::No},
      {{2, 3, 5}, {2, 4, 5}, Transpose::No, Transpose::Yes},  // q @ k^T
      {{2, 5, 3}, {2, 5, 4}, Transpose::Yes, Transpose::No},
  };
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    CAPTURE(c.a.str());
    CAPTURE(c.b.str());
    check_jacobian([&](auto&, Vars& v) { return matmul(v[0], v[1], c.ta, c.tb); },
                   {random_tensor(c.a, seed++), random_tensor(c.b, seed++)});
  }
}

TEST_CASE("matmul: float agrees with double") {
  check_float_matches_double(
      [](auto&, auto& v) { return matmul(v[0], v[1], Transpose::No, Transpose::Yes); },
      {random_tensor({4, 7, 33}, 1), random_tensor({17, 33}, 2)});
}

TEST_CASE("linear with bias: gradient check, and the same values as matmul then add") {
  const Shape shapes[][2] = {{{3, 5}, {4, 5}}, {{2, 3, 5}, {1, 5}}, {{1, 1}, {1, 1}}, {{2, 2, 3, 7}, {6, 7}}};
  std::uint64_t seed = 40;
  for (const auto& s : shapes) {
    CAPTURE(s[0].str());
    CAPTURE(s[1].str());
    const auto x = random_tensor(s[0], seed++), w = random_tensor(s[1], seed++), b = random_tensor({s[1][0]}, seed++);
    check_jacobian([&](auto&, Vars& v) { return linear(v[0], v[1], v[2]); }, {x, w, b});
    Tape<double> tape;
    const auto fused = linear(tape.constant(x), tape.constant(w), tape.constant(b)).value().to_vector();
    const auto two_ops =
        add(matmul(tape.constant(x), tape.constant(w), Transpose::No, Transpose::Yes), tape.constant(b));
    const auto expected = two_ops.value().to_vector();
    REQUIRE(fused.size() == expected.size());
    for (std::size_t i = 0; i < fused.size(); ++i) CHECK(fused[i] == doctest::Approx(expected[i]).epsilon(1e-14));
  }
  Tape<double> tape;
  const auto x = tape.leaf(Tensor<double>::zeros({2, 5})), w = tape.leaf(Tensor<double>::zeros({4, 5}));
  check_throws_naming<ShapeError>([&] { (void)linear(x, w, tape.leaf(Tensor<double>::zeros({3}))); },
                                  {"linear", "[4, 5]", "bias [3]"});
}

TEST_CASE("matmul: mismatched shapes throw and name both shapes") {
  Tape<double> tape;
  auto a = tape.leaf(Tensor<double>::zeros({2, 3}));
  auto b = tape.leaf(Tensor<double>::zeros({4, 5}));
  check_throws_naming<ShapeError>([&] { (void)matmul(a, b); }, {"matmul", "inner", "[2, 3]", "[4, 5]"});
  auto c = tape.leaf(Tensor<double>::zeros({3, 2, 3}));
  auto d = tape.leaf(Tensor<double>::zeros({2, 3, 2}));
  check_throws_naming<ShapeError>([&] { (void)matmul(c, d); }, {"matmul", "batch", "[3, 2, 3]"});
  check_throws_naming<ShapeError>([&] { (void)matmul(tape.leaf(Tensor<double>::zeros({3})), b); },
                                  {"matmul", "rank"});
}

TEST_CASE("add, sub, mul: gradient check, same shape and broadcast row") {
  const Shape shapes[] = {{1}, {7}, {3, 5}, {2, 3, 1}, {2, 1, 3, 4}};
  std::uint64_t seed = 10;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    const Shape row{s.cols()};
    for (const Shape& sb : {s, row}) {
      auto a = random_tensor(s, seed++), b = random_tensor(sb, seed++);
      check_jacobian([](auto&, Vars& v) { return add(v[0], v[1]); }, {a, b});
      check_jacobian([](auto&, Vars& v) { return sub(v[0], v[1]); }, {a, b});
      check_jacobian([](auto&, Vars& v) { return mul(v[0], v[1]); }, {a, b});
    }
  }
}

TEST_CASE("add, sub, mul: a broadcast row's gradient sums every row, over several column bands") {
  // 300 columns: two whole bands of the column-sum kernel and a partial one; enough work to
  // split between threads. Small integers keep every sum exact, so any wrong term shows.
  const std::int64_t R = 150, C = 300;
  std::vector<double> a(R * C), dout(R * C);
  for (std::int64_t i = 0; i < R * C; ++i) {
    a[i] = static_cast<double>(i % 7) - 3;
    dout[i] = static_cast<double>(i % 5) - 2;
  }
  const std::vector<double> b(C, 1.0);
  for (const kernels::Binary op : {kernels::Binary::Add, kernels::Binary::Sub, kernels::Binary::Mul}) {
    CAPTURE(static_cast<int>(op));
    std::vector<double> db(C), expected(C);
    for (std::int64_t c = 0; c < C; ++c) db[c] = expected[c] = static_cast<double>(c);  // accumulates
    for (std::int64_t r = 0; r < R; ++r) {
      for (std::int64_t c = 0; c < C; ++c) {
        const double g = dout[r * C + c];
        expected[c] += op == kernels::Binary::Sub ? -g : op == kernels::Binary::Mul ? g * a[r * C + c] : g;
      }
    }
    kernels::binary_backward<double>(Cpu{}, op, a.data(), b.data(), true, dout.data(), nullptr, db.data(), R, C);
    CHECK(db == expected);
  }
}

TEST_CASE("add, sub, mul, scale: forward values") {
  Tape<double> tape;
  auto a = tape.constant(Tensor<double>::from({2, 2}, {1, 2, 3, 4}));
  auto row = tape.constant(Tensor<double>::from({2}, {10, 20}));
  CHECK((a + row).value().to_vector() == std::vector<double>{11, 22, 13, 24});
  CHECK((a - row).value().to_vector() == std::vector<double>{-9, -18, -7, -16});
  CHECK((a * a).value().to_vector() == std::vector<double>{1, 4, 9, 16});
  CHECK(scale(a, 0.5).value().to_vector() == std::vector<double>{0.5, 1, 1.5, 2});
  check_throws_naming<ShapeError>(
      [&] { (void)add(a, tape.constant(Tensor<double>::zeros({3}))); },
      {"add", "broadcast", "[3]", "[2, 2]"});
}

TEST_CASE("scale, sum, mean, relu, gelu: gradient check over shapes") {
  const Shape shapes[] = {{1}, {5}, {3, 7}, {2, 3, 4}};
  std::uint64_t seed = 100;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    auto x = random_tensor(s, seed++, -2.0, 2.0);
    check_jacobian([](auto&, Vars& v) { return scale(v[0], -1.7); }, {x});
    check_jacobian([](auto&, Vars& v) { return sum(v[0]); }, {x});
    check_jacobian([](auto&, Vars& v) { return mean(v[0]); }, {x});
    check_jacobian([](auto&, Vars& v) { return relu(v[0]); }, {x});
    check_jacobian([](auto&, Vars& v) { return gelu(v[0]); }, {x});
  }
}

TEST_CASE("sum, mean, relu, gelu: forward values") {
  Tape<double> tape;
  auto x = tape.constant(Tensor<double>::from({4}, {-1.0, 0.0, 1.0, 2.0}));
  CHECK(sum(x).value()[0] == 2.0);
  CHECK(mean(x).value()[0] == 0.5);
  CHECK(relu(x).value().to_vector() == std::vector<double>{0, 0, 1, 2});
  auto g = gelu(x).value();
  CHECK(g[0] == doctest::Approx(-0.15865525393145705));  // -Phi(-1)
  CHECK(g[1] == 0.0);
  CHECK(g[2] == doctest::Approx(0.8413447460685429));
  CHECK(g[3] == doctest::Approx(1.9544997361036416));
  check_float_matches_double([](auto&, auto& v) { return gelu(v[0]); },
                             {random_tensor({300}, 7, -4, 4)});
}
