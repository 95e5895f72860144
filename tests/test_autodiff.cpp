// Autodiff semantics: leaves, accumulation, repeated backward, no-grad mode, misuse.
#include <doctest/doctest.h>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_throws_naming;

TEST_CASE("autodiff: a leaf used twice gets the sum of both gradients") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::from({3}, {1.0, -2.0, 3.0}));
  auto y = sum(mul(x, x));  // d/dx sum(x^2) = 2x, reached through both operands
  y.backward();
  CHECK(y.value()[0] == doctest::Approx(14.0));
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, -4.0, 6.0});
}

TEST_CASE("autodiff: parameter gradients accumulate across backward calls until zeroed") {
  auto w = Tensor<double>::from({2}, {0.5, 2.0});
  auto gw = Tensor<double>::zeros({2});
  for (int step = 0; step < 2; ++step) {
    Tape<double> tape;
    auto wv = tape.leaf(w, gw);
    auto x = tape.constant(Tensor<double>::from({2}, {3.0, 4.0}));
    sum(mul(x, wv)).backward();
  }
  CHECK(gw.to_vector() == std::vector<double>{6.0, 8.0});
  gw.fill_zero();  // zero_grad
  CHECK(gw.to_vector() == std::vector<double>{0.0, 0.0});
}

TEST_CASE("autodiff: backward twice on one tape gives the same intermediate gradients") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::from({2}, {1.0, 2.0}));
  auto h = relu(scale(x, 3.0));
  auto y = sum(h);
  y.backward();
  const auto first = h.grad().to_vector();
  y.backward();
  CHECK(h.grad().to_vector() == first);                            // intermediates restart
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 6.0});   // leaves accumulate
}

TEST_CASE("autodiff: no-grad mode records nothing and allocates no gradient buffer") {
  Tape<float> tape;
  auto x = tape.leaf(Tensor<float>::from({2}, {1.0f, 2.0f}));
  {
    NoGradGuard guard;
    auto y = sum(relu(x));
    CHECK(!y.requires_grad());
    CHECK(tape.size() == 1);  // only the leaf
    CHECK(y.value()[0] == 3.0f);
  }
  CHECK(GradMode::enabled());
  CHECK(!x.grad());  // no gradient buffer was ever made
  auto y = sum(relu(x));
  CHECK(y.requires_grad());
  CHECK(tape.size() == 3);
}

TEST_CASE("autodiff: clear keeps capacity; a re-recorded step allocates no new arena memory") {
  Tape<float> tape;
  auto w = Tensor<float>::zeros({64, 64});
  auto gw = Tensor<float>::zeros({64, 64});
  auto x = Tensor<float>::zeros({32, 64});
  auto step = [&] {
    auto wv = tape.leaf(w, gw);
    auto y = mean(relu(matmul(tape.constant(x), wv, Transpose::No, Transpose::Yes)));
    y.backward();
    tape.clear();
  };
  step();
  step();
  const std::size_t capacity = tape.arena().capacity();
  const std::size_t allocations = tape.arena().allocations();
  for (int i = 0; i < 3; ++i) step();
  CHECK(tape.arena().capacity() == capacity);
  CHECK(tape.arena().allocations() == allocations);

  // A caller that keeps the loss across clear() (as a training loop does) pins one block;
  // the arena alternates between two and still stops allocating.
  Var<float> kept;
  auto step_keeping = [&] {
    auto wv = tape.leaf(w, gw);
    kept = mean(relu(matmul(tape.constant(x), wv, Transpose::No, Transpose::Yes)));
    kept.backward();
    tape.clear();
  };
  step_keeping();
  step_keeping();
  step_keeping();
  const std::size_t pinned = tape.arena().allocations();
  for (int i = 0; i < 5; ++i) step_keeping();
  CHECK(tape.arena().allocations() == pinned);
}

TEST_CASE("autodiff: misuse throws and names the problem") {
  Tape<double> tape;
  auto x = tape.leaf(Tensor<double>::from({2}, {1.0, 2.0}));
  check_throws_naming<AutodiffError>([&] { relu(x).backward(); }, {"backward", "scalar", "[2]"});
  auto c = Var<double>(Tensor<double>::from({}, {1.0}));
  check_throws_naming<AutodiffError>([&] { c.backward(); }, {"backward", "not recorded"});
  Tape<double> other;
  auto z = other.leaf(Tensor<double>::from({2}, {1.0, 2.0}));
  check_throws_naming<AutodiffError>([&] { (void)add(x, z); }, {"add", "different tapes"});
  check_throws_naming<ShapeError>([&] { relu(x).backward(Tensor<double>::zeros({3})); },
                                  {"backward", "seed [3]", "[2]"});
}
