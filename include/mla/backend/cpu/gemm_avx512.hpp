// mla/backend/cpu/gemm_avx512.hpp — the float GEMM kernel for AVX-512: gemm_tile.inl's loop
// nest around a 12x32 register tile, compiled for AVX-512F by a target region whatever the
// program's -march; gemm_kernel.hpp runs it only where cpuid reports AVX-512F.
//
// Why not Eigen's kernels here: Eigen 3.4 tiles AVX-512 float products 48x4 (12 of the 32
// vector registers accumulate) and ran the model's GEMMs at 70-90 GFLOP/s per core on these
// machines, where OpenBLAS reaches 95-110. This tile keeps 24 accumulators: 12 rows of C, each
// 32 floats (two registers) wide. Per step of k it loads two vectors of B, broadcasts 12
// scalars of A and issues 24 FMAs. 32 columns divide the model's widths (256, 768, 1024, 8192),
// so no tile is mostly padding.
#pragma once

#include "mla/backend/cpu/compiler.hpp"
#include "mla/backend/cpu/gemm_kernel.hpp"

#if defined(MLA_GEMM_X86)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "mla/backend/cpu/gemm_packed.hpp"

MLA_TARGET_BEGIN("avx512f,fma")

namespace mla::kernels::detail::avx512 {

using Vec = __m512;
using Mask = __mmask16;
inline constexpr int kLanes = 16;
inline constexpr std::int64_t kMR = 12;    // rows of a register tile: broadcasts of A
inline constexpr int kV = 2;               // vectors of B per row of a register tile: 32 columns
inline constexpr std::int64_t kPA = kMR;   // a panel of A: 12 floats per step of k (masked stores)
inline constexpr std::int64_t kKC = 384;   // steps of k per block: an A panel is 18 KiB (L1)
inline constexpr std::int64_t kNC = 1024;  // columns per B block: 384 x 1024 floats, 1.5 MiB (L2;
                                           // on a 1 MiB L2 it streams from L3: 512 ran no faster)

/// The first n lanes of a vector.
inline Mask lanes(std::int64_t n) { return static_cast<Mask>((1u << std::clamp<std::int64_t>(n, 0, 16)) - 1u); }

// Masked loads and stores. AddressSanitizer checks a masked access lane by lane, inline where
// it stands: the unrolled tiles grew to 145 KB of code each, and the kernel took 45 s to
// compile in every sanitized translation unit that multiplies floats. Under AddressSanitizer
// each access is one out-of-line function instead, checked the same way; otherwise both
// inline to one instruction.
#if defined(__SANITIZE_ADDRESS__)
#define MLA_MASKED_ACCESS [[gnu::noinline]]
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLA_MASKED_ACCESS [[gnu::noinline]]
#endif
#endif
#ifndef MLA_MASKED_ACCESS
#define MLA_MASKED_ACCESS
#endif
MLA_MASKED_ACCESS inline Vec load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
MLA_MASKED_ACCESS inline void store(float* p, Mask m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }
#undef MLA_MASKED_ACCESS

inline Vec load_aligned(const float* p) { return _mm512_load_ps(p); }
inline void store_aligned(float* p, Vec v) { _mm512_store_ps(p, v); }
inline void store_panel_step(float* p, Vec v) { _mm512_mask_storeu_ps(p, (1u << kMR) - 1u, v); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }

/// Transposes the 16x16 block in r (r[i] is row i) in place: 64 shuffles, four per row.
inline void transpose(Vec r[16]) {
  Vec t[16];
  for (int i = 0; i < 16; i += 2) {  // within each 128-bit lane: pairs of rows interleaved
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // lane j of r[i + m]: column 4j + m of rows i..i+3
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int m = 0; m < 4; ++m) {  // the four lanes of column 4j + m gathered from r[m], r[4 + m], ...
    t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
    t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
    t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
    t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xDD);
    r[4 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xDD);
  }
}

#include "mla/backend/cpu/gemm_tile.inl"

}  // namespace mla::kernels::detail::avx512

MLA_TARGET_END

#endif  // MLA_GEMM_X86
