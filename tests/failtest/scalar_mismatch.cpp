// Must not compile: adding a float Var to a double Var. Built twice by the failtest: once as
// written (the build must fail with mla's message), once with MLA_FAILTEST_OK (same scalar
// types), which must compile, proving that the misuse and nothing else is what fails.
#include <mla/autodiff.hpp>

int main() {
  mla::Tape<float> tape;
  auto a = tape.leaf(mla::Tensor<float>::zeros({2}));
#if defined(MLA_FAILTEST_OK)
  auto b = tape.leaf(mla::Tensor<float>::zeros({2}));
#else
  mla::Tape<double> other;
  auto b = other.leaf(mla::Tensor<double>::zeros({2}));
#endif
  auto c = mla::add(a, b);
  return c.numel() == 2 ? 0 : 1;
}
