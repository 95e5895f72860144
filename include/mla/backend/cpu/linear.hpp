// mla/backend/cpu/linear.hpp — a Linear layer's products with its bias folded in:
//
//   forward    y[R, Out] = x[R, In] @ w[Out, In]^T + bias[Out]
//   backward   dw[Out, In] += dout[R, Out]^T @ x[R, In]    db[Out] += sum over rows of dout
//
// On the register-tile kernels (float, large products) the bias is added as each tile of y is
// stored, and db is summed while dout^T is packed for dw: neither takes a pass of its own over
// [R, Out] (for the model's logits that is 64 MiB each). Otherwise they are separate passes.
// The results are the same bits either way: y = (x w^T) + bias per element, and db sums the
// rows in order.
#pragma once

#include <cstdint>
#include <type_traits>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/elementwise.hpp"
#include "mla/backend/cpu/gemm.hpp"

namespace mla::kernels {

template <class T>
void linear_forward(Cpu cpu, std::int64_t R, std::int64_t Out, std::int64_t In, const T* x, const T* w,
                    const T* bias, T* y) {
  if (detail::gemm_few_rows(Transpose::No, Transpose::Yes, R, Out, In, T(1), x, w, T(0), y, bias)) return;
  if constexpr (std::is_same_v<T, float>) {
    if (detail::blocked(R, Out, In) && detail::gemm_register_tiles(gemm_kernel(), Transpose::No, Transpose::Yes, R,
                                                                   Out, In, 1.0f, x, w, 0.0f, y, {.bias = bias})) {
      return;
    }
  }
  broadcast_rows(cpu, bias, y, R, Out);
  gemm(cpu, Transpose::No, Transpose::Yes, R, Out, In, T(1), x, w, T(1), y);
}

/// dw += dout^T @ x and db += the column sums of dout; either of dw, db may be null.
template <class T>
void linear_param_grads(Cpu cpu, std::int64_t R, std::int64_t Out, std::int64_t In, const T* dout, const T* x,
                        T* dw, T* db) {
  if constexpr (std::is_same_v<T, float>) {
    if (dw && db && detail::blocked(Out, In, R) &&
        detail::gemm_register_tiles(gemm_kernel(), Transpose::Yes, Transpose::No, Out, In, R, 1.0f, dout, x, 1.0f, dw,
                                    {.a_row_sums = db})) {
      return;
    }
  }
  if (dw) gemm(cpu, Transpose::Yes, Transpose::No, Out, In, R, T(1), dout, x, T(1), dw);
  if (db) accumulate_column_sums(cpu, dout, db, R, Out);
}

}  // namespace mla::kernels
