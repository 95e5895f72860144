// mla/backend/cuda/launch.hpp — runs one Thrust algorithm of a kernel and turns its failure
// into the library's error type.
//
// Thrust reports a failed launch or a failed kernel (on the GPU) as thrust::system_error; the
// library's callers catch mla::Error. launch("attention_forward", [&] { thrust::... }) runs the
// call and rethrows such a failure as DeviceError naming the kernel, so one line on stderr says
// which kernel failed and why.
#pragma once

#include <string>
#include <utility>

#include <thrust/system_error.h>

#include "mla/backend/cuda/device.hpp"

namespace mla::gpu {

/// Runs f(); a thrust::system_error it throws becomes DeviceError("cuda <what>: <reason>").
template <class F>
void launch(const char* what, F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const thrust::system_error& e) {
    throw DeviceError(std::string("cuda ") + what + ": " + e.what());
  }
}

}  // namespace mla::gpu
