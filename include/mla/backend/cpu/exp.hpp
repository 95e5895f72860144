// mla/backend/cpu/exp.hpp — the exponentials of the softmaxes (attention, cached attention,
// cross-entropy) on the widest vectors the CPU runs.
//
//   wide_exp<T>()                          whether exp_row() below is the one to call
//   exp_row(x, shift, y, n, scale, accumulate) -> sum
//       e_j = exp(x[j] - shift) for j < n;  y[j] = (accumulate ? y[j] : 0) + scale * e_j  (y may
//       be x, or null: nothing stored);  returns sum_j e_j, summed in a fixed order
//
// wide_exp<float>() holds when the AVX-512 kernels are chosen (gemm_kernel(), the one ISA
// choice of the CPU backend): then exp_row runs 16 lanes at a time, the row's last
// vector masked. Otherwise the callers keep Eigen's exp, on the packets the program was
// compiled for (8 floats at -march=x86-64-v3), which computes a row's last partial packet lane
// by lane through libm. Eigen's own AVX-512 exp cannot be had in a target region (it exists
// only under -mavx512f), so the 16-lane one is computed here as Eigen's and Cephes' float exp
// are: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2 in a part exact in float times any
// n of the range, and the rest), e^r = 1 + r + r^2 p(r) with Cephes' degree-5 p, then times 2^n
// by vscalefps, which underflows to 0 and overflows to inf as exp does. Relative error within
// 2^-23 of exp over [-104, 88.5] (tests/test_ops_loss.cpp; 0.74 of that measured); exp(0) = 1
// exactly, exp(-inf) = 0, NaN stays NaN.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "mla/backend/cpu/compiler.hpp"
#include "mla/backend/cpu/gemm_kernel.hpp"

#if defined(MLA_GEMM_X86)
#include <immintrin.h>

MLA_TARGET_BEGIN("avx512f,fma")

namespace mla::kernels::detail::avx512 {

/// e^x in each lane.
inline __m512 exp(__m512 x) {
  // Below -104 e^x rounds to 0 (and -inf, a masked score, must give 0, not NaN); above 89 it
  // is inf. max and min return their second operand when either is NaN: NaN goes through.
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // 0.693359375: 9 significant bits
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);       // ln2 - 0.693359375
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 e_r = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e_r, n);
}

inline float exp_row(const float* x, float shift, float* y, std::int64_t n, float scale, bool accumulate) {
  const __m512 s = _mm512_set1_ps(shift), g = _mm512_set1_ps(scale);
  __m512 sum = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1u);
    const __m512 e = _mm512_maskz_mov_ps(m, exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), s)));
    sum = _mm512_add_ps(sum, e);
    if (y) {
      const __m512 base = accumulate ? _mm512_maskz_loadu_ps(m, y + j) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(g, e, base));
    }
  }
  return _mm512_reduce_add_ps(sum);
}

}  // namespace mla::kernels::detail::avx512

MLA_TARGET_END
#endif  // MLA_GEMM_X86

namespace mla::kernels::detail {

template <class T>
[[nodiscard]] inline bool wide_exp() {
#if defined(MLA_GEMM_X86)
  if constexpr (std::is_same_v<T, float>) return gemm_kernel() == GemmKernel::Avx512;
#endif
  return false;
}

/// See the file comment; call only where wide_exp<T>().
template <class T>
T exp_row([[maybe_unused]] const T* x, [[maybe_unused]] T shift, [[maybe_unused]] T* y,
              [[maybe_unused]] std::int64_t n, [[maybe_unused]] T scale = T(1),
              [[maybe_unused]] bool accumulate = false) {
#if defined(MLA_GEMM_X86)
  if constexpr (std::is_same_v<T, float>) return avx512::exp_row(x, shift, y, n, scale, accumulate);
#endif
  throw std::logic_error("exp_row: no wide exp for this type or CPU");
}

}  // namespace mla::kernels::detail
