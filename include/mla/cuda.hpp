// mla/cuda.hpp — the whole library with the Thrust/CUDA device, mla::Cuda:
//
//   // model.cu, compiled by nvcc (-std=c++20 --expt-relaxed-constexpr), linked with -lcublas
//   #include <mla/cuda.hpp>
//   mla::GPT<mla::MLA<>, float, mla::Cuda> model(cfg, seed);
//
// Compiled by g++ with -fopenmp -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP and CCCL on the
// include path, the same code runs on host threads (how the backend is tested without a GPU).
// Include it before, or instead of, <mla/mla.hpp>: the kernels of both devices must be declared
// before the ops that call them.
#pragma once

#if !defined(MLA_CUDA) && !defined(__CUDACC__) && defined(MLA_KERNELS_INCLUDED)
#error "include <mla/cuda.hpp> before <mla/mla.hpp> (or instead of it)"
#endif
#ifndef MLA_CUDA
#define MLA_CUDA 1
#endif

#include "mla/mla.hpp"
