// mla/backend/cuda/embedding.hpp — token embedding on the Thrust/CUDA device: gather rows of
// a table by id, and the scatter-add of its backward, with the CPU backend's semantics
// (mla/backend/cpu/embedding.hpp). Forward and backward side by side.
//
// Legend: N ids (every position of the ids tensor, flattened), V vocab (rows of the table),
// C channels (the row length).
#pragma once

#include <algorithm>
#include <cstdint>

#include <thrust/find.h>

#include "mla/backend/cuda/common.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/launch.hpp"

namespace mla::kernels {
namespace cuda_detail {

template <class T>
struct EmbeddingGather {
  const T* weight;          // (V, C)
  const std::int32_t* ids;  // (N)
  T* out;                   // (N, C)
  std::int64_t C;
  MLA_HD void operator()(std::int64_t i) const {
    out[i] = weight[static_cast<std::int64_t>(ids[i / C]) * C + i % C];
  }
};

/// Item (bucket h, column c): walks all N ids in order and, for each id with id % buckets == h,
/// adds dout[n, c] into dweight[id, c]. Every element of dweight belongs to exactly one item,
/// which adds its terms in id order: deterministic, no atomics, and the CPU backend's order.
template <class T>
struct EmbeddingScatter {
  const std::int32_t* ids;  // (N)
  const T* dout;            // (N, C)
  T* dweight;               // (V, C)
  std::int64_t N, C, buckets;
  MLA_HD void operator()(std::int64_t i) const {
    const std::int64_t h = i / C, c = i % C;
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int64_t id = ids[n];
      if (id % buckets == h) dweight[id * C + c] += dout[n * C + c];
    }
  }
};

/// Work items the backward aims for (buckets x columns), enough to fill a GPU.
inline constexpr std::int64_t kEmbeddingWorkItems = std::int64_t{1} << 16;
/// At most this many buckets: each bucket reads every id once more.
inline constexpr std::int64_t kEmbeddingMaxBuckets = 64;

}  // namespace cuda_detail

/// Flat index of the first id outside [0, V), or -1 when every id is valid. Waits for the
/// device (the index comes back to the host).
inline std::int64_t embedding_first_bad_id(Cuda, const std::int32_t* ids /* (N) */, std::int64_t N,
                                           std::int64_t V) {
  if (N <= 0) return -1;
  std::int64_t at = N;
  gpu::launch("embedding_first_bad_id", [&] {
    at = thrust::find_if(gpu::policy(), ids, ids + N, cuda_detail::IdOutOfRange{V}) - ids;
  });
  return at == N ? -1 : at;
}

/// The id at flat index `n` (copied to the host, for error messages).
inline std::int32_t embedding_id_at(Cuda, const std::int32_t* ids, std::int64_t n) {
  std::int32_t id = 0;
  Cuda::copy_to_host(&id, ids + n, sizeof id);
  return id;
}

/// out[n, :] = weight[ids[n], :]. Ids must already be checked.
template <class T>
void embedding_forward(Cuda, const T* weight /* (V, C) */, const std::int32_t* ids /* (N) */,
                       T* out /* (N, C) */, std::int64_t N, std::int64_t C) {
  cuda_detail::for_each_index("embedding_forward", N * C,
                              cuda_detail::EmbeddingGather<T>{weight, ids, out, C});
}

/// dweight[ids[n], :] += dout[n, :] for n = 0, 1, ..., N-1 in that order. Repeated ids
/// accumulate. The vocabulary rows are dealt into `buckets` classes by id % buckets, and one
/// work item per (bucket, column) walks all N ids in order, adding those of its bucket: each
/// element sums its terms in id order, deterministically and without atomics or scratch.
/// Every item reads all N ids (buckets * C * N id reads, from cache: a warp's items share a
/// bucket and read the same id), so the buckets only buy parallelism for a narrow C; a sort of
/// (id, n) pairs followed by ordered segment sums would read each id once but needs scratch.
template <class T>
void embedding_backward(Cuda, const std::int32_t* ids /* (N) */, const T* dout /* (N, C) */,
                        T* dweight /* (V, C) */, std::int64_t N, std::int64_t C) {
  if (N == 0 || C == 0) return;
  const std::int64_t buckets =
      std::clamp<std::int64_t>(cuda_detail::kEmbeddingWorkItems / C, 1, cuda_detail::kEmbeddingMaxBuckets);
  cuda_detail::for_each_index("embedding_backward", buckets * C,
                              cuda_detail::EmbeddingScatter<T>{ids, dout, dweight, N, C, buckets});
}

}  // namespace mla::kernels
