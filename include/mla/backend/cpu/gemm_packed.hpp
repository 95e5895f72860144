// mla/backend/cpu/gemm_packed.hpp — what the register-tile GEMM kernels (gemm_avx512.hpp,
// gemm_avx2.hpp) share whatever their ISA: strided views of the operands, the blocking of k,
// and how the units of C are cut for the threads. gemm.hpp's gemm_packed() drives them.
#pragma once

#include <algorithm>
#include <cstdint>

#include "mla/backend/cpu/compiler.hpp"

namespace mla::kernels::detail::packed {

/// A matrix operand: element (r, c) at data[r * row_stride + c * col_stride].
struct View {
  const float* data;
  std::int64_t row_stride, col_stride;
  [[nodiscard]] const float* at(std::int64_t r, std::int64_t c) const { return data + r * row_stride + c * col_stride; }
  /// The operand from element (r, c) on, with the same strides.
  [[nodiscard]] View from(std::int64_t r, std::int64_t c) const { return {at(r, c), row_stride, col_stride}; }
};

/// a / b rounded up (a >= 0, b > 0): how many blocks of b cover a.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// The K dimension cut into blocks of at most kc_max steps, of equal size rounded up to 16
/// (whole chunks of the packing's transposes).
inline std::int64_t k_block(std::int64_t K, std::int64_t kc_max) {
  return std::min(K, ceil_div(ceil_div(K, ceil_div(K, kc_max)), 16) * 16);
}

/// Slices of k a product is cut into, computed apart and summed in order afterwards: weight
/// gradients of few rows and columns over many steps of k (256 x 256 over 2048 tokens) leave
/// each block of k too little work for the threads to share without waiting for each other at
/// its barriers, where one thread per slice waits for nothing. A function of the shape alone, so
/// the bits do not depend on the thread count: 1 (no slices) unless C is at most 2^20 elements
/// and K at least 2048 and twice C's longer side, then one slice per 1024 steps of k, at most 4.
inline std::int64_t k_slices(std::int64_t M, std::int64_t N, std::int64_t K) {
  if (M * N > (std::int64_t{1} << 20) || K < 2048 || K < 2 * std::max(M, N)) return 1;
  return std::min<std::int64_t>(4, K / 1024);
}

/// What a product does besides C (+)= alpha * A @ B, in the same pass over its operands.
struct Extras {
  const float* bias = nullptr;  // [N]: added to every row of C once, with the first block of k
  float* a_row_sums = nullptr;  // [M]: += each row of A summed over k, in order (A^T stored only)
};

/// How C [M, N] is cut into work units, each one thread's at a time: groups of whole row
/// panels (mr rows) times chunks of whole column panels (nr columns), at most nc columns each.
/// Units are numbered chunk by chunk, so the threads work through one block of B (the chunk's
/// columns) before the next. A unit packs its rows of A for each block of k.
struct Schedule {
  std::int64_t group_rows, groups, chunk_cols, chunks;
  [[nodiscard]] std::int64_t units() const { return groups * chunks; }
};

/// About kUnitsPerThread units for each of `threads` threads, so that a thread slowed by its
/// neighbour on the VM takes fewer and no thread waits long at the end of a block of k; one
/// thread takes all rows (up to kMC) in one group. Every chunk of a group's columns packs the
/// group's rows of A again, so the units come from groups as far as the rows allow (a group
/// may be a single panel), and only few rows are made up for by more chunks.
inline constexpr std::int64_t kUnitsPerThread = 8;
inline constexpr std::int64_t kMC = 4096;  // at most this many rows in a group (its packed A: L3)
inline Schedule schedule(std::int64_t M, std::int64_t N, std::int64_t threads, std::int64_t mr, std::int64_t nr,
                         std::int64_t nc) {
  const std::int64_t row_panels = ceil_div(M, mr), col_panels = ceil_div(N, nr);
  const std::int64_t wanted = threads == 1 ? 1 : kUnitsPerThread * threads;
  std::int64_t group_panels = ceil_div(row_panels, wanted);
  if (ceil_div(row_panels, group_panels) < wanted) {  // e.g. 22 panels: 22 groups of one, not 11 of two
    group_panels = std::max<std::int64_t>(1, row_panels / wanted);
  }
  group_panels = std::min(group_panels, kMC / mr);
  const std::int64_t groups = ceil_div(row_panels, group_panels);
  // The units wanted (or more: rounded down, 11 groups of one chunk would leave one of two
  // threads idle for a twelfth of the time), but no chunk wider than nc and none narrower than
  // a panel.
  const std::int64_t chunks_wanted = std::clamp(ceil_div(wanted, groups), ceil_div(col_panels, nc / nr), col_panels);
  const std::int64_t chunk_panels = ceil_div(col_panels, chunks_wanted);
  return {group_panels * mr, groups, chunk_panels * nr, ceil_div(col_panels, chunk_panels)};
}

}  // namespace mla::kernels::detail::packed
