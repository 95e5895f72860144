// Gradient checks and forward values: matmul, linear, add/sub/mul with broadcasting, scale, sum,
// mean, relu, gelu; the GEMM drivers and the Linear kernels against separate passes.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <utility>

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

TEST_CASE("gemm: the blocked drivers against a double reference, the same bits on 1 and 2 threads") {
  // Shapes past the driver's threshold (blocked: for the AVX-512 kernel, more than one block of
  // k, units of several row groups, of several column chunks, chunks cut at kNC columns, one
  // thread's group cut at kMC rows; Eigen's slabs split by rows or by columns) and beside it
  // (Eigen's expression path, split in column bands when long), with alpha and beta. gemm()
  // takes the AVX-512 kernel for float where it is compiled in; Eigen's blocked driver, its
  // fallback, is checked directly too.
  struct Case {
    std::int64_t M, N, K;
  };
  const Case cases[] = {{130, 70, 90},  {9, 300, 41},   {64, 64, 16},   {300, 9, 41},  {200, 150, 260},
                        {40, 400, 64},  {7, 5, 3},      {70, 60, 800},  {2100, 20, 50}, {16, 1000, 40},
                        {1, 1000, 200}, {3, 700, 100},  {40, 1400, 64}, {5000, 30, 30}};
  using Product = void (*)(Transpose, Transpose, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                           const float*, float, float*);
  const std::pair<const char*, Product> products[] = {
      {"gemm", [](Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                  const float* A, const float* B, float beta,
                  float* C) { kernels::gemm(Cpu{}, ta, tb, M, N, K, alpha, A, B, beta, C); }},
      {"eigen blocked", &kernels::detail::gemm_eigen_blocked<float>}};
  for (const auto& entry : products) {
    const char* name = entry.first;  // not a structured binding: CAPTURE's lambda captures it (clang 14)
    const Product product = entry.second;
    for (const Case& c : cases) {
      for (const float beta : {0.5f, 0.0f}) {
        for (const Transpose ta : {Transpose::No, Transpose::Yes}) {
          for (const Transpose tb : {Transpose::No, Transpose::Yes}) {
            CAPTURE(name);
            CAPTURE(c.M);
            CAPTURE(c.N);
            CAPTURE(c.K);
            CAPTURE(beta);
            CAPTURE(static_cast<int>(ta));
            CAPTURE(static_cast<int>(tb));
            const auto a = random_tensor<float>({c.M * c.K}, 1), b = random_tensor<float>({c.K * c.N}, 2);
            auto c0 = random_tensor<float>({c.M * c.N}, 3);
            // beta = 0 ignores what C held, NaN included.
            if (beta == 0.0f) {
              for (std::int64_t i = 0; i < c.M * c.N; ++i) c0[i] = std::numeric_limits<float>::quiet_NaN();
            }
            const float alpha = 0.75f;
            std::vector<std::vector<float>> results;
            for (const int threads : {1, 2}) {
              const test::ThreadsGuard guard(threads);
              Tensor<float> out = c0.clone();
              product(ta, tb, c.M, c.N, c.K, alpha, a.data(), b.data(), beta, out.data());
              results.push_back(out.to_vector());
            }
            CHECK(results[0] == results[1]);
            double worst = 0;
            for (std::int64_t i = 0; i < c.M; ++i) {
              for (std::int64_t j = 0; j < c.N; ++j) {
                double ref = beta == 0.0f ? 0.0 : beta * static_cast<double>(c0[i * c.N + j]);
                for (std::int64_t k = 0; k < c.K; ++k) {
                  const double x = ta == Transpose::No ? a[i * c.K + k] : a[k * c.M + i];
                  const double y = tb == Transpose::No ? b[k * c.N + j] : b[j * c.K + k];
                  ref += alpha * x * y;
                }
                const double got = results[0][static_cast<std::size_t>(i * c.N + j)];
                worst = std::max(worst, std::isnan(got) ? 1e30 : std::abs(ref - got));
              }
            }
            CHECK(worst < 1e-4 * std::sqrt(static_cast<double>(c.K)));
          }
        }
      }
    }
  }
}

TEST_CASE("linear kernels: the bias folded into the products gives the bits of separate passes") {
  // y = x w^T + bias and dw += dout^T x, db += column sums of dout, against broadcast + gemm and
  // gemm + accumulate_column_sums: rows and columns split between threads (dw [20, 500]: each
  // group of dout's rows in several column chunks, one of which sums them), more than one
  // block of k, and a product small enough for Eigen's expression path.
  struct Case {
    std::int64_t R, Out, In;
  };
  for (const Case& c : {Case{300, 70, 90}, Case{256, 200, 40}, Case{1000, 33, 700}, Case{300, 20, 500}, Case{5, 9, 3}}) {
    for (const int threads : {1, 2}) {
      CAPTURE(c.R);
      CAPTURE(c.Out);
      CAPTURE(c.In);
      CAPTURE(threads);
      const test::ThreadsGuard guard(threads);
      const auto x = random_tensor<float>({c.R, c.In}, 1), w = random_tensor<float>({c.Out, c.In}, 2);
      const auto bias = random_tensor<float>({c.Out}, 3), dout = random_tensor<float>({c.R, c.Out}, 4);
      auto y = Tensor<float>::empty({c.R, c.Out}), y_ref = Tensor<float>::empty({c.R, c.Out});
      kernels::linear_forward(Cpu{}, c.R, c.Out, c.In, x.data(), w.data(), bias.data(), y.data());
      kernels::broadcast_rows(Cpu{}, bias.data(), y_ref.data(), c.R, c.Out);
      kernels::gemm(Cpu{}, Transpose::No, Transpose::Yes, c.R, c.Out, c.In, 1.0f, x.data(), w.data(), 1.0f,
                    y_ref.data());
      CHECK(y.to_vector() == y_ref.to_vector());

      const auto dw0 = random_tensor<float>({c.Out, c.In}, 5), db0 = random_tensor<float>({c.Out}, 6);
      auto dw = dw0.clone(), db = db0.clone(), dw_ref = dw0.clone(), db_ref = db0.clone();
      kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), dw.data(), db.data());
      kernels::gemm(Cpu{}, Transpose::Yes, Transpose::No, c.Out, c.In, c.R, 1.0f, dout.data(), x.data(), 1.0f,
                    dw_ref.data());
      kernels::accumulate_column_sums(Cpu{}, dout.data(), db_ref.data(), c.R, c.Out);
      CHECK(dw.to_vector() == dw_ref.to_vector());
      CHECK(db.to_vector() == db_ref.to_vector());
      // Either gradient alone.
      auto db_only = db0.clone(), dw_only = dw0.clone();
      kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), static_cast<float*>(nullptr),
                                  db_only.data());
      kernels::linear_param_grads(Cpu{}, c.R, c.Out, c.In, dout.data(), x.data(), dw_only.data(),
                                  static_cast<float*>(nullptr));
      CHECK(db_only.to_vector() == db_ref.to_vector());
      CHECK(dw_only.to_vector() == dw_ref.to_vector());
    }
  }
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
