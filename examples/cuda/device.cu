// examples/cuda/device.cu — require_cuda() of a build with the CUDA backend (common/device.hpp).
#include <mla/cuda.hpp>

#include "common/device.hpp"

std::string examples::require_cuda() {
  if (!mla::gpu::available()) throw DeviceUnavailable("no CUDA device found", 1);
  return mla::gpu::describe();
}
