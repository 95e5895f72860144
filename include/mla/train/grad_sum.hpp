// mla/train/grad_sum.hpp — a step's gradient summed over its micro-batches in a fixed order.
//
// Each micro-batch's backward runs into zeroed gradients g_k, and the step's gradient is
//   ((g_0 + g_1) + g_2) + ...      left to right, one float add per element and micro-batch.
// A backward that added straight into the previous micro-batch's gradients would round
// differently (a GEMM adds its product into C block by block). The data-parallel all-reduce
// (mla/parallel/mpi.hpp) sums the ranks' gradients in the same order, so N processes with one
// micro-batch each end with the same bits as one process that accumulates those N.
#pragma once

#include <cstdint>

#include "mla/backend/kernels.hpp"
#include "mla/nn/parameters.hpp"

namespace mla {

template <TensorScalar T, Device D = Cpu>
class GradientSum {
 public:
  explicit GradientSum(const ParameterStore<T, D>& store) : store_(store) {}

  /// Call before each micro-batch's backward: the previous micro-batch's gradient joins the
  /// sum, and the store's gradients start from zero.
  void next() {
    if (count_ == 1) {
      if (!sum_.defined()) sum_ = Tensor<T, D>::empty(store_.grads().shape());
      sum_.copy_from(store_.grads());
    } else if (count_ > 1) {
      add_into_sum();
    }
    store_.zero_grad();
    ++count_;
  }

  /// After the last micro-batch: the store's gradients hold the sum. Then next() starts a step.
  void finish() {
    if (count_ > 1) {
      add_into_sum();
      store_.grads().copy_from(sum_);
    }
    count_ = 0;
  }

 private:
  void add_into_sum() { kernels::accumulate(D{}, store_.grads().data(), sum_.data(), sum_.numel()); }

  const ParameterStore<T, D>& store_;
  Tensor<T, D> sum_;  // g_0 + ... + g_{k-1}; allocated on the first step with two micro-batches
  std::int64_t count_ = 0;
};

}  // namespace mla
