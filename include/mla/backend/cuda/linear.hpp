// mla/backend/cuda/linear.hpp — a Linear layer's products on the Thrust/CUDA device:
//   y [R, Out] = x [R, In] @ w [Out, In]^T + bias      (the bias seeded into C, then one GEMM)
//   dw += dout^T @ x,  db += the column sums of dout
#pragma once

#include <cstdint>

#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/elementwise.hpp"
#include "mla/backend/cuda/gemm.hpp"

namespace mla::kernels {

template <class T>
void linear_forward(Cuda cuda, std::int64_t R, std::int64_t Out, std::int64_t In, const T* x, const T* w,
                    const T* bias, T* y) {
  broadcast_rows(cuda, bias, y, R, Out);
  gemm(cuda, Transpose::No, Transpose::Yes, R, Out, In, T(1), x, w, T(1), y);
}

/// dw += dout^T @ x and db += the column sums of dout; either of dw, db may be null.
template <class T>
void linear_param_grads(Cuda cuda, std::int64_t R, std::int64_t Out, std::int64_t In, const T* dout, const T* x,
                        T* dw, T* db) {
  if (dw) gemm(cuda, Transpose::Yes, Transpose::No, Out, In, R, T(1), dout, x, T(1), dw);
  if (db) accumulate_column_sums(cuda, dout, db, R, Out);
}

}  // namespace mla::kernels
