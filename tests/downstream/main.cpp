// A downstream program: fits y = 3x with one weight by gradient descent through mla's autodiff.
#include <cmath>
#include <cstdio>

#include <mla/mla.hpp>

int main() {
  auto x = mla::Tensor<float>::from({4, 1}, {1.0f, 2.0f, 3.0f, 4.0f});
  auto y = mla::Tensor<float>::from({4, 1}, {3.0f, 6.0f, 9.0f, 12.0f});
  auto w = mla::Tensor<float>::zeros({1, 1});
  auto dw = mla::Tensor<float>::zeros({1, 1});
  mla::Tape<float> tape;
  for (int step = 0; step < 100; ++step) {
    dw.fill_zero();
    auto err = mla::sub(mla::matmul(tape.constant(x), tape.leaf(w, dw)), tape.constant(y));
    mla::mean(mla::mul(err, err)).backward();
    w[0] -= 0.02f * dw[0];
    tape.clear();
  }
  std::printf("w = %.4f\n", w[0]);
  return std::abs(w[0] - 3.0f) < 1e-3f ? 0 : 1;
}
