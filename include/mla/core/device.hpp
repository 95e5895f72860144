// mla/core/device.hpp — what a backend must provide for tensors to live on it.
//
// A device is a tag type with static members for storage; the kernels of each op are free
// functions overloaded on the tag (see mla/backend/cpu/). Model, layer and autodiff code is
// written once against this interface and never names a concrete device.
#pragma once

#include <concepts>
#include <cstddef>
#include <memory>

namespace mla {

/// Storage interface of a backend. Pointers returned by `allocate` are 64-byte aligned.
template <class D>
concept Device = requires(std::size_t bytes, void* dst, const void* src) {
  { D::name } -> std::convertible_to<const char*>;
  { D::allocate(bytes) } -> std::same_as<std::shared_ptr<std::byte>>;
  D::fill_zero(dst, bytes);
  D::copy(dst, src, bytes);          // device to device
  D::copy_to_host(dst, src, bytes);  // device `src` to host `dst`
  D::copy_from_host(dst, src, bytes);
};

/// Alignment of every tensor allocation: a cache line, and a full AVX-512 vector.
inline constexpr std::size_t kAlignment = 64;

}  // namespace mla
