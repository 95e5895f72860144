// mla/backend/cuda/device.hpp — the Thrust/CUDA device: device memory on one stream, Thrust
// algorithms with named functors, cuBLAS for the products.
//
// The same headers build two ways:
//   nvcc (THRUST_DEVICE_SYSTEM CUDA, the default)   memory from cudaMallocAsync on the
//        library's stream, kernels on the GPU, every runtime call checked
//   g++  -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP -fopenmp
//        memory on the host, the very same Thrust code run by OpenMP threads: how the backend is
//        tested on machines without a GPU (the products then use the CPU backend's GEMM)
// MLA_HD marks what runs on both sides (`__host__ __device__` under nvcc, nothing otherwise).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <thrust/execution_policy.h>
#include <thrust/version.h>

#include "mla/core/device.hpp"
#include "mla/core/error.hpp"

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#define MLA_CUDA_RUNTIME 1
#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#else
#define MLA_CUDA_RUNTIME 0
#endif

#if defined(__CUDACC__)
#define MLA_HD __host__ __device__
#else
#define MLA_HD
#endif

namespace mla {

/// A failure of the device runtime (CUDA, cuBLAS, Thrust), or a device that is not there.
class DeviceError : public Error {
 public:
  using Error::Error;
};

namespace gpu {
#if MLA_CUDA_RUNTIME
/// Throws DeviceError naming `what` (the call and the op) when `status` is not cudaSuccess;
/// out of memory reads as such.
inline void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clears a sticky-free error so that the next call does not see it
  if (status == cudaErrorMemoryAllocation) {
    throw DeviceError(std::string(what) + ": out of device memory");
  }
  throw DeviceError(std::string(what) + ": " + cudaGetErrorString(status));
}

/// The stream every kernel, copy and allocation of the library runs on.
inline cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t created = nullptr;
    check(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return created;
  }();
  return s;
}
#endif

/// Whether a device can run the backend: a CUDA GPU, or the host in a build for Thrust's
/// OpenMP system.
inline bool available() {
#if MLA_CUDA_RUNTIME
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return true;
#endif
}

/// What the device is, in words ("NVIDIA H100 80GB HBM3", or the host system's name).
inline std::string describe() {
#if MLA_CUDA_RUNTIME
  cudaDeviceProp prop{};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  return prop.name;
#else
  return "Thrust OpenMP system (host threads)";
#endif
}

/// Blocks until everything queued on the library's stream has run.
inline void synchronize(const char* what = "synchronize") {
#if MLA_CUDA_RUNTIME
  check(cudaStreamSynchronize(stream()), what);
#else
  (void)what;
#endif
}

/// Device allocations made so far: constant across warm training and decode steps.
inline std::atomic<std::int64_t>& allocation_count() {
  static std::atomic<std::int64_t> count{0};
  return count;
}
}  // namespace gpu

struct Cuda {
  static constexpr const char* name = "cuda";

  /// `bytes` of device memory (rounded up to whole 64-byte lines), freed on the stream when
  /// the last handle goes. With MLA_POISON_ALLOCATIONS defined (the backend's tests) every byte
  /// starts as 0xFF, a NaN in float and double, so that an output a kernel forgot stays NaN.
  static std::shared_ptr<std::byte> allocate(std::size_t bytes) {
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    const std::size_t n = rounded == 0 ? kAlignment : rounded;
    ++gpu::allocation_count();
#if MLA_CUDA_RUNTIME
    void* p = nullptr;
    gpu::check(cudaMallocAsync(&p, n, gpu::stream()),
                ("cudaMallocAsync of " + std::to_string(n) + " bytes").c_str());
#if defined(MLA_POISON_ALLOCATIONS)
    gpu::check(cudaMemsetAsync(p, 0xFF, n, gpu::stream()), "cudaMemsetAsync (poison)");
#endif
    return {static_cast<std::byte*>(p), [](std::byte* q) { cudaFreeAsync(q, gpu::stream()); }};
#else
    auto* p = static_cast<std::byte*>(::operator new(n, std::align_val_t{kAlignment}));
#if defined(MLA_POISON_ALLOCATIONS)
    std::memset(p, 0xFF, n);
#endif
    return {p, [](std::byte* q) { ::operator delete(q, std::align_val_t{kAlignment}); }};
#endif
  }
  static void fill_zero(void* dst, std::size_t bytes) {
    if (bytes == 0) return;
#if MLA_CUDA_RUNTIME
    gpu::check(cudaMemsetAsync(dst, 0, bytes, gpu::stream()), "cudaMemsetAsync");
#else
    std::memset(dst, 0, bytes);
#endif
  }
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
#if MLA_CUDA_RUNTIME
    gpu::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, gpu::stream()),
                "cudaMemcpyAsync (device to device)");
#else
    std::memmove(dst, src, bytes);
#endif
  }
  /// Waits for the stream: the host reads the bytes right after.
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
#if MLA_CUDA_RUNTIME
    gpu::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, gpu::stream()),
                "cudaMemcpyAsync (device to host)");
    gpu::synchronize("cudaStreamSynchronize (device to host)");
#else
    std::memcpy(dst, src, bytes);
#endif
  }
  /// The host buffer may be reused as soon as this returns (the runtime stages pageable
  /// memory before returning).
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
#if MLA_CUDA_RUNTIME
    gpu::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, gpu::stream()),
                "cudaMemcpyAsync (host to device)");
#else
    std::memcpy(dst, src, bytes);
#endif
  }
};

static_assert(Device<Cuda>);

namespace gpu {
#if MLA_CUDA_RUNTIME
/// Thrust's temporary storage (CUB's reductions and searches) from Cuda::allocate, bumped
/// through one block that is kept and grown, so that a warm step allocates nothing: without it
/// Thrust would cudaMalloc and cudaFree (each a synchronization) in every reduction. Reusing
/// the block as soon as everything handed out is back is safe: the library runs on one stream.
class TemporaryStorage {
 public:
  using value_type = char;

  char* allocate(std::ptrdiff_t n) {
    const std::size_t bytes = (static_cast<std::size_t>(n) + kAlignment - 1) / kAlignment * kAlignment;
    if (used_ + bytes > size_) {
      retired_.push_back(std::move(block_));  // still in use until everything comes back
      size_ = std::max(2 * size_, used_ + bytes);
      block_ = Cuda::allocate(size_);
      used_ = 0;
    }
    char* p = reinterpret_cast<char*>(block_.get()) + used_;
    used_ += bytes;
    ++outstanding_;
    return p;
  }
  void deallocate(char*, std::size_t) {
    if (--outstanding_ == 0) {
      used_ = 0;
      retired_.clear();
    }
  }

 private:
  std::shared_ptr<std::byte> block_;
  std::vector<std::shared_ptr<std::byte>> retired_;
  std::size_t size_ = 0, used_ = 0;
  std::int64_t outstanding_ = 0;
};

inline TemporaryStorage& temporary_storage() {
  static TemporaryStorage storage;
  return storage;
}
#endif

/// The execution policy of the library's Thrust calls: the library's stream, without a
/// synchronization after each algorithm, and its temporary storage on the GPU; OpenMP threads
/// on the host.
inline auto policy() {
#if MLA_CUDA_RUNTIME
  return thrust::cuda::par_nosync(temporary_storage()).on(stream());
#else
  return thrust::device;
#endif
}
}  // namespace gpu

}  // namespace mla
