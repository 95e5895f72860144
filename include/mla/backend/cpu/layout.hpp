// mla/backend/cpu/layout.hpp — layout kernels: copies of column blocks (split / concat along the
// last axis) and axis permutations. Forward and backward side by side.
//
// Legend: R rows (every axis but the last, flattened), C columns of the full tensor, n columns
// of one piece, ld leading dimension (row stride in elements). A permutation works on rank-4
// dims: a lower-rank tensor is padded with leading axes of size 1.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "mla/backend/cpu/device.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {

// ---- column blocks: split and concat -----------------------------------------------------

/// dst[r, 0:n] = src[r, 0:n] for r < R; rows `ld_src` / `ld_dst` elements apart.
template <class T>
void copy_columns(Cpu, const T* src /* (R, ld_src) */, std::int64_t ld_src,
                  T* dst /* (R, ld_dst) */, std::int64_t ld_dst, std::int64_t R, std::int64_t n) {
  if (n == 0) return;
  if (ld_src == n && ld_dst == n) {  // both contiguous: one block
    std::memcpy(dst, src, static_cast<std::size_t>(R * n) * sizeof(T));
    return;
  }
  detail::parallel_for(R, R * n > detail::kParallelGrain, [&](std::int64_t r) {
    std::memcpy(dst + r * ld_dst, src + r * ld_src, static_cast<std::size_t>(n) * sizeof(T));
  });
}

/// dst[r, 0:n] += src[r, 0:n]: the backward of copy_columns with the roles swapped.
template <class T>
void accumulate_columns(Cpu, const T* src /* (R, ld_src) */, std::int64_t ld_src,
                        T* dst /* (R, ld_dst) */, std::int64_t ld_dst, std::int64_t R,
                        std::int64_t n) {
  detail::parallel_for(R, R * n > detail::kParallelGrain, [&](std::int64_t r) {
    const T* s = src + r * ld_src;
    T* d = dst + r * ld_dst;
    for (std::int64_t c = 0; c < n; ++c) d[c] += s[c];
  });
}

// ---- permutations ------------------------------------------------------------------------

namespace detail {

/// dst = src with axes permuted: dst axis k is src axis perm[k] (dst dims = sd[perm[k]]);
/// with `Accumulate`, dst += instead of dst =.
template <bool Accumulate, class T>
void permute_apply(const T* src, const Dims4& sd, const Perm4& perm, T* dst) {
  const Dims4 ss = {sd[1] * sd[2] * sd[3], sd[2] * sd[3], sd[3], 1};  // src strides
  Dims4 od{}, s{};  // dst dims; src stride along each dst axis
  for (int k = 0; k < 4; ++k) {
    od[k] = sd[perm[k]];
    s[k] = ss[perm[k]];
  }
  const Dims4 ds = {od[1] * od[2] * od[3], od[2] * od[3], od[3], 1};  // dst strides
  const std::int64_t total = od[0] * od[1] * od[2] * od[3];

  if (perm[3] == 3) {
    // The last axis stays last: every dst row of od[3] elements is one contiguous src row
    // (for [B, T, H, Dh] -> [B, H, T, Dh], one head's Dh values). Threads split the two outer
    // dst axes; the third runs inside, so no index is divided per row.
    const std::int64_t n = od[3], outer = od[0] * od[1];
    parallel_for(outer, total > kParallelGrain, [&](std::int64_t r01) {
      const std::int64_t o0 = r01 / od[1], o1 = r01 % od[1];
      const T* sp = src + o0 * s[0] + o1 * s[1];
      T* dp = dst + r01 * od[2] * n;
      for (std::int64_t o2 = 0; o2 < od[2]; ++o2, sp += s[2], dp += n) {
        if constexpr (Accumulate) {
          for (std::int64_t j = 0; j < n; ++j) dp[j] += sp[j];
        } else {
          std::memcpy(dp, sp, static_cast<std::size_t>(n) * sizeof(T));
        }
      }
    });
    return;
  }

  // The last axis moves: a batch of 2-D transposes between dst axis 3 (contiguous in dst) and
  // dst axis q (contiguous in src), in kTile x kTile tiles staged through a local buffer
  // (16 KiB): each tile is read along src rows and written along dst rows, 256 contiguous
  // bytes at a time, so cache lines are used whole in one pass (no conflict misses at
  // power-of-two strides) and page translations are amortized. The other two axes a < b batch.
  constexpr std::int64_t kTile = 256 / sizeof(T);  // 256-byte rows: 64 floats, 32 doubles
  int q = 0;
  while (perm[q] != 3) ++q;
  int a = -1, b = -1;
  for (int k = 0; k < 3; ++k) {
    if (k == q) continue;
    (a < 0 ? a : b) = k;
  }
  const std::int64_t nq = od[q], n3 = od[3], s3 = s[3], dq = ds[q];
  const std::int64_t q_tiles = (nq + kTile - 1) / kTile;
  const std::int64_t tasks = od[a] * od[b] * q_tiles;
  parallel_for(tasks, total > kParallelGrain, [&](std::int64_t task) {
    const std::int64_t qt = task % q_tiles, ab = task / q_tiles;
    const std::int64_t ib = ab % od[b], ia = ab / od[b];
    const std::int64_t q0 = qt * kTile, nqt = std::min(kTile, nq - q0);
    const T* sb = src + ia * s[a] + ib * s[b] + q0;  // src stride along dst axis q is 1
    T* db = dst + ia * ds[a] + ib * ds[b] + q0 * dq;
    T tile[kTile][kTile];  // [j][iq]
    for (std::int64_t j0 = 0; j0 < n3; j0 += kTile) {
      const std::int64_t nj = std::min(kTile, n3 - j0);
      for (std::int64_t j = 0; j < nj; ++j) {  // read: contiguous along src rows
        const T* sp = sb + (j0 + j) * s3;
        for (std::int64_t iq = 0; iq < nqt; ++iq) tile[j][iq] = sp[iq];
      }
      for (std::int64_t iq = 0; iq < nqt; ++iq) {  // write: contiguous along dst rows
        T* dp = db + iq * dq + j0;
        for (std::int64_t j = 0; j < nj; ++j) {
          if constexpr (Accumulate) {
            dp[j] += tile[j][iq];
          } else {
            dp[j] = tile[j][iq];
          }
        }
      }
    }
  });
}

}  // namespace detail

/// out = x with axes permuted: out axis k is x axis perm[k]. x dims and perm are padded to rank 4.
template <class T>
void permute_forward(Cpu, const T* x, const Dims4& x_dims, const Perm4& perm, T* out) {
  detail::permute_apply<false>(x, x_dims, perm, out);
}

/// dx += dout permuted back (the inverse permutation; = with accumulate false): dout has the
/// permuted dims.
template <class T>
void permute_backward(Cpu, const T* dout, const Dims4& x_dims, const Perm4& perm, T* dx, bool accumulate = true) {
  Perm4 inverse{};
  Dims4 out_dims{};
  for (int k = 0; k < 4; ++k) {
    inverse[perm[k]] = k;
    out_dims[k] = x_dims[perm[k]];
  }
  if (accumulate) return detail::permute_apply<true>(dout, out_dims, inverse, dx);
  detail::permute_apply<false>(dout, out_dims, inverse, dx);
}

}  // namespace mla::kernels
