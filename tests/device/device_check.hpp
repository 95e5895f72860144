// tests/device/device_check.hpp — what the Thrust/CUDA backend's tests share: copies between the
// host and the device under test, the gradient check run on that device, and the comparison of
// an op or a model on both devices.
//
// The programs are built twice from the same sources: by g++ for Thrust's OpenMP system (host
// memory, run in CI) and by nvcc for the GPU. Either way they are built with
// MLA_POISON_ALLOCATIONS, so every device allocation starts as NaN and an element a kernel
// forgot to write fails the comparison.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include <mla/cuda.hpp>

#include "support/check.hpp"

namespace mla::test {

using Dev = Cuda;

/// A copy of a host tensor on device D (or the reverse).
template <Device To, class T>
Tensor<T, To> to_device(const Tensor<T, Cpu>& host) {
  Tensor<T, To> t = Tensor<T, To>::empty(host.shape());
  To::copy_from_host(t.data(), host.data(), host.bytes());
  return t;
}
template <class T, Device From>
Tensor<T, Cpu> to_host(const Tensor<T, From>& t) {
  Tensor<T, Cpu> host = Tensor<T, Cpu>::empty(t.shape());
  From::copy_to_host(host.data(), t.data(), t.bytes());
  return host;
}

/// check_jacobian (support/check.hpp) with the tape and every value on device D: the analytic
/// Jacobian from one backward per output element on D, against central differences in double
/// of the same function evaluated on D.
template <Device D, class F>
void check_jacobian_on(F f, std::vector<Tensor<double>> inputs, double tol = 1e-6, double h = 1e-6) {
  auto evaluate_on = [&](const std::vector<Tensor<double>>& xs) {
    Tape<double, D> tape;
    std::vector<Var<double, D>> vars;
    for (const auto& x : xs) vars.push_back(tape.leaf(to_device<D>(x)));
    return to_host(f(tape, vars).value());
  };
  Tape<double, D> tape;
  std::vector<Var<double, D>> vars;
  std::vector<Tensor<double, D>> grads;
  for (const auto& x : inputs) {
    grads.push_back(Tensor<double, D>::zeros(x.shape()));
    vars.push_back(tape.leaf(to_device<D>(x), grads.back()));
  }
  const Var<double, D> y = f(tape, vars);
  const std::int64_t m = y.numel();
  std::int64_t n = 0;
  for (const auto& x : inputs) n += x.numel();
  std::vector<double> analytic(static_cast<std::size_t>(m * n)), numeric(analytic.size());
  for (std::int64_t i = 0; i < m; ++i) {
    for (auto& g : grads) g.fill_zero();
    Tensor<double> seed = Tensor<double>::zeros(y.shape());
    seed[i] = 1.0;
    y.backward(to_device<D>(seed));
    std::int64_t col = 0;
    for (const auto& g : grads) {
      const Tensor<double> gh = to_host(g);
      for (std::int64_t j = 0; j < gh.numel(); ++j) analytic[static_cast<std::size_t>(i * n + col++)] = gh[j];
    }
  }
  std::int64_t col = 0;
  for (auto& x : inputs) {
    for (std::int64_t j = 0; j < x.numel(); ++j, ++col) {
      const double saved = x[j];
      x[j] = saved + h;
      const Tensor<double> plus = evaluate_on(inputs);
      x[j] = saved - h;
      const Tensor<double> minus = evaluate_on(inputs);
      x[j] = saved;
      for (std::int64_t i = 0; i < m; ++i) numeric[static_cast<std::size_t>(i * n + col)] = (plus[i] - minus[i]) / (2 * h);
    }
  }
  double diff2 = 0, norm2 = 0;
  for (std::size_t k = 0; k < numeric.size(); ++k) {
    diff2 += (analytic[k] - numeric[k]) * (analytic[k] - numeric[k]);
    norm2 += numeric[k] * numeric[k];
  }
  REQUIRE_MESSAGE(norm2 > 0, "the Jacobian is identically zero: the check would prove nothing");
  CHECK(std::sqrt(diff2 / norm2) <= tol);
}

/// Runs `f(tape, vars)` on the CPU and on device D from the same float inputs, backpropagates
/// the same random seed gradient on both, and requires the outputs and every input's gradient
/// to agree within `tol` relative to their largest magnitude.
template <Device D, class F>
void check_matches_cpu(F f, const std::vector<Tensor<double>>& inputs, double tol = 1e-5) {
  Tape<float, Cpu> tc;
  Tape<float, D> td;
  std::vector<Var<float, Cpu>> vc;
  std::vector<Var<float, D>> vd;
  std::vector<Tensor<float, Cpu>> gc;
  std::vector<Tensor<float, D>> gd;
  for (const auto& x : inputs) {
    const Tensor<float> xf = cast<float>(x);
    gc.push_back(Tensor<float>::zeros(x.shape()));
    gd.push_back(Tensor<float, D>::zeros(x.shape()));
    vc.push_back(tc.leaf(xf.clone(), gc.back()));
    vd.push_back(td.leaf(to_device<D>(xf), gd.back()));
  }
  const Var<float, Cpu> yc = f(tc, vc);
  const Var<float, D> yd = f(td, vd);
  const Tensor<float> out_d = to_host(yd.value());
  CHECK(rel_diff(out_d, yc.value()) <= tol);
  const Tensor<float> seed = cast<float>(random_tensor(yc.shape(), 99));
  yc.backward(seed);
  yd.backward(to_device<D>(seed));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(i);
    CHECK(rel_diff(to_host(gd[i]), gc[i]) <= tol);
  }
}

/// Token ids in [0, vocab), reproducible from `seed`, on device D.
template <Device D>
Tensor<std::int32_t, D> device_ids(Shape s, std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor<std::int32_t> t = Tensor<std::int32_t>::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
  return to_device<D>(t);
}

}  // namespace mla::test
