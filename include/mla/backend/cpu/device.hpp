// mla/backend/cpu/device.hpp — the CPU device: host memory, Eigen kernels, OpenMP threads.
#pragma once

#include <cstddef>
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

}  // namespace mla
