// mla/backend/cpu/optimizer.hpp — AdamW's element-wise update and the squared norm of the
// gradients, over the flat parameter buffers (mla/train/adamw.hpp drives them).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <Eigen/Core>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

/// One AdamW step over n elements (see AdamWStep), with p first multiplied by `keep` (the
/// weight decay, or 1). Each element's update depends only on itself: any thread count gives
/// the same bits. Blocks of kBlock elements: moments first, then sqrt(v) through Eigen's
/// vectorized sqrt (std::sqrt in a loop stays scalar: it may set errno), then the parameters,
/// all in L1.
template <class T>
void adamw_update(Cpu, const AdamWStep<T>& k, T* p, const T* g, T* m, T* v, std::int64_t n, T keep) {
  constexpr std::int64_t kBlock = 256;
  const auto update = [&k, p, g, m, v, keep](std::int64_t begin, std::int64_t end) {
    alignas(64) T root[kBlock];
    for (std::int64_t b = begin; b < end; b += kBlock) {
      const std::int64_t len = std::min(end, b + kBlock) - b;
      T* pb = p + b;
      T* mb = m + b;
      T* vb = v + b;
      const T* gb = g + b;
      for (std::int64_t i = 0; i < len; ++i) {
        const T gi = gb[i] * k.grad_scale;
        mb[i] = k.b1 * mb[i] + (T(1) - k.b1) * gi;
        vb[i] = k.b2 * vb[i] + (T(1) - k.b2) * gi * gi;
      }
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(root, len) =
          Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(vb, len).sqrt();
      for (std::int64_t i = 0; i < len; ++i) {
        pb[i] *= keep;
        pb[i] -= k.step_size * mb[i] / (root[i] / k.sqrt_bc2 + k.eps);
      }
    }
  };
  detail::parallel_ranges(n, n > (1 << 14), update);
}

/// The sum of x_i^2 in double, in a fixed order: each chunk of kChunk elements in kLanes
/// interleaved partial sums (element i into lane i % kLanes, so that the loop vectorizes) added
/// lane by lane, then the chunks' sums in chunk order. The chunks go in batches whose sums fit
/// on the stack. The result does not depend on the thread count.
template <class T>
double sum_of_squares(Cpu, const T* x, std::int64_t n) {
  constexpr std::int64_t kChunk = 1 << 14, kBatch = 256, kLanes = 8;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  double total = 0;
  for (std::int64_t c0 = 0; c0 < chunks; c0 += kBatch) {
    const std::int64_t nc = std::min(kBatch, chunks - c0);
    double partial[kBatch];
    detail::parallel_for(nc, true, [&](std::int64_t j) {
      const std::int64_t begin = (c0 + j) * kChunk, end = std::min(n, begin + kChunk);
      double lane[kLanes] = {};
      std::int64_t i = begin;
      for (; i + kLanes <= end; i += kLanes) {
        for (std::int64_t l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
      }
      for (std::int64_t l = 0; i < end; ++i, ++l) lane[l] += static_cast<double>(x[i]) * x[i];
      double s = 0;
      for (double y : lane) s += y;
      partial[j] = s;
    });
    for (std::int64_t j = 0; j < nc; ++j) total += partial[j];
  }
  return total;
}

}  // namespace mla::kernels
