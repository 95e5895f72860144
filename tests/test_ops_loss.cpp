// Gradient checks, forward values and misuse: cross_entropy, linear_cross_entropy, dropout.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <mla/autodiff/ops/dropout.hpp>
#include <mla/autodiff/ops/loss.hpp>
#include <mla/autodiff/ops/matmul.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_float_matches_double;
using mla::test::check_jacobian;
using mla::test::check_throws_naming;
using mla::test::bit_identical;
using mla::test::random_tensor;
using mla::test::rel_diff;
using mla::test::ThreadsGuard;
using VarD = Var<double>;
using Vars = std::vector<VarD>;
using Ids = Tensor<std::int32_t>;

namespace {

/// Targets for logits of shape `s`: ids in [0, V) from a fixed pattern.
Ids targets_for(const Shape& s, std::int32_t offset = 0) {
  Ids t = Ids::empty(s.without_cols());
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t[i] = static_cast<std::int32_t>((i * 7 + offset) % s.cols());
  }
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// cross_entropy

TEST_CASE_TEMPLATE("cross_entropy: forward on hand-computed cases", T, float, double) {
  Tape<T> tape;
  // Uniform logits: -log(1/V) = ln V, whatever the targets and the constant.
  auto uniform = tape.leaf(Tensor<T>::zeros({2, 3, 5}));
  auto loss = cross_entropy(uniform, targets_for({2, 3, 5}));
  CHECK(loss.shape().rank() == 0);
  CHECK(loss.value()[0] == doctest::Approx(std::log(5.0)).epsilon(1e-6));

  // Two classes, logits [0, ln 3]: p = [1/4, 3/4]. Row 0 targets 1, row 1 targets 0.
  const T l3 = static_cast<T>(std::log(3.0));
  auto two = tape.leaf(Tensor<T>::from({2, 2}, {0, l3, 0, l3}));
  auto v = cross_entropy(two, Ids::from({2}, {1, 0})).value()[0];
  CHECK(v == doctest::Approx((std::log(4.0 / 3.0) + std::log(4.0)) / 2).epsilon(1e-6));

  // Large logits neither overflow nor lose the small loss.
  auto big = tape.leaf(Tensor<T>::from({2, 2}, {1000, 0, 1000, 0}));
  CHECK(cross_entropy(big, Ids::from({2}, {0, 0})).value()[0] == doctest::Approx(0.0));
  CHECK(cross_entropy(big, Ids::from({2}, {1, 1})).value()[0] == doctest::Approx(1000.0));

  // Rank-1 logits take a rank-0 target; one class has loss 0 and no gradient.
  auto one = tape.leaf(Tensor<T>::from({1}, {3}));
  auto l1 = cross_entropy(one, Ids::from({}, {0}));
  CHECK(l1.value()[0] == doctest::Approx(0.0));
  l1.backward();
  CHECK(one.grad()[0] == doctest::Approx(0.0));
}

TEST_CASE("the softmaxes' 16-lane exp: within two float ulps of exp; 0, inf and NaN where exp gives them") {
  if (!kernels::available(kernels::GemmKernel::Avx512)) {  // the AVX-512 kernels' exp only
    MESSAGE("no AVX-512 on this CPU: the 16-lane exp is not used, nor checked, here");
    return;
  }
  const test::KernelGuard use(kernels::GemmKernel::Avx512);
  REQUIRE(kernels::detail::wide_exp<float>());
  // Steps of 2^-12 over [-104, 88.5] (e^88.73 is past the largest float), in a row whose
  // length is no whole number of vectors.
  std::vector<float> x;
  for (double v = -104; v <= 88.5; v += 0x1p-12) x.push_back(static_cast<float>(v));
  x.push_back(0.0f);
  std::vector<float> y(x.size());
  kernels::detail::exp_row(x.data(), 0.0f, y.data(), static_cast<std::int64_t>(x.size()));
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp(static_cast<double>(x[i]));
    // Relative to exp's value, or to the smallest normal where exp is subnormal.
    worst = std::max(worst, std::fabs(y[i] - e) / std::max(e, double(std::numeric_limits<float>::min())));
  }
  CAPTURE(worst);
  CHECK(worst <= 0x1p-23);  // two ulps at most (an ulp is 2^-24 to 2^-23 of the value); measured 0.74 of this
  CHECK(y.back() == 1.0f);      // exp(0)
  // The sum it returns: of what it stored, shifted.
  const std::int64_t n = 1000;
  const float sum = kernels::detail::exp_row(x.data() + 300000, 10.0f, y.data(), n);
  double total = 0;
  for (std::int64_t i = 0; i < n; ++i) total += std::exp(double(x[300000 + i]) - 10.0);
  CHECK(std::fabs(sum - total) <= 1e-6 * total);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> edges{-inf, -1e30f, -104.0f, 89.0f, 1e30f, inf, std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> out(edges.size(), -1.0f);
  kernels::detail::exp_row(edges.data(), 0.0f, out.data(), static_cast<std::int64_t>(edges.size()));
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 0.0f);
  CHECK(out[2] == 0.0f);
  CHECK(out[3] == inf);
  CHECK(out[4] == inf);
  CHECK(out[5] == inf);
  CHECK(std::isnan(out[6]));
  // Scaled and accumulated: y = y + 3 e^(x - 1), and nothing past the row's end.
  std::vector<float> acc{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, -7};
  const std::vector<float> before = acc;
  kernels::detail::exp_row(acc.data(), 1.0f, acc.data(), 18, 3.0f, true);
  for (std::size_t i = 0; i < 18; ++i) CHECK(acc[i] == doctest::Approx(before[i] + 3 * std::exp(before[i] - 1.0)).epsilon(1e-6));
  CHECK(acc[18] == -7.0f);
}

TEST_CASE("cross_entropy: the loss and its gradient agree with double on every kernel") {
  const std::int64_t R = 5, V = 1001;  // no whole number of vectors
  const auto logits = random_tensor<float>({R, V}, 9);
  const std::vector<std::int32_t> targets{0, 1000, 17, 500, 3};
  for (const kernels::GemmKernel kernel : test::available_kernels()) {
    const test::KernelGuard use(kernel);
    CAPTURE(kernels::name(kernel));
    std::vector<float> lse(R), dlogits(R * V);
    double sum = 0;
    kernels::crossentropy_rows(Cpu{}, logits.data(), targets.data(), lse.data(), R, V, &sum);
    kernels::crossentropy_grad(Cpu{}, logits.data(), targets.data(), lse.data(), 0.5f, dlogits.data(), R, V, false);
    double loss = 0;
    for (std::int64_t r = 0; r < R; ++r) {
      double m = -1e300, s = 0;
      for (std::int64_t v = 0; v < V; ++v) m = std::max(m, double(logits.data()[r * V + v]));
      for (std::int64_t v = 0; v < V; ++v) s += std::exp(double(logits.data()[r * V + v]) - m);
      const double exact = m + std::log(s);
      CHECK(lse[r] == doctest::Approx(exact).epsilon(1e-6));
      loss += exact - logits.data()[r * V + targets[r]];
      for (std::int64_t v = 0; v < V; ++v) {
        const double p = std::exp(double(logits.data()[r * V + v]) - exact) - (v == targets[r] ? 1 : 0);
        CHECK(std::fabs(dlogits[r * V + v] - 0.5 * p) <= 1e-6 * 0.5);
      }
    }
    CHECK(sum == doctest::Approx(loss).epsilon(1e-6));
  }
}

TEST_CASE("cross_entropy: gradient check over shapes") {
  const Shape shapes[] = {{7}, {2, 3, 5}, {1, 3}, {4, 2}, {3, 1, 6}, {1, 1, 2}, {40, 3}};
  std::uint64_t seed = 1;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    const Ids t = targets_for(s, static_cast<std::int32_t>(seed));
    check_jacobian([&](auto&, Vars& v) { return cross_entropy(v[0], t); },
                   {random_tensor(s, seed++, -3, 3)});
  }
  // Scaled downstream, so that dloss != 1 is checked.
  const Ids t = targets_for({3, 4});
  check_jacobian([&](auto&, Vars& v) { return scale(cross_entropy(v[0], t), -2.5); },
                 {random_tensor({3, 4}, 20)});
}

TEST_CASE("cross_entropy: gradient rows sum to zero, the target entry is negative") {
  const Shape s{4, 8, 50};
  Tape<float> tape;
  auto grad = Tensor<float>::zeros(s);
  auto logits = tape.leaf(mla::test::random_tensor<float>(s, 3, -4, 4), grad);
  const Ids t = targets_for(s, 3);
  cross_entropy(logits, t).backward();
  for (std::int64_t r = 0; r < 32; ++r) {
    double sum = 0, abs = 0;
    for (std::int64_t v = 0; v < 50; ++v) {
      sum += grad[r * 50 + v];
      abs += std::abs(grad[r * 50 + v]);
    }
    CHECK(std::abs(sum) < 1e-5 * abs);  // float rounding only; one-hot missing would give 1/32
    CHECK(abs > 1e-3);
    CHECK(grad[r * 50 + t[r]] < 0);
  }
}

TEST_CASE("cross_entropy: float agrees with double; nothing recorded without grad mode") {
  const Ids t = targets_for({4, 7, 33});
  check_float_matches_double([&](auto&, auto& v) { return cross_entropy(v[0], t); },
                             {random_tensor({4, 7, 33}, 4, -5, 5)});
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({3, 5}, 5));
  NoGradGuard guard;
  CHECK_FALSE(cross_entropy(x, targets_for({3, 5})).requires_grad());
  CHECK(tape.size() == 1);
}

TEST_CASE("cross_entropy: misuse names the target, its position and the vocabulary") {
  Tape<double> tape;
  auto logits = tape.leaf(Tensor<double>::zeros({2, 3, 5}));
  Ids bad = targets_for({2, 3, 5});
  bad[4] = 9;
  const std::size_t used = tape.arena().used();
  check_throws_naming<ArgumentError>([&] { (void)cross_entropy(logits, bad); },
                                     {"cross_entropy", "id 9", "position 4", "5"});
  bad[4] = 0;
  bad[0] = -1;
  check_throws_naming<ArgumentError>([&] { (void)cross_entropy(logits, bad); },
                                     {"cross_entropy", "id -1", "position 0", "5"});
  CHECK(tape.size() == 1);                // nothing was recorded
  CHECK(tape.arena().used() == used);     // nor allocated: checked before any work
  check_throws_naming<ShapeError>(
      [&] { (void)cross_entropy(logits, Ids::zeros({2, 4})); },
      {"cross_entropy", "[2, 4]", "[2, 3, 5]"});
  check_throws_naming<ShapeError>(
      [&] { (void)cross_entropy(logits, Ids::zeros({2, 3, 5})); },
      {"cross_entropy", "[2, 3, 5]", "[2, 3]"});
}

// ---------------------------------------------------------------------------------------------
// linear_cross_entropy

namespace {

/// The loss of x [..., In], w [V, In], b [V] and targets, and the gradients of x, w and b after
/// a backward seeded with `dloss`: fused in chunks of `chunk` rows, or (chunk 0) as
/// cross_entropy(linear(x, w, b)).
template <class T>
struct LossAndGrads {
  T loss;
  Tensor<T> dx, dw, db;
};

template <class T>
LossAndGrads<T> loss_and_grads(std::int64_t chunk, const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b,
                               const Ids& targets, T dloss = 1) {
  Tape<T> tape;
  LossAndGrads<T> r{0, Tensor<T>::zeros(x.shape()), Tensor<T>::zeros(w.shape()), Tensor<T>::zeros(b.shape())};
  auto vx = tape.leaf(x.clone(), r.dx), vw = tape.leaf(w.clone(), r.dw), vb = tape.leaf(b.clone(), r.db);
  const auto loss = chunk > 0 ? linear_cross_entropy(vx, vw, vb, targets, chunk)
                              : cross_entropy(linear(vx, vw, vb), targets);
  r.loss = loss.value()[0];
  loss.backward(Tensor<T>::from(Shape{}, {dloss}));
  return r;
}

/// The fused op against the composition, chunk by chunk: loss and the three gradients agree to
/// `tol` relative to each one's largest element.
template <class T>
void check_fused_matches(const Shape& sx, std::int64_t V, std::initializer_list<std::int64_t> chunks, double tol) {
  const std::int64_t In = sx[-1];
  const Tensor<T> x = random_tensor<T>(sx, 1, -2, 2), w = random_tensor<T>({V, In}, 2), b = random_tensor<T>({V}, 3);
  Shape st = sx;
  st[-1] = V;
  const Ids t = targets_for(st, 1);
  for (const T dloss : {T(1), T(-2.5)}) {
    const auto ref = loss_and_grads<T>(0, x, w, b, t, dloss);
    for (const std::int64_t chunk : chunks) {
      CAPTURE(chunk);
      CAPTURE(dloss);
      const auto got = loss_and_grads<T>(chunk, x, w, b, t, dloss);
      CHECK(std::abs(static_cast<double>(got.loss) - static_cast<double>(ref.loss)) <=
            tol * std::abs(static_cast<double>(ref.loss)));
      CHECK(rel_diff(got.dx, ref.dx) <= tol);
      CHECK(rel_diff(got.dw, ref.dw) <= tol);
      CHECK(rel_diff(got.db, ref.db) <= tol);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("linear_cross_entropy: the loss and gradients of cross_entropy(linear(...)), any chunk size", T,
                   float, double) {
  // 10 rows: chunks of one row, of 3 (a short last chunk), of all rows and of more than all.
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  check_fused_matches<T>({2, 5, 6}, 7, {1, 3, 10, 64}, tol);
  // Large enough for the blocked GEMM kernels and the threads: 80 rows, V not a multiple of
  // any register tile; chunks of 32, 32 and 16 rows.
  check_fused_matches<T>({2, 40, 64}, 300, {32, 80}, tol);
}

TEST_CASE("linear_cross_entropy: gradient check in double, across chunks") {
  const Ids t = targets_for({5, 6}, 2);  // 5 rows, V = 6: chunks of 2, 2 and 1 rows
  check_jacobian([&](auto&, Vars& v) { return linear_cross_entropy(v[0], v[1], v[2], t, 2); },
                 {random_tensor({5, 4}, 30, -2, 2), random_tensor({6, 4}, 31), random_tensor({6}, 32)});
  // Scaled downstream: the forward computed the gradients for dloss = 1, the backward scales.
  check_jacobian([&](auto&, Vars& v) { return scale(linear_cross_entropy(v[0], v[1], v[2], t, 3), -2.5); },
                 {random_tensor({5, 4}, 33, -2, 2), random_tensor({6, 4}, 34), random_tensor({6}, 35)});
}

TEST_CASE("linear_cross_entropy: the same bits on one thread and on two") {
  // 500 rows in chunks of 192: every product forks, and dw sums across chunks.
  const Tensor<float> x = random_tensor<float>({500, 64}, 40, -2, 2), w = random_tensor<float>({1000, 64}, 41),
                      b = random_tensor<float>({1000}, 42);
  const Ids t = targets_for({500, 1000}, 5);
  const auto on = [&](int threads) {
    const ThreadsGuard guard(threads);
    return loss_and_grads<float>(192, x, w, b, t);
  };
  const auto one = on(1), two = on(2);
  CHECK(one.loss == two.loss);
  CHECK(bit_identical(one.dx, two.dx));
  CHECK(bit_identical(one.dw, two.dw));
  CHECK(bit_identical(one.db, two.db));
}

TEST_CASE("linear_cross_entropy: gradients only where needed; nothing recorded without grad mode") {
  const Tensor<double> x = random_tensor({6, 4}, 50, -2, 2), w = random_tensor({9, 4}, 51), b = random_tensor({9}, 52);
  const Ids t = targets_for({6, 9}, 3);
  const auto ref = loss_and_grads<double>(0, x, w, b, t);
  {  // w and b constants: only x gets a gradient
    Tape<double> tape;
    auto dx = Tensor<double>::zeros({6, 4});
    auto vx = tape.leaf(x.clone(), dx);
    const auto loss = linear_cross_entropy(vx, tape.constant(w.clone()), tape.constant(b.clone()), t, 4);
    loss.backward();
    CHECK(rel_diff(dx, ref.dx) <= 1e-13);
  }
  {  // x a constant: w and b get theirs
    Tape<double> tape;
    auto dw = Tensor<double>::zeros({9, 4}), db = Tensor<double>::zeros({9});
    const auto loss = linear_cross_entropy(tape.constant(x.clone()), tape.leaf(w.clone(), dw), tape.leaf(b.clone(), db), t, 4);
    loss.backward();
    CHECK(rel_diff(dw, ref.dw) <= 1e-13);
    CHECK(rel_diff(db, ref.db) <= 1e-13);
  }
  Tape<double> tape;
  auto vx = tape.leaf(x.clone());
  NoGradGuard guard;
  const auto loss = linear_cross_entropy(vx, tape.leaf(w.clone()), tape.leaf(b.clone()), t, 4);
  CHECK_FALSE(loss.requires_grad());
  CHECK(tape.size() == 3);  // the three leaves
  CHECK(loss.value()[0] == doctest::Approx(ref.loss).epsilon(1e-13));
}

TEST_CASE("linear_cross_entropy: misuse names the problem, before any work") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::zeros({2, 3, 4})), w = tape.leaf(Tensor<double>::zeros({5, 4}));
  auto b = tape.leaf(Tensor<double>::zeros({5}));
  Ids t = Ids::zeros({2, 3});
  t[4] = 5;
  const std::size_t used = tape.arena().used();
  const auto size = tape.size();
  check_throws_naming<ArgumentError>([&] { (void)linear_cross_entropy(x, w, b, t); },
                                     {"linear_cross_entropy", "id 5", "position 4", "[0, 5)"});
  t[4] = 0;
  check_throws_naming<ArgumentError>([&] { (void)linear_cross_entropy(x, w, b, t, 0); },
                                     {"linear_cross_entropy", "chunk_rows = 0"});
  check_throws_naming<ShapeError>([&] { (void)linear_cross_entropy(x, tape.leaf(Tensor<double>::zeros({5, 3})), b, t); },
                                  {"linear_cross_entropy", "[2, 3, 4]", "[5, 3]"});
  check_throws_naming<ShapeError>([&] { (void)linear_cross_entropy(x, w, b, Ids::zeros({2, 4})); },
                                  {"linear_cross_entropy", "[2, 4]", "[2, 3]"});
  CHECK(tape.size() == size + 1);      // only the leaf made for the bad weight
  CHECK(tape.arena().used() == used);  // no op allocated anything
}

// ---------------------------------------------------------------------------------------------
// dropout

namespace {

/// 1 where dropout(x, p, seed) kept the element, 0 where it dropped it (x is all ones).
std::vector<int> mask_of(std::int64_t n, float p, std::uint64_t seed) {
  Tape<float> tape;
  std::vector<float> ones(static_cast<std::size_t>(n), 1.0f);
  auto y = dropout(tape.leaf(Tensor<float>::from({n}, ones)), p, seed).value();
  std::vector<int> m(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) m[static_cast<std::size_t>(i)] = y[i] != 0.0f;
  return m;
}

}  // namespace

TEST_CASE_TEMPLATE("dropout: drops a fraction p and scales the kept values by 1/(1-p)", T, float,
                   double) {
  const std::int64_t n = 100000;
  for (const double p : {0.1, 0.3, 0.9}) {
    CAPTURE(p);
    Tape<T> tape;
    auto x = tape.leaf(mla::test::random_tensor<T>({10, n / 10}, 11, 0.5, 1.5));
    auto y = dropout(x, T(p), 1234).value();
    std::int64_t zeros = 0;
    double worst = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      if (y[i] == T(0)) {
        ++zeros;
      } else {
        const double want = static_cast<double>(x.value()[i]) / (1 - p);
        worst = std::max(worst, std::abs(static_cast<double>(y[i]) - want) / want);
      }
    }
    // Binomial(1e5, p) has a standard deviation of at most 0.0016 in the fraction.
    CHECK(std::abs(static_cast<double>(zeros) / n - p) < 0.01);
    CHECK(worst < 4 * std::numeric_limits<T>::epsilon());
  }
}

TEST_CASE("dropout: the mask is a function of the seed, not of the thread count") {
  const std::int64_t n = 100000;  // above the parallel grain
  const auto a = mask_of(n, 0.3f, 42), b = mask_of(n, 0.3f, 42), c = mask_of(n, 0.3f, 43);
  CHECK(a == b);
  std::int64_t differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) differ += a[i] != c[i];
  // Independent masks differ in 2 p (1 - p) = 42% of places.
  CHECK(std::abs(static_cast<double>(differ) / n - 0.42) < 0.02);
  const auto on = [&](int threads) {
    const test::ThreadsGuard guard(threads);
    return mask_of(n, 0.3f, 42);
  };
  const auto one = on(1), two = on(2);
  CHECK(one == a);
  CHECK(two == a);
}

TEST_CASE("dropout: identity in inference and for p = 0") {
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({3, 4}, 12));
  auto same = dropout(x, 0.0, 7);
  CHECK(same.value().data() == x.value().data());
  CHECK(same.node() == x.node());
  CHECK(tape.size() == 1);
  {
    NoGradGuard guard;
    auto y = dropout(x, 0.5, 7);
    CHECK(y.value().data() == x.value().data());
    CHECK(tape.size() == 1);
  }
  // In training with p > 0 it is not the identity, and it records a node.
  auto z = dropout(x, 0.5, 7);
  CHECK(z.value().data() != x.value().data());
  CHECK(tape.size() == 2);
}

TEST_CASE("dropout: gradient check with a fixed seed; backward recomputes the same mask") {
  const Shape shapes[] = {{7}, {2, 3, 5}, {4, 1}, {1, 1}};
  std::uint64_t seed = 30;
  for (const Shape& s : shapes) {
    CAPTURE(s.str());
    check_jacobian([](auto&, Vars& v) { return dropout(v[0], 0.3, 2); },
                   {random_tensor(s, seed++)});
  }
  // The gradient is the mask scaled by 1/(1-p): zero exactly where the output is.
  Tape<double> tape;
  auto x = tape.leaf(random_tensor({50}, 31, 0.5, 1.5));
  auto y = dropout(x, 0.3, 99);
  sum(y).backward();
  for (std::int64_t i = 0; i < 50; ++i) {
    CHECK(x.grad()[i] == (y.value()[i] == 0 ? 0.0 : doctest::Approx(1 / 0.7)));
  }
  check_float_matches_double([](auto&, auto& v) { return dropout(v[0], 0.25, 5); },
                             {random_tensor({300}, 32)});
}

TEST_CASE("dropout: a probability outside [0, 1) throws and names p") {
  Tape<float> tape;
  auto x = tape.leaf(Tensor<float>::zeros({3}));
  check_throws_naming<ArgumentError>([&] { (void)dropout(x, 1.0f, 1); }, {"dropout", "p", "1.0"});
  check_throws_naming<ArgumentError>([&] { (void)dropout(x, -0.5f, 1); }, {"dropout", "p", "-0.5"});
  check_throws_naming<ArgumentError>(
      [&] { (void)dropout(x, std::numeric_limits<float>::quiet_NaN(), 1); }, {"dropout", "nan"});
  NoGradGuard guard;  // misuse is reported in inference too
  check_throws_naming<ArgumentError>([&] { (void)dropout(x, 1.5f, 1); }, {"dropout", "1.5"});
}
