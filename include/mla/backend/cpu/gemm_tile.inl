// mla/backend/cpu/gemm_tile.inl — the register-tile GEMM kernel, written once for every ISA.
// gemm_avx512.hpp and gemm_avx2.hpp each include it inside their own namespace and target
// region (so the compiler emits it for that ISA whatever -march says), after defining:
//
//   Vec, Mask, kLanes       a vector register of kLanes floats, and a mask of its lanes
//   kMR, kV, kKC, kNC, kPA  the tile (kMR rows x kV vectors: kNR columns), the blocking of k
//                           and of B's columns, the floats per step of k in a panel of A
//   lanes(n), load(m, p), store(p, m, v), load_aligned(p), store_aligned(p, v), zero(),
//   broadcast(p), set1(x), fmadd(a, b, c), add(a, b), mul(a, b), store_panel_step(p, v),
//   transpose(Vec r[kLanes])  (r[i] is row i; afterwards r[i] is column i)
//
// Loops (BLIS's, with A the broadcast operand and B the vector one):
//   for each block of at most kKC steps of k
//     pack B's block: panels of kNR columns, [k][kNR]  (all N columns, once, by all threads)
//     for each unit: rows x at most kNC columns of C   (taken by the threads as they free up)
//       pack the unit's rows of A: panels of kMR rows, [k][kPA]
//       for each panel of kMR rows of A                 (kMR x kc, stays in L1)
//         for each panel of kNR columns of B            (the unit's B block streams from L2)
//           tile of C (+)= A panel @ B panel
// Every element of C sums over k in blocks that depend on K only, in order, each block one
// FMA chain: the bits do not depend on the unit that computes it, nor on the thread count.
//
// No include guard: it is meant to be included once per ISA.

struct Kernel {
  using View = packed::View;
  static constexpr std::int64_t kNR = kLanes * kV;  // columns of a register tile (of kMR rows)
  static constexpr std::int64_t kTileRows = kMR, kTileCols = kNR, kChunkCols = kNC;  // for the driver
  static constexpr std::int64_t kPrefetchSteps = 8;  // of k, ahead in B's panel

  static std::int64_t k_block(std::int64_t K) { return packed::k_block(K, kKC); }

  /// Floats of packing space: B's panels for one block of k (all N columns, shared by the
  /// threads) and one unit's rows of A.
  static std::int64_t packed_b_floats(std::int64_t N, std::int64_t K) {
    return k_block(K) * packed::ceil_div(N, kNR) * kNR;
  }
  static std::int64_t packed_a_floats(std::int64_t group_rows, std::int64_t K) {
    return packed::ceil_div(group_rows, kMR) * kPA * k_block(K);
  }

  // Packing. An operand is stored with one of its strides 1 (gemm.hpp's views are never
  // otherwise). Along the stored rows it is copied a vector at a time, in chunks of 16 steps of k
  // so that each panel receives whole cache lines; across them, kLanes stored rows are loaded
  // side by side and transposed in registers, so each cache line is read once (the rows of the
  // logits' gradient lie 32 KiB apart, all in one L1 set: a scalar gather re-read them from L2).

  /// A[rows, kc] into panels of kMR rows, each [k][kPA]; rows past the edge are zero. With
  /// `row_sums` (A^T stored only, as for a weight gradient), also row_sums[r] += A[r, k] for k
  /// in order: one running sum per row.
  static void pack_a(View a, std::int64_t rows, std::int64_t kc, float* out, float* row_sums = nullptr) {
    static_assert(kMR <= kLanes && kMR <= kPA && kPA <= kLanes, "a panel's step of k is one vector");
    if (a.row_stride == 1) {  // A^T stored: row k of the stored matrix holds every panel's step k
      for (std::int64_t k0 = 0; k0 < kc; k0 += 16) {
        const std::int64_t k1 = std::min(kc, k0 + 16);
        for (std::int64_t p = 0; p < rows; p += kMR) {
          const Mask m = lanes(std::min(kMR, rows - p));
          float* dst = out + p / kMR * kPA * kc;
          Vec sum = row_sums ? load(m, row_sums + p) : zero();
          for (std::int64_t k = k0; k < k1; ++k) {
            const Vec v = load(m, a.at(p, k));
            store_panel_step(dst + k * kPA, v);
            if (row_sums) sum = add(sum, v);
          }
          if (row_sums) store(row_sums + p, m, sum);
        }
      }
      return;
    }
    for (std::int64_t p = 0; p < rows; p += kMR, out += kPA * kc) {  // A stored [M, K]: rows transposed
      const std::int64_t n = std::min(kMR, rows - p);
      for (std::int64_t k = 0; k < kc; k += kLanes) {
        const Mask m = lanes(kc - k);
        Vec v[kLanes];
        for (std::int64_t r = 0; r < kLanes; ++r) {
          v[r] = r < n ? load(m, a.at(p + r, k)) : zero();
        }
        transpose(v);
        for (std::int64_t i = 0; i < std::min<std::int64_t>(kLanes, kc - k); ++i) {
          store_panel_step(out + (k + i) * kPA, v[i]);
        }
      }
    }
  }

  /// B[kc, cols] into panels of kNR columns, each [k][kNR]; columns past the edge are zero.
  static void pack_b(View b, std::int64_t kc, std::int64_t cols, float* out) {
    if (b.col_stride == 1) {  // B stored [K, N]: row k of B holds every panel's step k
      for (std::int64_t k0 = 0; k0 < kc; k0 += 16) {
        const std::int64_t k1 = std::min(kc, k0 + 16);
        for (std::int64_t p = 0; p < cols; p += kNR) {
          float* dst = out + p * kc;
          for (std::int64_t k = k0; k < k1; ++k) {
            for (int j = 0; j < kV; ++j) {
              store_aligned(dst + k * kNR + kLanes * j, load(lanes(cols - p - kLanes * j), b.at(k, p + kLanes * j)));
            }
          }
        }
      }
      return;
    }
    for (std::int64_t p = 0; p < cols; p += kNR, out += kNR * kc) {  // B^T stored [N, K]: rows transposed
      for (std::int64_t k = 0; k < kc; k += kLanes) {
        const Mask m = lanes(kc - k);
        for (int j = 0; j < kV; ++j) {
          const std::int64_t c0 = p + kLanes * j, n = std::min<std::int64_t>(kLanes, cols - c0);
          Vec v[kLanes];
          for (std::int64_t c = 0; c < kLanes; ++c) {
            v[c] = c < n ? load(m, b.at(k, c0 + c)) : zero();
          }
          transpose(v);
          for (std::int64_t i = 0; i < std::min<std::int64_t>(kLanes, kc - k); ++i) {
            store_aligned(out + (k + i) * kNR + kLanes * j, v[i]);
          }
        }
      }
    }
  }

  /// C[Rows, cols] (row stride ldc) = alpha * Ap @ Bp, plus C when `accumulate`, plus the row
  /// `bias` when it is not null; cols <= kNR.
  template <int Rows>
  static void tile(std::int64_t kc, const float* ap, const float* bp, float* c, std::int64_t ldc,
                   std::int64_t cols, float alpha, bool accumulate, const float* bias) {
    Vec acc[Rows][kV];
    MLA_UNROLL(16)
    for (int r = 0; r < Rows; ++r) {
      MLA_UNROLL(4)
      for (int j = 0; j < kV; ++j) acc[r][j] = zero();
    }
    // C's rows are read (or written) only after the loop over k: asked for now, they arrive
    // from L3 or memory meanwhile instead of stalling the end of every tile.
    MLA_UNROLL(16)
    for (int r = 0; r < Rows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + cols - 1), _MM_HINT_T0);
    }
    for (std::int64_t k = 0; k < kc; ++k, ap += kPA, bp += kNR) {
      // B's panel streams from L2: its lines kPrefetchSteps steps ahead are asked for now.
      MLA_UNROLL(4)
      for (std::int64_t line = 0; line < kNR * 4; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetchSteps * kNR) + line, _MM_HINT_T0);
      }
      Vec b[kV];
      MLA_UNROLL(4)
      for (int j = 0; j < kV; ++j) b[j] = load_aligned(bp + kLanes * j);
      MLA_UNROLL(16)
      for (int r = 0; r < Rows; ++r) {
        const Vec a = broadcast(ap + r);
        MLA_UNROLL(4)
        for (int j = 0; j < kV; ++j) acc[r][j] = fmadd(a, b[j], acc[r][j]);
      }
    }
    Mask m[kV];
    for (int j = 0; j < kV; ++j) m[j] = lanes(cols - kLanes * j);
    const Vec scale = set1(alpha);
    Vec row[kV];
    for (int j = 0; j < kV; ++j) row[j] = bias ? load(m[j], bias + kLanes * j) : zero();
    MLA_UNROLL(16)
    for (int r = 0; r < Rows; ++r) {
      float* cr = c + r * ldc;
      MLA_UNROLL(4)
      for (int j = 0; j < kV; ++j) {
        Vec v = alpha == 1.0f ? acc[r][j] : mul(acc[r][j], scale);
        if (accumulate) v = add(v, load(m[j], cr + kLanes * j));
        if (bias) v = add(v, row[j]);
        store(cr + kLanes * j, m[j], v);
      }
    }
  }

  template <int Rows = kMR>
  static void tile_rows(std::int64_t rows, std::int64_t kc, const float* ap, const float* bp, float* c,
                        std::int64_t ldc, std::int64_t cols, float alpha, bool accumulate, const float* bias) {
    if constexpr (Rows == 1) {
      tile<1>(kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
    } else {
      if (rows == Rows) return tile<Rows>(kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
      tile_rows<Rows - 1>(rows, kc, ap, bp, c, ldc, cols, alpha, accumulate, bias);
    }
  }

  /// One unit for one block of k: packs A[rows, kc] into `pa` (adding to `row_sums` when not
  /// null), then C[rows, cols] (row stride ldc) = alpha * A @ B + C, without "+ C" when not
  /// `accumulate`, plus the row `bias` when not null. `pb` holds B[kc, cols] in panels, cols <=
  /// kNC (L2). For each panel of kMR rows of A (kMR x kc, stays in L1), for each panel of kNR
  /// columns of B (streams from L2): one register tile.
  static void unit_product(std::int64_t rows, std::int64_t cols, std::int64_t kc, float alpha, View a, const float* pb,
                           float* C, std::int64_t ldc, bool accumulate, const float* bias, float* row_sums, float* pa) {
    pack_a(a, rows, kc, pa, row_sums);
    for (std::int64_t i = 0; i < rows; i += kMR) {
      for (std::int64_t j = 0; j < cols; j += kNR) {
        tile_rows(std::min(kMR, rows - i), kc, pa + i / kMR * kPA * kc, pb + j * kc, C + i * ldc + j, ldc,
                  std::min(kNR, cols - j), alpha, accumulate, bias ? bias + j : nullptr);
      }
    }
  }
};
