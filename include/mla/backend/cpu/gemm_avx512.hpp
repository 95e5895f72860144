// mla/backend/cpu/gemm_avx512.hpp — float GEMM for AVX-512: BLIS's loop nest around a 12x32
// register tile. gemm.hpp drives it, on all threads, for the large float products when the
// compiler targets AVX-512; otherwise (and for double) Eigen's GEBP kernels do the work.
//
// Why not Eigen's kernels here: Eigen 3.4 tiles AVX-512 float products 48x4 (12 of the 32
// vector registers accumulate) and ran the model's GEMMs at 70-90 GFLOP/s per core on these
// machines, where OpenBLAS reaches 95-110. This tile keeps 24 accumulators: 12 rows of C, each
// 32 floats (two registers) wide. Per step of k it loads two vectors of B, broadcasts 12
// scalars of A and issues 24 FMAs. 32 columns divide the model's widths (256, 768, 1024, 8192),
// so no tile is mostly padding.
//
// Loops (BLIS's, with A the broadcast operand and B the vector one):
//   for each block of at most kKC steps of k
//     pack B's block: panels of kNR columns, [k][kNR]     (all N columns, once, by all threads)
//     for each unit: rows x at most kNC columns of C     (taken by the threads as they free up)
//       pack the unit's rows of A: panels of kMR rows, [k][kMR]
//       for each panel of kMR rows of A                   (kMR x kc, stays in L1)
//         for each panel of kNR columns of B              (the unit's B block streams from L2)
//           tile of C (+)= A panel @ B panel
// Every element of C sums over k in blocks that depend on K only, in order, each block one
// FMA chain: the bits do not depend on the unit that computes it, nor on the thread count.
#pragma once

#if defined(__AVX512F__)
#define MLA_GEMM_AVX512 1

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace mla::kernels::detail::avx512 {

inline constexpr std::int64_t kMR = 12;   // rows of a register tile: broadcasts of A
inline constexpr int kV = 2;                // vectors of B per row of a register tile
inline constexpr std::int64_t kNR = 16 * kV;  // columns of a register tile: 32, which divides 256
inline constexpr std::int64_t kKC = 384;   // steps of k per block: an A panel is 18 KiB (L1)
inline constexpr std::int64_t kNC = 1024;  // columns per B block: 384 x 1024 floats, 1.5 MiB (L2;
                                           // on a 1 MiB L2 it streams from L3: 512 ran no faster)

/// A matrix operand: element (r, c) at data[r * row_stride + c * col_stride].
struct View {
  const float* data;
  std::int64_t row_stride, col_stride;
  [[nodiscard]] const float* at(std::int64_t r, std::int64_t c) const { return data + r * row_stride + c * col_stride; }
};

/// a / b rounded up (a >= 0, b > 0): how many blocks of b cover a.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// The K dimension cut into blocks of at most kKC steps, of equal size rounded up to 16.
inline std::int64_t k_block(std::int64_t K) {
  return std::min(K, ceil_div(ceil_div(K, ceil_div(K, kKC)), 16) * 16);
}

/// Transposes the 16x16 block in r (r[i] is row i) in place: 64 shuffles, four per row.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
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

/// The first n lanes of a vector.
inline __mmask16 lanes(std::int64_t n) {
  return static_cast<__mmask16>((1u << std::clamp<std::int64_t>(n, 0, 16)) - 1u);
}

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
MLA_MASKED_ACCESS inline __m512 load(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
MLA_MASKED_ACCESS inline void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
#undef MLA_MASKED_ACCESS

// Packing. An operand is stored with one of its strides 1 (gemm.hpp's views are never
// otherwise). Along the stored rows it is copied a vector at a time, in chunks of 16 steps of k
// so that each panel receives whole cache lines; across them, 16 stored rows are loaded side
// by side and transposed in registers, so each cache line is read once (the rows of the
// logits' gradient lie 32 KiB apart, all in one L1 set: a scalar gather re-read them from L2).

/// A[rows, kc] into panels of kMR rows, each [k][kMR]; rows past the edge are zero. With
/// `row_sums` (A^T stored only, as for a weight gradient), also row_sums[r] += A[r, k] for k
/// in order: one running sum per row.
inline void pack_a(View a, std::int64_t rows, std::int64_t kc, float* out, float* row_sums = nullptr) {
  static_assert(kMR <= 16, "a panel's step of k is one vector");
  constexpr __mmask16 kPanel = (1u << kMR) - 1u;
  if (a.row_stride == 1) {  // A^T stored: row k of the stored matrix holds every panel's step k
    for (std::int64_t k0 = 0; k0 < kc; k0 += 16) {
      const std::int64_t k1 = std::min(kc, k0 + 16);
      for (std::int64_t p = 0; p < rows; p += kMR) {
        const __mmask16 m = lanes(std::min(kMR, rows - p));
        float* dst = out + p * kc;
        __m512 sum = row_sums ? load(m, row_sums + p) : _mm512_setzero_ps();
        for (std::int64_t k = k0; k < k1; ++k) {
          const __m512 v = load(m, a.at(p, k));
          store(dst + k * kMR, kPanel, v);
          if (row_sums) sum = _mm512_add_ps(sum, v);
        }
        if (row_sums) store(row_sums + p, m, sum);
      }
    }
    return;
  }
  for (std::int64_t p = 0; p < rows; p += kMR, out += kMR * kc) {  // A stored [M, K]: rows transposed
    const std::int64_t n = std::min(kMR, rows - p);
    for (std::int64_t k = 0; k < kc; k += 16) {
      const __mmask16 m = lanes(kc - k);
      __m512 v[16];
      for (std::int64_t r = 0; r < 16; ++r) {
        v[r] = r < n ? load(m, a.at(p + r, k)) : _mm512_setzero_ps();
      }
      transpose16(v);
      for (std::int64_t i = 0; i < std::min<std::int64_t>(16, kc - k); ++i) {
        store(out + (k + i) * kMR, kPanel, v[i]);
      }
    }
  }
}

/// B[kc, cols] into panels of kNR columns, each [k][kNR]; columns past the edge are zero.
inline void pack_b(View b, std::int64_t kc, std::int64_t cols, float* out) {
  if (b.col_stride == 1) {  // B stored [K, N]: row k of B holds every panel's step k
    for (std::int64_t k0 = 0; k0 < kc; k0 += 16) {
      const std::int64_t k1 = std::min(kc, k0 + 16);
      for (std::int64_t p = 0; p < cols; p += kNR) {
        float* dst = out + p * kc;
        for (std::int64_t k = k0; k < k1; ++k) {
          for (int j = 0; j < kV; ++j) {
            const __m512 v = load(lanes(cols - p - 16 * j), b.at(k, p + 16 * j));
            _mm512_store_ps(dst + k * kNR + 16 * j, v);
          }
        }
      }
    }
    return;
  }
  for (std::int64_t p = 0; p < cols; p += kNR, out += kNR * kc) {  // B^T stored [N, K]: rows transposed
    for (std::int64_t k = 0; k < kc; k += 16) {
      const __mmask16 m = lanes(kc - k);
      for (int j = 0; j < kV; ++j) {
        const std::int64_t c0 = p + 16 * j, n = std::min<std::int64_t>(16, cols - c0);
        __m512 v[16];
        for (std::int64_t c = 0; c < 16; ++c) {
          v[c] = c < n ? load(m, b.at(k, c0 + c)) : _mm512_setzero_ps();
        }
        transpose16(v);
        for (std::int64_t i = 0; i < std::min<std::int64_t>(16, kc - k); ++i) {
          _mm512_store_ps(out + (k + i) * kNR + 16 * j, v[i]);
        }
      }
    }
  }
}

/// C[Rows, cols] (row stride ldc) = alpha * Ap @ Bp, plus C when `accumulate`, plus the row
/// `bias` when it is not null; cols <= kNR.
template <int Rows>
inline void tile(std::int64_t kc, const float* ap, const float* bp, float* c, std::int64_t ldc,
                 std::int64_t cols, float alpha, bool accumulate, const float* bias) {
  __m512 acc[Rows][kV];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < kV; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (std::int64_t k = 0; k < kc; ++k, ap += kMR, bp += kNR) {
    __m512 b[kV];
#pragma GCC unroll 4
    for (int j = 0; j < kV; ++j) b[j] = _mm512_load_ps(bp + 16 * j);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const __m512 a = _mm512_set1_ps(ap[r]);
#pragma GCC unroll 4
      for (int j = 0; j < kV; ++j) acc[r][j] = _mm512_fmadd_ps(a, b[j], acc[r][j]);
    }
  }
  __mmask16 m[kV];
  for (int j = 0; j < kV; ++j) m[j] = lanes(cols - 16 * j);
  const __m512 scale = _mm512_set1_ps(alpha);
  __m512 row[kV];
  for (int j = 0; j < kV; ++j) row[j] = bias ? load(m[j], bias + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int j = 0; j < kV; ++j) {
      __m512 v = alpha == 1.0f ? acc[r][j] : _mm512_mul_ps(acc[r][j], scale);
      if (accumulate) v = _mm512_add_ps(v, load(m[j], cr + 16 * j));
      if (bias) v = _mm512_add_ps(v, row[j]);
      store(cr + 16 * j, m[j], v);
    }
  }
}

template <int Rows = kMR>
inline void tile_rows(std::int64_t rows, std::int64_t kc, const float* ap, const float* bp, float* c,
                      std::int64_t ldc, std::int64_t cols, float alpha, bool accumulate, const float* bias) {
  if constexpr (Rows == 1) {
    tile<1>(kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
  } else {
    if (rows == Rows) return tile<Rows>(kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
    tile_rows<Rows - 1>(rows, kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
  }
}

/// How C [M, N] is cut into work units, each one thread's at a time: groups of whole row
/// panels (kMR rows) times chunks of whole column panels (kNR columns), at most kNC columns
/// each. Units are numbered chunk by chunk, so the threads work through one block of B (the
/// chunk's columns) before the next. A unit packs its rows of A for each block of k.
struct Schedule {
  std::int64_t group_rows, groups, chunk_cols, chunks;
  [[nodiscard]] std::int64_t units() const { return groups * chunks; }
};

/// About kUnitsPerThread units for each of `threads` threads, so that a thread slowed by its
/// neighbour on the VM takes fewer and no thread waits long at the end of a block of k; one
/// thread takes all rows (up to kMC) in one group. Few rows are made up for by more chunks.
inline constexpr std::int64_t kUnitsPerThread = 8;
inline constexpr std::int64_t kMC = 4096;  // at most this many rows in a group (its packed A: L3)
inline Schedule schedule(std::int64_t M, std::int64_t N, std::int64_t threads) {
  static_assert(kNC % kNR == 0, "a chunk of at most kNC columns is whole panels");
  const std::int64_t row_panels = ceil_div(M, kMR), col_panels = ceil_div(N, kNR);
  const std::int64_t wanted = threads == 1 ? 1 : kUnitsPerThread * threads;
  const std::int64_t group_panels = std::clamp(ceil_div(row_panels, wanted), std::int64_t{1}, kMC / kMR);
  const std::int64_t groups = ceil_div(row_panels, group_panels);
  // The units wanted, but no chunk wider than kNC and none narrower than a panel.
  const std::int64_t chunks_wanted = std::clamp(wanted / groups, ceil_div(col_panels, kNC / kNR), col_panels);
  const std::int64_t chunk_panels = ceil_div(col_panels, chunks_wanted);
  return {group_panels * kMR, groups, chunk_panels * kNR, ceil_div(col_panels, chunk_panels)};
}

/// Floats of packing space: B's panels for one block of k (all N columns, shared by the
/// threads) and one unit's rows of A.
inline std::int64_t packed_b_floats(std::int64_t N, std::int64_t K) { return k_block(K) * ceil_div(N, kNR) * kNR; }
inline std::int64_t packed_a_floats(std::int64_t group_rows, std::int64_t K) { return group_rows * k_block(K); }

/// What a product does besides C (+)= alpha * A @ B, in the same pass over its operands.
struct Extras {
  const float* bias = nullptr;  // [N]: added to every row of C once, with the first block of k
  float* a_row_sums = nullptr;  // [M]: += each row of A summed over k, in order (A^T stored only)
};

/// One unit for one block of k: packs A[rows, kc] into `pa` (adding to `row_sums` when not
/// null), then C[rows, cols] (row stride ldc) = alpha * A @ B + C, without "+ C" when not
/// `accumulate`, plus the row `bias` when not null. `pb` holds B[kc, cols] in panels, cols <=
/// kNC (L2). For each panel of kMR rows of A (kMR x kc, stays in L1), for each panel of kNR
/// columns of B (streams from L2): one register tile.
inline void unit_product(std::int64_t rows, std::int64_t cols, std::int64_t kc, float alpha, View a, const float* pb,
                         float* C, std::int64_t ldc, bool accumulate, const float* bias, float* row_sums, float* pa) {
  pack_a(a, rows, kc, pa, row_sums);
  for (std::int64_t i = 0; i < rows; i += kMR) {
    for (std::int64_t j = 0; j < cols; j += kNR) {
      tile_rows(std::min(kMR, rows - i), kc, pa + i * kc, pb + j * kc, C + i * ldc + j, ldc, std::min(kNR, cols - j),
                alpha, accumulate, bias ? bias + j : nullptr);
    }
  }
}

}  // namespace mla::kernels::detail::avx512

#endif  // __AVX512F__
