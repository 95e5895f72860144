// mla/backend/cpu/gemm_avx2.hpp — the float GEMM kernel for AVX2 and FMA: gemm_tile.inl's loop
// nest around a 6x16 register tile (BLIS's haswell shape), compiled for AVX2 by a target
// region whatever the program's -march; gemm_kernel.hpp runs it where cpuid reports AVX2 and
// FMA but not AVX-512F (AMD's Zen 3, for one).
//
// Of the 16 vector registers, 12 accumulate: 6 rows of C, each 16 floats (two registers)
// wide. Per step of k it loads two vectors of B, broadcasts 6 scalars of A and issues 12
// FMAs, enough independent chains to cover the FMA latency on two pipes. A panel of A keeps 8
// floats per step of k (6 used): whole-vector stores when packing, where AVX2's masked store is
// slow.
#pragma once

#include "mla/backend/cpu/compiler.hpp"
#include "mla/backend/cpu/gemm_kernel.hpp"

#if defined(MLA_GEMM_X86)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "mla/backend/cpu/gemm_packed.hpp"

MLA_TARGET_BEGIN("avx2,fma")

namespace mla::kernels::detail::avx2 {

using Vec = __m256;
using Mask = __m256i;
inline constexpr int kLanes = 8;
inline constexpr std::int64_t kMR = 6;    // rows of a register tile: broadcasts of A
inline constexpr int kV = 2;              // vectors of B per row of a register tile: 16 columns
inline constexpr std::int64_t kPA = 8;    // a panel of A: 8 floats per step of k, 6 of them used
inline constexpr std::int64_t kKC = 256;  // steps of k per block: an A panel is 8 KiB (L1)
inline constexpr std::int64_t kNC = 512;  // columns per B block: 256 x 512 floats, 512 KiB (L2)

/// The first n lanes of a vector: lane i is all ones where i < n.
inline Mask lanes(std::int64_t n) {
  const int count = static_cast<int>(std::clamp<std::int64_t>(n, 0, kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline Vec load(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
inline void store(float* p, Mask m, Vec v) { _mm256_maskstore_ps(p, m, v); }
inline Vec load_aligned(const float* p) { return _mm256_load_ps(p); }
inline void store_aligned(float* p, Vec v) { _mm256_store_ps(p, v); }
inline void store_panel_step(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec set1(float x) { return _mm256_set1_ps(x); }
inline Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }

/// Transposes the 8x8 block in r (r[i] is row i) in place: 24 shuffles, three per row.
inline void transpose(Vec r[8]) {
  Vec t[8], u[8];
  for (int i = 0; i < 8; i += 2) {  // within each 128-bit lane: pairs of rows interleaved
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // u[i + m]: column m of rows i..i+3, then column 4 + m
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int m = 0; m < 4; ++m) {  // the halves of rows 0..3 and 4..7 joined
    r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
    r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
  }
}

#include "mla/backend/cpu/gemm_tile.inl"

}  // namespace mla::kernels::detail::avx2

MLA_TARGET_END

#endif  // MLA_GEMM_X86
