// mla/backend/cpu/gemm.hpp — GEMM on row-major buffers.
//
//   C[M, N] = alpha * op(A) @ op(B) + beta * C
//   op(A) = A [M, K] or, with Transpose::Yes, A^T where A is stored [K, M]
//   op(B) = B [K, N] or, with Transpose::Yes, B^T where B is stored [N, K]
//
// Large products, on all threads:
//   - float: the register-tile kernel gemm_kernel() names, chosen at run time from the CPU
//     (gemm_avx512.hpp's 12x32 tile, gemm_avx2.hpp's 6x16); for each block of k the threads
//     pack B once together, then take units of C as they free up; few rows and columns over
//     many steps of k (weight gradients) go in slices of k instead, a thread each;
//   - double, or float on GemmKernel::Eigen: the threads split C into disjoint slabs (rows, or
//     columns when C is wide), each computed on Eigen's packing and GEBP kernels called
//     directly, not through Eigen's driver, which heap-allocates its packing buffers on every
//     call (page faults on every step).
// Packing buffers belong to a thread and only grow, so a steady-state step allocates nothing.
// Every element of C sums over K in the same blocks whatever the thread that computes it, so
// the bits do not depend on the thread count.
// Float products of 1 to kFewRows rows against B^T (a decode step's Linear layers) are dot
// products of rows on the cached attention's score tiles (gemm_few_rows); other vectors and
// tiny products keep Eigen's expression path (GEMV, coefficient-based). Both cut N into bands
// that depend on the shape only (column_bands), so their bits do not depend on the thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "mla/backend/cpu/cached_kernels.hpp"
#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/elementwise.hpp"
#include "mla/backend/cpu/gemm_avx2.hpp"
#include "mla/backend/cpu/gemm_avx512.hpp"
#include "mla/backend/cpu/gemm_kernel.hpp"
#include "mla/backend/cpu/gemm_packed.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla {

namespace kernels {

template <class T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstRowMajorMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

namespace detail {

/// Eigen's blocking sizes with our buffers in place of its heap-allocated ones.
template <class T>
class Blocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  Blocking(Eigen::Index kc, Eigen::Index mc, Eigen::Index nc, T* a, T* b) {
    this->m_kc = kc;
    this->m_mc = mc;
    this->m_nc = nc;
    this->m_blockA = a;
    this->m_blockB = b;
  }
};

/// One operand as Eigen's kernels see it: a pointer, a storage order and a stride.
template <class T>
struct Operand {
  const T* data;
  bool row_major;
  std::int64_t stride;
  /// The operand from row `r` and column `c` on.
  [[nodiscard]] const T* at(std::int64_t r, std::int64_t c) const {
    return row_major ? data + r * stride + c : data + c * stride + r;
  }
};

template <class T, int LhsOrder, int RhsOrder>
void gebp_product(std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* lhs, std::int64_t lhs_stride,
                  const T* rhs, std::int64_t rhs_stride, T* C, std::int64_t ldc, Blocking<T>& blocking) {
  Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, LhsOrder, false, T, RhsOrder, false,
                                                 Eigen::RowMajor, 1>::run(M, N, K, lhs, lhs_stride, rhs, rhs_stride,
                                                                          C, 1, ldc, alpha, blocking, nullptr);
}

/// C[M, N] (row stride ldc) = beta * C (0: zero, whatever C held).
template <class T>
void scale_block(std::int64_t M, std::int64_t N, T beta, T* C, std::int64_t ldc) {
  if (beta == T(1)) return;
  for (std::int64_t r = 0; r < M; ++r) {
    T* c = C + r * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));
    } else {
      for (std::int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

/// C[M, N] (row stride ldc) = alpha * a[M, K] @ b[K, N] + beta * C on this thread.
template <class T>
void gebp_slab(std::int64_t M, std::int64_t N, std::int64_t K, T alpha, Operand<T> a, Operand<T> b, T beta, T* C,
               std::int64_t ldc, Eigen::Index kc, Eigen::Index mc, Eigen::Index nc) {
  if (M <= 0 || N <= 0) return;
  scale_block(M, N, beta, C, ldc);  // by the thread that then adds into it, while it is in cache
  Blocking<T> blocking(kc, mc, nc, thread_scratch<T, ScratchSlot::GemmA>(kc * mc),
                       thread_scratch<T, ScratchSlot::GemmB>(kc * nc));
  constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
  if (a.row_major && b.row_major) gebp_product<T, R, R>(M, N, K, alpha, a.data, a.stride, b.data, b.stride, C, ldc, blocking);
  if (a.row_major && !b.row_major) gebp_product<T, R, Cm>(M, N, K, alpha, a.data, a.stride, b.data, b.stride, C, ldc, blocking);
  if (!a.row_major && b.row_major) gebp_product<T, Cm, R>(M, N, K, alpha, a.data, a.stride, b.data, b.stride, C, ldc, blocking);
  if (!a.row_major && !b.row_major) gebp_product<T, Cm, Cm>(M, N, K, alpha, a.data, a.stride, b.data, b.stride, C, ldc, blocking);
}

/// Below this many multiply-adds, or with a side this short, Eigen's expression path is as good.
inline constexpr std::int64_t kGebpMinWork = 1 << 16;
inline constexpr std::int64_t kGebpMinSide = 8;
/// Whether a product takes the blocked drivers (else Eigen's expression path).
inline bool blocked(std::int64_t M, std::int64_t N, std::int64_t K) {
  return M * N * K >= kGebpMinWork && std::min({M, N, K}) >= kGebpMinSide;
}

/// Whether a product is worth the threads: enough multiply-adds, and a region here would fork.
inline bool threaded(std::int64_t M, std::int64_t N, std::int64_t K) {
  return M * N * K > kParallelGrain * 8 && can_fork();
}

/// The product split across threads: rows of C when C is taller than wide, else columns, at
/// multiples of the register tile (rows x cols); slab(lo, hi, split_rows) computes one part.
template <class Slab>
void for_each_slab(std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t tile_rows, std::int64_t tile_cols,
                   Slab&& slab) {
  const bool split_rows = M >= N;
  const std::int64_t extent = split_rows ? M : N, grain = split_rows ? tile_rows : tile_cols;
  const std::int64_t parts = threaded(M, N, K) ? num_threads() : 1;
  parallel_for(parts, parts > 1, [&](std::int64_t part) {
    const std::int64_t units = (extent + grain - 1) / grain;
    const std::int64_t lo = std::min(extent, units * part / parts * grain);
    const std::int64_t hi = std::min(extent, units * (part + 1) / parts * grain);
    if (lo < hi) slab(lo, hi, split_rows);
  });
}

#if defined(MLA_GEMM_X86)
/// C[M, N] (row stride N) = alpha * a @ b + beta * C (with `extras`) on a register-tile kernel
/// (gemm_tile.inl's Kernel for one ISA), on all threads when `threads_allowed` and the product
/// is worth them. For each block of k the threads pack B's panels together, once, into this
/// thread's buffer, then take the units of C (packed::Schedule) one at a time from a shared
/// counter: a thread slowed by its neighbour on the VM takes fewer units rather than making the
/// other wait for its half.
template <class Kernel>
void gemm_views(packed::View a, packed::View b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                float beta, float* C, packed::Extras extras, bool threads_allowed) {
  const bool parallel = threads_allowed && threaded(M, N, K);
  const packed::Schedule plan =
      packed::schedule(M, N, parallel ? num_threads() : 1, Kernel::kTileRows, Kernel::kTileCols, Kernel::kChunkCols);
  float* pb = thread_scratch<float, ScratchSlot::GemmB>(Kernel::packed_b_floats(N, K));
  const std::int64_t kc_max = Kernel::k_block(K), col_panels = packed::ceil_div(N, Kernel::kTileCols);
  std::atomic<std::int64_t> next_unit[2] = {0, 0};  // one per block of k, alternating
  parallel_team(parallel, [&](std::int64_t thread, std::int64_t threads) {
    float* pa = thread_scratch<float, ScratchSlot::GemmA>(Kernel::packed_a_floats(plan.group_rows, K));
    for (std::int64_t k0 = 0, block = 0; k0 < K; k0 += kc_max, ++block) {
      const std::int64_t kc = std::min(kc_max, K - k0);
      const std::int64_t p0 = col_panels * thread / threads, p1 = col_panels * (thread + 1) / threads;
      const std::int64_t c0 = p0 * Kernel::kTileCols, c1 = std::min(N, p1 * Kernel::kTileCols);
      if (c0 < c1) Kernel::pack_b(b.from(k0, c0), kc, c1 - c0, pb + c0 * kc);
      team_barrier(threads);  // B's block is packed; every thread is past the previous block
      std::atomic<std::int64_t>& next = next_unit[block % 2];
      if (thread == 0) next_unit[(block + 1) % 2].store(0, std::memory_order_relaxed);
      for (std::int64_t unit = next.fetch_add(1); unit < plan.units(); unit = next.fetch_add(1)) {
        const std::int64_t group = unit % plan.groups, chunk = unit / plan.groups;
        const std::int64_t r0 = group * plan.group_rows, rows = std::min(plan.group_rows, M - r0);
        const std::int64_t j0 = chunk * plan.chunk_cols, cols = std::min(plan.chunk_cols, N - j0);
        float* c = C + r0 * N + j0;
        if (k0 == 0 && beta != 0.0f) scale_block(rows, cols, beta, c, N);
        // The first chunk of a group's columns sums its rows of A.
        float* row_sums = extras.a_row_sums && chunk == 0 ? extras.a_row_sums + r0 : nullptr;
        const float* bias = k0 == 0 && extras.bias ? extras.bias + j0 : nullptr;
        Kernel::unit_product(rows, cols, kc, alpha, a.from(r0, k0), pb + j0 * kc, c,
                             N, !(beta == 0.0f && k0 == 0), bias, row_sums, pa);
      }
      if (k0 + kc < K) team_barrier(threads);  // all units done before B's next block overwrites this one
    }
  });
}

/// The float product on a register-tile kernel: gemm_views, or for few rows and columns over
/// many steps of k (packed::k_slices, without extras) S slices of k: slice s computes
/// alpha * op(A)[:, ks] @ op(B)[ks, :] over k in [K s / S, K (s + 1) / S), the first with beta
/// into C, the others into buffers, then C += C_1 + C_2 ... in order, element by element. The
/// slices run one per thread, or one after another on all threads where there are at least
/// twice as many threads as slices; a slice's bits are the same either way.
template <class Kernel>
void gemm_packed(Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* A, const float* B, float beta, float* C, packed::Extras extras = {}) {
  using packed::View;
  // op(A)(m, k) and op(B)(k, n) as strided views of the stored matrices.
  const View a = ta == Transpose::No ? View{A, K, 1} : View{A, 1, M};
  const View b = tb == Transpose::No ? View{B, N, 1} : View{B, 1, K};
  if (extras.a_row_sums && ta == Transpose::No) {
    throw std::logic_error("gemm_packed: row sums need A^T stored");
  }
  const std::int64_t slices = packed::k_slices(M, N, K);
  if (slices == 1 || extras.bias || extras.a_row_sums) return gemm_views<Kernel>(a, b, M, N, K, alpha, beta, C, extras, true);
  float* parts = thread_scratch<float, ScratchSlot::GemmSlices>((slices - 1) * M * N);
  const bool teams = num_threads() >= 2 * slices;
  auto slice = [&](std::int64_t s) {
    const std::int64_t k0 = K * s / slices, k1 = K * (s + 1) / slices;
    gemm_views<Kernel>(a.from(0, k0), b.from(k0, 0), M, N, k1 - k0, alpha, s == 0 ? beta : 0.0f,
                       s == 0 ? C : parts + (s - 1) * M * N, {}, teams);
  };
  if (teams) {
    for (std::int64_t s = 0; s < slices; ++s) slice(s);
  } else {
    parallel_for(slices, can_fork(), slice);
  }
  for (std::int64_t s = 1; s < slices; ++s) kernels::accumulate(Cpu{}, parts + (s - 1) * M * N, C, M * N);
}
#endif

/// The float product on `kernel`, with `extras` in the same pass; false (nothing done) when
/// `kernel` is Eigen's, which has no such pass.
inline bool gemm_register_tiles(GemmKernel kernel, Transpose ta, Transpose tb, std::int64_t M, std::int64_t N,
                                std::int64_t K, float alpha, const float* A, const float* B, float beta, float* C,
                                packed::Extras extras = {}) {
  switch (kernel) {
#if defined(MLA_GEMM_X86)
    case GemmKernel::Avx512:
      gemm_packed<avx512::Kernel>(ta, tb, M, N, K, alpha, A, B, beta, C, extras);
      return true;
    case GemmKernel::Avx2:
      gemm_packed<avx2::Kernel>(ta, tb, M, N, K, alpha, A, B, beta, C, extras);
      return true;
#endif
    default: return false;
  }
}

/// Rows of A at most this many take gemm_few_rows (a decode step of up to this many sequences).
inline constexpr std::int64_t kFewRows = 8;

/// The bands of at least 64 columns a product of few rows is cut into, for the threads to take:
/// a function of the shape alone, never of the thread count, because Eigen's products (which
/// compute the bands of gemm()'s expression path) sum an element in an order that depends on
/// where it falls in its band's width.
inline constexpr std::int64_t kColumnBands = 16;
inline std::int64_t column_bands(std::int64_t M, std::int64_t N, std::int64_t K) {
  return M * N * K >= kParallelGrain * 4 && N >= 128 ? std::min<std::int64_t>(kColumnBands, N / 64) : 1;
}
/// Columns [first, second) of band `band` of `bands`: edges at multiples of 16, the last band to N.
inline std::pair<std::int64_t, std::int64_t> band_columns(std::int64_t N, std::int64_t bands, std::int64_t band) {
  return {N * band / bands / 16 * 16, band + 1 == bands ? N : N * (band + 1) / bands / 16 * 16};
}

/// C[M, N] = alpha * A @ B^T + beta * C, plus the row `bias` when not null, for 1 to kFewRows
/// rows of A [M, K] against B stored [N, K] (a decode step's Linear layers: B is the weight):
/// each element one dot product straight from the two rows, on the cached attention's score
/// tiles (cached_tile.inl), the threads taking bands of N. The register-tile GEMM would pack
/// all of B for the few rows that use it, which cost more than the products (perf, MLA decode
/// at batch 8, 512 tokens: packing 30% of the step, the tiles 17%); for one row they are a few
/// percent faster than Eigen's GEMV, reading sixteen weight rows at once. The bands, and so the
/// order each element sums in, depend on the shape alone, never on the thread count. False
/// (nothing done) for other shapes, for double, and on the Eigen kernels.
template <class T>
bool gemm_few_rows(Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A,
                   const T* B, T beta, T* C, const T* bias = nullptr) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (ta != Transpose::No || tb != Transpose::Yes || M < 1 || M > kFewRows || K == 0 ||
        gemm_kernel() == GemmKernel::Eigen) {
      return false;
    }
    const std::int64_t bands = column_bands(M, N, K);
    parallel_for(bands, bands > 1, [&](std::int64_t band) {
      const auto [n0, n1] = band_columns(N, bands, band);
      const std::int64_t n = n1 - n0;
      // The dot products go straight to C when nothing is added to them.
      const bool direct = beta == 0.0f && !bias;
      float* dots = direct ? C + n0 : thread_scratch<float, ScratchSlot::GemmDots>(M * n);
      const std::int64_t ldd = direct ? N : n;
      const Keys<WideRows<float>> rows{WideRows<float>{B + n0 * K, K}, K};
      with_tiles<float>(K, [&]<class Tiles>(Tiles) {
        for_row_tiles<Tiles::kScoreRows>(M, [&]<int Rt>(std::integral_constant<int, Rt>, std::int64_t r) {
          Tiles::template scores<Rt>(A + r * K, K, rows, n, alpha, dots + r * ldd, ldd);
        });
      });
      if (direct) return;
      for (std::int64_t r = 0; r < M; ++r) {
        float* c = C + r * N + n0;
        const float* d = dots + r * n;
        for (std::int64_t j = 0; j < n; ++j) {
          float v = d[j];
          if (beta != 0.0f) v += beta * c[j];
          if (bias) v += bias[n0 + j];
          c[j] = v;
        }
      }
    });
    return true;
  }
}

/// The product on Eigen's packing and GEBP kernels, one slab per thread.
template <class T>
void gemm_eigen_blocked(Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
                        const T* A, const T* B, T beta, T* C) {
  Operand<T> a{A, ta == Transpose::No, ta == Transpose::No ? K : M};
  Operand<T> b{B, tb == Transpose::No, tb == Transpose::No ? N : K};
  // Eigen's blocking for the whole product (its RowMajor driver swaps the roles of M and N);
  // every slab uses it, so each element of C sums over K in the same blocks.
  Eigen::Index kc = K, mc = N, nc = M;
  Eigen::internal::computeProductBlockingSizes<T, T, 1>(kc, mc, nc, Eigen::Index{1});
  // Slab edges at multiples of Eigen's register tile (8 rows of C, 48 columns).
  for_each_slab(M, N, K, 8, 48, [&](std::int64_t lo, std::int64_t hi, bool split_rows) {
    if (split_rows) {
      gebp_slab(hi - lo, N, K, alpha, Operand<T>{a.at(lo, 0), a.row_major, a.stride}, b, beta, C + lo * N, N, kc, mc,
                nc);
    } else {
      gebp_slab(M, hi - lo, K, alpha, a, Operand<T>{b.at(0, lo), b.row_major, b.stride}, beta, C + lo, N, kc, mc, nc);
    }
  });
}

template <class T>
void gemm_blocked(Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
                  const T* A, const T* B, T beta, T* C) {
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_register_tiles(gemm_kernel(), ta, tb, M, N, K, alpha, A, B, beta, C)) return;
  }
  gemm_eigen_blocked(ta, tb, M, N, K, alpha, A, B, beta, C);
}

/// C[M, N] += alpha * op(A) @ op(B) through Eigen's expressions (GEMV for a single row,
/// coefficient-based products when tiny), for a band of N columns of a product `ld` wide: the
/// row stride of C and, when not transposed, of B.
template <class T>
void eigen_product(Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A,
                   const T* B, std::int64_t ld, T* C) {
  using Strided = Eigen::OuterStride<>;
  using ConstStridedMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Strided>;
  const bool a_t = ta == Transpose::Yes, b_t = tb == Transpose::Yes;
  ConstRowMajorMap<T> a(A, a_t ? K : M, a_t ? M : K);
  ConstStridedMap b(B, b_t ? N : K, b_t ? K : N, Strided(b_t ? K : ld));
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Strided> c(C, M, N, Strided(ld));
  // alpha = 1 spelled out: Eigen's coefficient-based product copies `alpha * a` to the heap.
  const auto add = [&](const auto& x, const auto& y) {
    if (alpha == T(1)) {
      c.noalias() += x * y;
    } else {
      c.noalias() += alpha * (x * y);
    }
  };
  if (!a_t && !b_t) add(a, b);
  if (!a_t && b_t) add(a, b.transpose());
  if (a_t && !b_t) add(a.transpose(), b);
  if (a_t && b_t) add(a.transpose(), b.transpose());
}

}  // namespace detail

template <class T>
void gemm(Cpu, Transpose ta, Transpose tb, std::int64_t M, std::int64_t N, std::int64_t K,
          T alpha, const T* A, const T* B, T beta, T* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) return detail::scale_block(M, N, beta, C, N);
  if (detail::gemm_few_rows(ta, tb, M, N, K, alpha, A, B, beta, C)) return;
  if (detail::blocked(M, N, K)) {
    return detail::gemm_blocked(ta, tb, M, N, K, alpha, A, B, beta, C);
  }
  // Few rows otherwise: a GEMV or a thin product, bound by streaming B from memory. The threads
  // take bands of C's columns, so each reads its own part of B once.
  const std::int64_t bands = detail::column_bands(M, N, K);
  detail::parallel_for(bands, bands > 1, [&](std::int64_t band) {
    const auto [n0, n1] = detail::band_columns(N, bands, band);
    detail::scale_block(M, n1 - n0, beta, C + n0, N);
    detail::eigen_product(ta, tb, M, n1 - n0, K, alpha, A, tb == Transpose::Yes ? B + n0 * K : B + n0, N, C + n0);
  });
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
  detail::parallel_for(batch, batch * M * N * K > detail::kParallelGrain, [&](std::int64_t i) {
    gemm(cpu, ta, tb, M, N, K, alpha, A + i * stride_a, B + i * stride_b, beta, C + i * stride_c);
  });
}

}  // namespace kernels
}  // namespace mla
