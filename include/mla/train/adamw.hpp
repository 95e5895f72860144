// mla/train/adamw.hpp — AdamW over the flat parameter buffers, and gradient-norm clipping.
//
// The update is PyTorch's torch.optim.AdamW, step for step:
//   p *= 1 - lr * wd                       (matrices only: ParameterStore::Entry::decay())
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Moments live in two buffers laid out as the store's values; the update runs over runs of
// consecutive parameters that share their decay (kernels::adamw_update), and each element's
// update depends only on itself, so any thread count gives the same bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mla/backend/kernels.hpp"
#include "mla/nn/parameters.hpp"

namespace mla {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

template <class T, Device D = Cpu>
class AdamW {
 public:
  AdamW(const ParameterStore<T, D>& store, AdamWOptions opt)
      : opt_(opt),
        m_(Tensor<T, D>::zeros(store.values().shape())),
        v_(Tensor<T, D>::zeros(store.values().shape())) {
    // Runs of consecutive parameters with the same decay: one kernel call each.
    for (const auto& e : store.entries()) {
      const std::int64_t end = e.offset + e.shape.numel();
      if (!ranges_.empty() && ranges_.back().decay == e.decay()) {
        ranges_.back().count = end - ranges_.back().offset;  // the padding between them is zero
      } else {
        ranges_.push_back({e.offset, end - e.offset, e.decay()});
      }
    }
  }

  /// One update with learning rate `lr`; gradients are first multiplied by `grad_scale`
  /// (the clipping factor).
  void step(const ParameterStore<T, D>& store, double lr, double grad_scale = 1.0) {
    ++t_;
    const double bc1 = 1 - std::pow(opt_.beta1, static_cast<double>(t_));
    const double bc2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));
    const kernels::AdamWStep<T> k{static_cast<T>(opt_.beta1), static_cast<T>(opt_.beta2), static_cast<T>(lr / bc1),
                                  static_cast<T>(std::sqrt(bc2)), static_cast<T>(opt_.eps),
                                  static_cast<T>(grad_scale)};
    const T decay = static_cast<T>(1 - lr * opt_.weight_decay);
    T* p = store.values().data();
    const T* g = store.grads().data();
    for (const Range& r : ranges_) {
      kernels::adamw_update(D{}, k, p + r.offset, g + r.offset, m_.data() + r.offset, v_.data() + r.offset, r.count,
                            r.decay ? decay : T(1));
    }
  }

  [[nodiscard]] std::int64_t steps() const { return t_; }
  void set_steps(std::int64_t t) { t_ = t; }
  [[nodiscard]] const Tensor<T, D>& first_moment() const { return m_; }
  [[nodiscard]] const Tensor<T, D>& second_moment() const { return v_; }

 private:
  struct Range {
    std::int64_t offset, count;
    bool decay;
  };
  AdamWOptions opt_;
  Tensor<T, D> m_, v_;
  std::vector<Range> ranges_;
  std::int64_t t_ = 0;
};

/// L2 norm of every gradient, accumulated in double (in a fixed order on the CPU: see
/// kernels::sum_of_squares). The one value of a training step that comes back to the host.
template <class T, Device D>
double grad_norm(const ParameterStore<T, D>& store) {
  return std::sqrt(kernels::sum_of_squares(D{}, store.grads().data(), store.grads().numel()));
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (PyTorch's
/// clip_grad_norm_): 1 when already within.
inline double clip_factor(double norm, double max_norm) {
  const double f = max_norm / (norm + 1e-6);
  return f < 1 ? f : 1;
}

}  // namespace mla
