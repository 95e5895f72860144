// mla/backend/devices.hpp — the device tags a tensor may live on: `Cpu` always, and `Cuda` in a
// translation unit that enables the Thrust/CUDA backend (compiled by nvcc, or by g++ for
// Thrust's OpenMP system; see mla/cuda.hpp). Part of the kernel interface: with
// mla/backend/kernels.hpp, the only header outside backend/cpu/ and backend/cuda/ that
// includes them.
#pragma once

#include "mla/backend/cpu/device.hpp"

#if defined(MLA_CUDA) || defined(__CUDACC__)
#include "mla/backend/cuda/device.hpp"
#endif
