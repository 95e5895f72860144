// tests/support/check.hpp — the shared gradient check and helpers every op test uses.
//
// check_jacobian builds the full Jacobian of an op twice — analytically, one backward per
// output element with a one-hot seed, and numerically, by central finite differences in double
// — and requires their relative (Frobenius) difference to be at most `tol`.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <mla/mla.hpp>

namespace mla::test {

/// Uniform values in [lo, hi), reproducible from `seed`.
template <class T = double>
Tensor<T> random_tensor(Shape shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Tensor<T> t = Tensor<T>::empty(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(dist(rng));
  return t;
}

/// The same values in another scalar type.
template <class To, class From>
Tensor<To> cast(const Tensor<From>& t) {
  Tensor<To> out = Tensor<To>::empty(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<To>(t[i]);
  return out;
}

/// Largest |a - b| over all elements (shapes must match).
template <class A, class B>
double max_abs_diff(const Tensor<A>& a, const Tensor<B>& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return m;
}

/// Runs `f(tape, vars)` on leaves holding `inputs`; returns the output value.
/// max |a - b| relative to the largest |b| (at least a tiny floor).
template <class A, class B>
double rel_diff(const Tensor<A>& a, const Tensor<B>& b) {
  double scale = 1e-30;
  for (std::int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  return max_abs_diff(a, b) / scale;
}

/// Same shape and the same bytes.
template <class T>
bool bit_identical(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.bytes())) == 0;
}

/// Sets the CPU backend's thread count for its lifetime, then restores it (also when a
/// REQUIRE leaves the scope). It requires the count to have taken effect, so that a test that
/// compares 1 thread with N cannot pass by running serially twice (the test build requires
/// OpenMP for the same reason).
class ThreadsGuard {
 public:
  explicit ThreadsGuard(int n) {
    set_num_threads(n);
    REQUIRE_MESSAGE(num_threads() == n, "the CPU backend runs ", num_threads(), " threads, not ", n);
  }
  ~ThreadsGuard() { set_num_threads(previous_); }
  ThreadsGuard(const ThreadsGuard&) = delete;
  ThreadsGuard& operator=(const ThreadsGuard&) = delete;

 private:
  int previous_ = num_threads();
};

/// The CPU kernels (GEMM and cached attention tiles) this CPU can run.
inline std::vector<kernels::GemmKernel> available_kernels() {
  std::vector<kernels::GemmKernel> out;
  for (const kernels::GemmKernel k : kernels::kGemmKernels) {
    if (kernels::available(k)) out.push_back(k);
  }
  return out;
}

/// Runs the CPU kernels of `kernel`'s ISA while in scope, then goes back to those in use before.
class KernelGuard {
 public:
  explicit KernelGuard(kernels::GemmKernel kernel) { kernels::set_gemm_kernel(kernel); }
  ~KernelGuard() { kernels::set_gemm_kernel(previous_); }
  KernelGuard(const KernelGuard&) = delete;
  KernelGuard& operator=(const KernelGuard&) = delete;

 private:
  kernels::GemmKernel previous_ = kernels::gemm_kernel();
};

/// Token ids in [0, vocab), reproducible from `seed`.
inline Tensor<std::int32_t> random_ids(Shape s, std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor<std::int32_t> t = Tensor<std::int32_t>::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
  return t;
}

template <class F>
Tensor<double> evaluate(F& f, const std::vector<Tensor<double>>& inputs) {
  Tape<double> tape;
  std::vector<Var<double>> vars;
  for (const auto& x : inputs) vars.push_back(tape.leaf(x.clone()));
  return f(tape, vars).value().clone();
}

/// Gradient check of `f(Tape<double>&, std::vector<Var<double>>&) -> Var<double>` at `inputs`:
/// analytic Jacobian (backward with one-hot seeds) against central differences.
template <class F>
void check_jacobian(F f, std::vector<Tensor<double>> inputs, double tol = 1e-6, double h = 1e-6) {
  // Analytic: one backward per output element, on one tape; leaf gradients go to buffers we
  // clear between seeds, so each row of J is read from a clean buffer.
  Tape<double> tape;
  std::vector<Var<double>> vars;
  std::vector<Tensor<double>> grads;
  for (const auto& x : inputs) {
    grads.push_back(Tensor<double>::zeros(x.shape()));
    vars.push_back(tape.leaf(x.clone(), grads.back()));
  }
  const Var<double> y = f(tape, vars);
  const std::int64_t m = y.numel();
  std::int64_t n = 0;
  for (const auto& x : inputs) n += x.numel();
  std::vector<double> analytic(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (auto& g : grads) g.fill_zero();
    Tensor<double> seed = Tensor<double>::zeros(y.shape());
    seed[i] = 1.0;
    y.backward(seed);
    std::int64_t col = 0;
    for (const auto& g : grads)
      for (std::int64_t j = 0; j < g.numel(); ++j) analytic[i * n + col++] = g[j];
  }

  // Numeric: perturb each input element by +-h.
  std::vector<double> numeric(static_cast<std::size_t>(m * n));
  std::int64_t col = 0;
  for (auto& x : inputs) {
    for (std::int64_t j = 0; j < x.numel(); ++j, ++col) {
      const double saved = x[j];
      x[j] = saved + h;
      const Tensor<double> plus = evaluate(f, inputs);
      x[j] = saved - h;
      const Tensor<double> minus = evaluate(f, inputs);
      x[j] = saved;
      for (std::int64_t i = 0; i < m; ++i) numeric[i * n + col] = (plus[i] - minus[i]) / (2 * h);
    }
  }

  double diff2 = 0, norm2 = 0, worst = 0;
  std::int64_t worst_at = 0;
  for (std::size_t k = 0; k < numeric.size(); ++k) {
    const double d = analytic[k] - numeric[k];
    diff2 += d * d;
    norm2 += numeric[k] * numeric[k];
    if (std::abs(d) > worst) {
      worst = std::abs(d);
      worst_at = static_cast<std::int64_t>(k);
    }
  }
  REQUIRE_MESSAGE(norm2 > 0, "the Jacobian is identically zero: the check would prove nothing");
  const double rel = std::sqrt(diff2 / norm2);
  INFO("Jacobian ", m, "x", n, ": worst entry (", worst_at / n, ", ", worst_at % n,
       ") analytic ", analytic[static_cast<std::size_t>(worst_at)], " numeric ",
       numeric[static_cast<std::size_t>(worst_at)]);
  CHECK(rel <= tol);
}

/// Runs the generic `f(tape, vars)` in float and in double on the same inputs and requires the
/// outputs to agree to float precision (relative to the output's scale).
template <class F>
void check_float_matches_double(F f, const std::vector<Tensor<double>>& inputs,
                                double tol = 1e-5) {
  Tape<double> td;
  Tape<float> tf;
  std::vector<Var<double>> vd;
  std::vector<Var<float>> vf;
  for (const auto& x : inputs) {
    vd.push_back(td.leaf(x.clone()));
    vf.push_back(tf.leaf(cast<float>(x)));
  }
  const Tensor<double> yd = f(td, vd).value();
  const Tensor<float> yf = f(tf, vf).value();
  double scale = 1;
  for (std::int64_t i = 0; i < yd.numel(); ++i) scale = std::max(scale, std::abs(yd[i]));
  CHECK(max_abs_diff(yd, yf) <= tol * scale);
}

/// Runs `body` and requires it to throw `E` with a message containing every one of `needles`.
template <class E, class Body>
void check_throws_naming(Body body, std::initializer_list<const char*> needles) {
  bool threw = false;
  try {
    body();
  } catch (const E& e) {
    threw = true;
    const std::string what = e.what();
    for (const char* needle : needles) {
      INFO("message: ", what);
      CHECK(what.find(needle) != std::string::npos);
    }
  }
  CHECK_MESSAGE(threw, "expected an exception");
}

}  // namespace mla::test
