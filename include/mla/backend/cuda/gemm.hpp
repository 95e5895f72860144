// mla/backend/cuda/gemm.hpp — matrix products of the Thrust/CUDA device: cuBLAS on the GPU, the
// CPU backend's GEMM in a build for Thrust's OpenMP system (where device memory is host memory).
//
// Operands are row-major, as everywhere in mla: C [M, N] = alpha * op(A) @ op(B) + beta * C with
// op(A) [M, K] and op(B) [K, N]. cuBLAS is column-major, and a row-major matrix read as
// column-major is its transpose, so C^T = op(B)^T @ op(A)^T is one cuBLAS call with the operands
// swapped and the same transpose flags.
//
// Float products run in full float32: TF32 tensor cores stay off (cuBLAS's default math mode)
// unless a program asks for them with gpu::set_tf32(true).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

#if MLA_CUDA_RUNTIME
#include <cublas_v2.h>
#else
#include "mla/backend/cpu/gemm.hpp"
#endif

namespace mla {
namespace gpu {
#if MLA_CUDA_RUNTIME
/// Throws DeviceError naming `what` when a cuBLAS call failed.
inline void check(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  if (status == CUBLAS_STATUS_ALLOC_FAILED) throw DeviceError(std::string(what) + ": out of device memory");
  throw DeviceError(std::string(what) + ": " + cublasGetStatusString(status));
}

/// Whether float GEMMs may use TF32 tensor cores (off by default).
inline bool& tf32_enabled() {
  static bool enabled = false;
  return enabled;
}

/// The library's cuBLAS handle, on the library's stream.
inline cublasHandle_t blas() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    check(cublasCreate(&h), "cublasCreate");
    check(cublasSetStream(h, stream()), "cublasSetStream");
    check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    return h;
  }();
  return handle;
}

inline void set_tf32(bool on) {
  tf32_enabled() = on;
  check(cublasSetMathMode(blas(), on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
}
#else
/// TF32 exists only on a GPU; in a host build the products are float32 whatever is asked.
inline void set_tf32(bool) {}
#endif
}  // namespace gpu

namespace kernels {

#if MLA_CUDA_RUNTIME
namespace detail {
inline cublasOperation_t blas_op(Transpose t) { return t == Transpose::Yes ? CUBLAS_OP_T : CUBLAS_OP_N; }

/// `batch` products C_i = alpha op(A_i) op(B_i) + beta C_i through cuBLAS (row-major operands).
template <class T>
void blas_gemm(Transpose ta, Transpose tb, std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K,
               T alpha, const T* A, std::int64_t stride_a, const T* B, std::int64_t stride_b, T beta, T* C,
               std::int64_t stride_c) {
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const int lda = static_cast<int>(ta == Transpose::No ? K : M);
  const int ldb = static_cast<int>(tb == Transpose::No ? N : K);
  const cublasOperation_t opa = blas_op(ta), opb = blas_op(tb);
  cublasHandle_t h = gpu::blas();
  if constexpr (std::is_same_v<T, float>) {
    if (batch == 1) {
      gpu::check(cublasSgemm(h, opb, opa, n, m, k, &alpha, B, ldb, A, lda, &beta, C, n), "cublasSgemm");
    } else {
      gpu::check(cublasSgemmStridedBatched(h, opb, opa, n, m, k, &alpha, B, ldb, stride_b, A, lda, stride_a, &beta,
                                            C, n, stride_c, static_cast<int>(batch)),
                  "cublasSgemmStridedBatched");
    }
  } else {
    static_assert(std::is_same_v<T, double>, "mla::Cuda: GEMM in float or double");
    if (batch == 1) {
      gpu::check(cublasDgemm(h, opb, opa, n, m, k, &alpha, B, ldb, A, lda, &beta, C, n), "cublasDgemm");
    } else {
      gpu::check(cublasDgemmStridedBatched(h, opb, opa, n, m, k, &alpha, B, ldb, stride_b, A, lda, stride_a, &beta,
                                            C, n, stride_c, static_cast<int>(batch)),
                  "cublasDgemmStridedBatched");
    }
  }
}
}  // namespace detail
#endif

/// C [M, N] = alpha * op(A) @ op(B) + beta * C (row-major). With K = 0, C = beta * C.
template <class T>
void gemm(Cuda, Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  if (M == 0 || N == 0) return;
#if MLA_CUDA_RUNTIME
  detail::blas_gemm(ta, tb, 1, M, N, K, alpha, A, 0, B, 0, beta, C, 0);
#else
  gemm(Cpu{}, ta, tb, M, N, K, alpha, A, B, beta, C);
#endif
}

/// `batch` independent GEMMs; a stride of 0 reuses one operand for every batch. With
/// stride_c = 0 the batches add into one C in batch order (beta applies once, before the first).
template <class T>
void gemm_batched(Cuda cuda, Transpose ta, Transpose tb, std::int64_t batch, std::int64_t M, std::int64_t N,
                  std::int64_t K, T alpha, const T* A, std::int64_t stride_a, const T* B, std::int64_t stride_b,
                  T beta, T* C, std::int64_t stride_c) {
#if MLA_CUDA_RUNTIME
  if (batch == 0 || M == 0 || N == 0) return;
  if (batch == 1) return gemm(cuda, ta, tb, M, N, K, alpha, A, B, beta, C);
  // A shared right operand under an untransposed, contiguous left one is one tall GEMM.
  if (ta == Transpose::No && stride_b == 0 && stride_a == M * K && stride_c == M * N) {
    return gemm(cuda, ta, tb, batch * M, N, K, alpha, A, B, beta, C);
  }
  // A sum over batches of A_i^T @ B_i, both stacked contiguously, is one GEMM over the stacked
  // rows (a Linear layer's weight gradient).
  if (stride_c == 0 && ta == Transpose::Yes && tb == Transpose::No && stride_a == K * M && stride_b == K * N) {
    return gemm(cuda, ta, tb, M, N, batch * K, alpha, A, B, beta, C);
  }
  if (stride_c == 0) {  // a reduction into one C: in batch order
    for (std::int64_t i = 0; i < batch; ++i) {
      gemm(cuda, ta, tb, M, N, K, alpha, A + i * stride_a, B + i * stride_b, i == 0 ? beta : T(1), C);
    }
    return;
  }
  detail::blas_gemm(ta, tb, batch, M, N, K, alpha, A, stride_a, B, stride_b, beta, C, stride_c);
#else
  (void)cuda;
  gemm_batched(Cpu{}, ta, tb, batch, M, N, K, alpha, A, stride_a, B, stride_b, beta, C, stride_c);
#endif
}

}  // namespace kernels
}  // namespace mla
