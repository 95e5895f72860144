// mla/backend/cuda/layout.hpp — layout kernels on the Thrust/CUDA device: copies of column
// blocks (split / concat along the last axis) and axis permutations, with the CPU backend's
// semantics (mla/backend/cpu/layout.hpp). Forward and backward side by side.
//
// Legend: R rows (every axis but the last, flattened), C columns of the full tensor, n columns
// of one piece, ld leading dimension (row stride in elements). A permutation works on rank-4
// dims: a lower-rank tensor is padded with leading axes of size 1.
//
// One work item per destination element: consecutive items write consecutive elements.
#pragma once

#include <cstdint>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/types.hpp"

namespace mla::kernels {
namespace cuda_detail {

/// dst[r, c] (+)= src[r, c] for item i = r * n + c.
template <class T>
struct CopyColumns {
  const T* src;  // (R, ld_src)
  std::int64_t ld_src;
  T* dst;  // (R, ld_dst)
  std::int64_t ld_dst, n;
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / n, c = i % n;
    if (accumulate) {
      dst[r * ld_dst + c] += src[r * ld_src + c];
    } else {
      dst[r * ld_dst + c] = src[r * ld_src + c];
    }
  }
};

/// dst[i] (+)= src[offset of i's index]: dst dims od, src stride s[k] along dst axis k.
template <class T>
struct Permute {
  const T* src;
  T* dst;
  std::int64_t od[4];  // dst dims
  std::int64_t s[4];   // src stride along each dst axis
  bool accumulate;
  MLA_HD void operator()(std::int64_t i) const {
    std::int64_t rest = i, offset = 0;
    for (int k = 3; k >= 0; --k) {
      offset += (rest % od[k]) * s[k];
      rest /= od[k];
    }
    if (accumulate) {
      dst[i] += src[offset];
    } else {
      dst[i] = src[offset];
    }
  }
};

/// dst (+)= src with axes permuted: dst axis k is src axis perm[k] (dst dims = sd[perm[k]]).
template <class T>
void permute_apply(const char* what, const T* src, const Dims4& sd, const Perm4& perm, T* dst,
                   bool accumulate) {
  const std::int64_t ss[4] = {sd[1] * sd[2] * sd[3], sd[2] * sd[3], sd[3], 1};  // src strides
  Permute<T> f{src, dst, {}, {}, accumulate};
  for (int k = 0; k < 4; ++k) {
    f.od[k] = sd[perm[k]];
    f.s[k] = ss[perm[k]];
  }
  for_each_index(what, f.od[0] * f.od[1] * f.od[2] * f.od[3], f);
}

}  // namespace cuda_detail

// ---- column blocks: split and concat -----------------------------------------------------

/// dst[r, 0:n] = src[r, 0:n] for r < R; rows `ld_src` / `ld_dst` elements apart.
template <class T>
void copy_columns(Cuda, const T* src /* (R, ld_src) */, std::int64_t ld_src,
                  T* dst /* (R, ld_dst) */, std::int64_t ld_dst, std::int64_t R, std::int64_t n) {
  if (n == 0 || R == 0) return;
  if (ld_src == n && ld_dst == n) {  // both contiguous: one block copy
    Cuda::copy(dst, src, static_cast<std::size_t>(R * n) * sizeof(T));
    return;
  }
  cuda_detail::for_each_index("copy_columns", R * n,
                              cuda_detail::CopyColumns<T>{src, ld_src, dst, ld_dst, n, false});
}

/// dst[r, 0:n] += src[r, 0:n]: the backward of copy_columns with the roles swapped.
template <class T>
void accumulate_columns(Cuda, const T* src /* (R, ld_src) */, std::int64_t ld_src,
                        T* dst /* (R, ld_dst) */, std::int64_t ld_dst, std::int64_t R,
                        std::int64_t n) {
  if (n == 0) return;
  cuda_detail::for_each_index("accumulate_columns", R * n,
                              cuda_detail::CopyColumns<T>{src, ld_src, dst, ld_dst, n, true});
}

// ---- permutations ------------------------------------------------------------------------

/// out = x with axes permuted: out axis k is x axis perm[k]. x dims and perm are padded to rank 4.
template <class T>
void permute_forward(Cuda, const T* x, const Dims4& x_dims, const Perm4& perm, T* out) {
  cuda_detail::permute_apply("permute_forward", x, x_dims, perm, out, false);
}

/// dx += dout permuted back (the inverse permutation; = with accumulate false): dout has the
/// permuted dims.
template <class T>
void permute_backward(Cuda, const T* dout, const Dims4& x_dims, const Perm4& perm, T* dx,
                      bool accumulate = true) {
  Perm4 inverse{};
  Dims4 out_dims{};
  for (int k = 0; k < 4; ++k) {
    inverse[perm[k]] = k;
    out_dims[k] = x_dims[perm[k]];
  }
  cuda_detail::permute_apply("permute_backward", dout, out_dims, inverse, dx, accumulate);
}

}  // namespace mla::kernels
