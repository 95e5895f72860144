// mla/train/schedule.hpp — the learning-rate schedule of the reference experiments (the PyTorch
// MLA study this library reproduces; docs/design.md): linear warmup, then a cosine decay to a
// floor of 0.1 x peak at the last step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace mla {

struct CosineSchedule {
  double peak = 1e-3;
  std::int64_t warmup = 100;
  std::int64_t total = 1000;
  double floor_ratio = 0.1;

  /// Learning rate of step `step` (0-based).
  [[nodiscard]] double operator()(std::int64_t step) const {
    if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const double min_lr = floor_ratio * peak;
    const double span = static_cast<double>(std::max<std::int64_t>(total - warmup, 1));
    const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
    return min_lr + 0.5 * (peak - min_lr) * (1 + std::cos(3.14159265358979323846 * progress));
  }
};

}  // namespace mla
