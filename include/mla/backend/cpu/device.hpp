// mla/backend/cpu/device.hpp — the CPU device: host memory, Eigen kernels, OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "mla/core/device.hpp"

namespace mla {

struct Cpu {
  static constexpr const char* name = "cpu";

  /// `bytes` of 64-byte aligned host memory (rounded up to whole cache lines).
  static std::shared_ptr<std::byte> allocate(std::size_t bytes) {
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    auto* p = static_cast<std::byte*>(::operator new(rounded == 0 ? kAlignment : rounded,
                                                     std::align_val_t{kAlignment}));
    return {p, [](std::byte* q) { ::operator delete(q, std::align_val_t{kAlignment}); }};
  }
  static void fill_zero(void* dst, std::size_t bytes) {
    if (bytes) std::memset(dst, 0, bytes);
  }
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
  }
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
};

static_assert(Device<Cpu>);

namespace kernels::detail {
/// The per-thread scratch buffers of the CPU kernels, one slot each, so that no two kernels
/// that may run inside one another share a buffer.
enum class ScratchSlot { GemmA, GemmB, GemmDots, GemmSlices, CachedScores, CachedPartials, CachedRowStats };

/// `n` elements of this thread's buffer `Slot`, 64-byte aligned: reallocated (contents not
/// kept) only when too small, so a steady state allocates nothing. Held for the thread's life.
template <class T, ScratchSlot Slot>
T* thread_scratch(std::int64_t n) {
  struct Buffer {
    std::shared_ptr<std::byte> data;
    std::int64_t size = 0;
  };
  thread_local Buffer buffer;
  if (n > buffer.size) {
    buffer.data = Cpu::allocate(static_cast<std::size_t>(n) * sizeof(T));
    buffer.size = n;
  }
  return reinterpret_cast<T*>(buffer.data.get());
}
}  // namespace kernels::detail

}  // namespace mla
