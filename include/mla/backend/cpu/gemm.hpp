// mla/backend/cpu/gemm.hpp — GEMM through Eigen on row-major buffers.
//
//   C[M, N] = alpha * op(A) @ op(B) + beta * C
//   op(A) = A [M, K] or, with Transpose::Yes, A^T where A is stored [K, M]
//   op(B) = B [K, N] or, with Transpose::Yes, B^T where B is stored [N, K]
#pragma once

#include <cstdint>

#include <Eigen/Core>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"

namespace mla {

/// Whether a matmul operand is used as stored or transposed.
enum class Transpose : bool { No = false, Yes = true };

constexpr Transpose operator!(Transpose t) {
  return t == Transpose::Yes ? Transpose::No : Transpose::Yes;
}

namespace kernels {

template <class T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstRowMajorMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

template <class T>
void gemm(Cpu, Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K,
          T alpha, const T* A, const T* B, T beta, T* C) {
  RowMajorMap<T> c(C, M, N);
  if (beta == T(0)) {
    c.setZero();
  } else if (beta != T(1)) {
    c *= beta;
  }
  if (M == 0 || N == 0 || K == 0) return;
  const bool a_t = ta == Transpose::Yes, b_t = tb == Transpose::Yes;
  ConstRowMajorMap<T> a(A, a_t ? K : M, a_t ? M : K);
  ConstRowMajorMap<T> b(B, b_t ? N : K, b_t ? K : N);
  if (!a_t && !b_t) c.noalias() += alpha * (a * b);
  if (!a_t && b_t) c.noalias() += alpha * (a * b.transpose());
  if (a_t && !b_t) c.noalias() += alpha * (a.transpose() * b);
  if (a_t && b_t) c.noalias() += alpha * (a.transpose() * b.transpose());
}

/// `batch` independent GEMMs; a stride of 0 reuses one operand for every batch. With
/// accumulate = true and stride_c = 0, the batches add into one C in batch order.
template <class T>
void gemm_batched(Cpu cpu, Transpose ta, Transpose tb, std::int64_t batch, std::int64_t M,
                  std::int64_t N, std::int64_t K, T alpha, const T* A, std::int64_t stride_a,
                  const T* B, std::int64_t stride_b, T beta, T* C, std::int64_t stride_c) {
  if (batch == 1) return gemm(cpu, ta, tb, M, N, K, alpha, A, B, beta, C);
  // A shared right operand under an untransposed, contiguous left one is one tall GEMM.
  if (ta == Transpose::No && stride_b == 0 && stride_a == M * K && stride_c == M * N) {
    return gemm(cpu, ta, tb, batch * M, N, K, alpha, A, B, beta, C);
  }
  // A sum over batches of A_i^T @ B_i with both stacked contiguously is one GEMM over the
  // stacked rows (the weight gradient of a Linear layer).
  if (stride_c == 0 && ta == Transpose::Yes && tb == Transpose::No && stride_a == K * M &&
      stride_b == K * N) {
    return gemm(cpu, ta, tb, M, N, batch * K, alpha, A, B, beta, C);
  }
  if (stride_c == 0) {  // reduction over the batch into one C, in a fixed order
    for (std::int64_t i = 0; i < batch; ++i) {
      gemm(cpu, ta, tb, M, N, K, alpha, A + i * stride_a, B + i * stride_b, i == 0 ? beta : T(1),
           C);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (batch * M * N * K > detail::kParallelGrain)
  for (std::int64_t i = 0; i < batch; ++i) {
    gemm(cpu, ta, tb, M, N, K, alpha, A + i * stride_a, B + i * stride_b, beta, C + i * stride_c);
  }
}

}  // namespace kernels
}  // namespace mla
