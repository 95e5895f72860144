// mla/train/adamw.hpp — AdamW over the flat parameter buffers, and gradient-norm clipping.
//
// The update is PyTorch's torch.optim.AdamW, step for step:
//   p *= 1 - lr * wd                       (matrices only: ParameterStore::Entry::decay())
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Moments live in two buffers laid out as the store's values, so one loop covers every
// parameter; each element's update depends only on itself, so any thread count gives the
// same bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "mla/backend/cpu/parallel.hpp"
#include "mla/nn/parameters.hpp"

namespace mla {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

template <class T>
class AdamW {
 public:
  AdamW(const ParameterStore<T, Cpu>& store, AdamWOptions opt)
      : opt_(opt), m_(Tensor<T>::zeros(store.values().shape())), v_(Tensor<T>::zeros(store.values().shape())) {
    for (const auto& e : store.entries()) ranges_.push_back({e.offset, e.shape.numel(), e.decay()});
  }

  /// One update with learning rate `lr`; gradients are first multiplied by `grad_scale`
  /// (the clipping factor).
  void step(const ParameterStore<T, Cpu>& store, double lr, double grad_scale = 1.0) {
    ++t_;
    const double bc1 = 1 - std::pow(opt_.beta1, static_cast<double>(t_));
    const double bc2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));
    const T b1 = static_cast<T>(opt_.beta1), b2 = static_cast<T>(opt_.beta2);
    const T step_size = static_cast<T>(lr / bc1), sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
    const T eps = static_cast<T>(opt_.eps), scale = static_cast<T>(grad_scale);
    const T decay = static_cast<T>(1 - lr * opt_.weight_decay);
    T* p = store.values().data();
    const T* g = store.grads().data();
    T* m = m_.data();
    T* v = v_.data();
    // One pass over the flat buffers, each thread a contiguous part; a parameter's decay is
    // per tensor, so each part walks the tensors it overlaps.
    // Blocks of kBlock elements: moments first, then sqrt(v) through Eigen's vectorized sqrt
    // (std::sqrt in a loop stays scalar: it may set errno), then the parameters, all in L1.
    constexpr std::int64_t kBlock = 256;
    const auto update = [=](std::int64_t begin, std::int64_t end, T keep) {
      alignas(64) T root[kBlock];
      for (std::int64_t b = begin; b < end; b += kBlock) {
        const std::int64_t len = std::min(end, b + kBlock) - b;
        T* pb = p + b;
        T* mb = m + b;
        T* vb = v + b;
        const T* gb = g + b;
        for (std::int64_t i = 0; i < len; ++i) {
          const T gi = gb[i] * scale;
          mb[i] = b1 * mb[i] + (T(1) - b1) * gi;
          vb[i] = b2 * vb[i] + (T(1) - b2) * gi * gi;
        }
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(root, len) =
            Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(vb, len).sqrt();
        for (std::int64_t i = 0; i < len; ++i) {
          pb[i] *= keep;
          pb[i] -= step_size * mb[i] / (root[i] / sqrt_bc2 + eps);
        }
      }
    };
    const std::int64_t n = store.values().numel();
    kernels::detail::parallel_ranges(n, n > (1 << 14), [&](std::int64_t begin, std::int64_t end) {
      for (const Range& r : ranges_) {
        const std::int64_t lo = std::max(begin, r.offset), hi = std::min(end, r.offset + r.count);
        if (lo < hi) update(lo, hi, r.decay ? decay : T(1));
      }
    });
  }

  [[nodiscard]] std::int64_t steps() const { return t_; }
  void set_steps(std::int64_t t) { t_ = t; }
  [[nodiscard]] const Tensor<T>& first_moment() const { return m_; }
  [[nodiscard]] const Tensor<T>& second_moment() const { return v_; }

 private:
  struct Range {
    std::int64_t offset, count;
    bool decay;
  };
  AdamWOptions opt_;
  Tensor<T> m_, v_;
  std::vector<Range> ranges_;
  std::int64_t t_ = 0;
};

/// L2 norm of every gradient, accumulated in double in a fixed order: each chunk of kChunk
/// elements in kLanes interleaved partial sums (element i into lane i % kLanes, so that the
/// loop vectorizes) added lane by lane, then the chunks' sums in chunk order. The chunks go in
/// batches whose sums fit on the stack.
template <class T>
double grad_norm(const ParameterStore<T, Cpu>& store) {
  constexpr std::int64_t kChunk = 1 << 14, kBatch = 256, kLanes = 8;
  const T* g = store.grads().data();
  const std::int64_t n = store.grads().numel(), chunks = (n + kChunk - 1) / kChunk;
  double total = 0;
  for (std::int64_t c0 = 0; c0 < chunks; c0 += kBatch) {
    const std::int64_t nc = std::min(kBatch, chunks - c0);
    double partial[kBatch];
    kernels::detail::parallel_for(nc, true, [&](std::int64_t j) {
      const std::int64_t begin = (c0 + j) * kChunk, end = std::min(n, begin + kChunk);
      double lane[kLanes] = {};
      std::int64_t i = begin;
      for (; i + kLanes <= end; i += kLanes) {
        for (std::int64_t l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(g[i + l]) * g[i + l];
      }
      for (std::int64_t l = 0; i < end; ++i, ++l) lane[l] += static_cast<double>(g[i]) * g[i];
      double s = 0;
      for (double x : lane) s += x;
      partial[j] = s;
    });
    for (std::int64_t j = 0; j < nc; ++j) total += partial[j];
  }
  return std::sqrt(total);
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (PyTorch's
/// clip_grad_norm_): 1 when already within.
inline double clip_factor(double norm, double max_norm) {
  const double f = max_norm / (norm + 1e-6);
  return f < 1 ? f : 1;
}

}  // namespace mla
