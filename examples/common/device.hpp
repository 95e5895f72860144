// examples/common/device.hpp — the programs' --device: cpu (the default) or cuda. Names no CUDA
// type, so that every program's main compiles with g++ alone. The CUDA side of a program lives
// in examples/cuda/<program>_cuda.cu (nvcc, only in a build with the CUDA backend); without the
// backend examples/common/no_cuda.cpp defines the same functions to say so.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <mla/mla.hpp>

namespace examples {

/// Why --device cuda cannot run: main prints "<program>: --device cuda: <what>" and exits with
/// status() (2: the build has no CUDA backend; 1: the machine has no CUDA device).
class DeviceUnavailable : public std::runtime_error {
 public:
  DeviceUnavailable(const std::string& what, int status) : std::runtime_error(what), status_(status) {}
  [[nodiscard]] int status() const { return status_; }

 private:
  int status_;
};

/// The CUDA device's name ("NVIDIA H100 80GB HBM3"); throws DeviceUnavailable when it cannot run.
/// Every program calls it first with --device cuda, before reading or writing anything.
/// Defined in examples/cuda/device.cu, or examples/common/no_cuda.cpp.
std::string require_cuda();

/// A batch of token windows [B, T]: filled on the host (mla/train/batches.hpp, token_file.hpp),
/// then upload() copies it to device D for the step. On the CPU the two are the same tensors.
template <mla::Device D>
struct WindowBatch {
  mla::Tensor<std::int32_t> host_ids, host_targets;  // [B, T]
  mla::Tensor<std::int32_t, D> ids, targets;         // [B, T]

  WindowBatch(std::int64_t B, std::int64_t T)
      : host_ids(mla::Tensor<std::int32_t>::empty({B, T})), host_targets(mla::Tensor<std::int32_t>::empty({B, T})) {
    if constexpr (std::same_as<D, mla::Cpu>) {
      ids = host_ids;
      targets = host_targets;
    } else {
      ids = mla::Tensor<std::int32_t, D>::empty({B, T});
      targets = mla::Tensor<std::int32_t, D>::empty({B, T});
    }
  }

  void upload() const {
    if constexpr (!std::same_as<D, mla::Cpu>) {
      D::copy_from_host(ids.data(), host_ids.data(), host_ids.bytes());
      D::copy_from_host(targets.data(), host_targets.data(), host_targets.bytes());
    }
  }
};

}  // namespace examples
