// mla/backend/cuda/kernels.hpp — every kernel of the Thrust/CUDA backend (the entry points are
// listed in mla/backend/kernels.hpp).
#pragma once

#include "mla/backend/cuda/attention.hpp"
#include "mla/backend/cuda/cached_attention.hpp"
#include "mla/backend/cuda/device.hpp"
#include "mla/backend/cuda/dropout.hpp"
#include "mla/backend/cuda/elementwise.hpp"
#include "mla/backend/cuda/embedding.hpp"
#include "mla/backend/cuda/gemm.hpp"
#include "mla/backend/cuda/layout.hpp"
#include "mla/backend/cuda/linear.hpp"
#include "mla/backend/cuda/norm.hpp"
#include "mla/backend/cuda/optimizer.hpp"
#include "mla/backend/cuda/rope.hpp"
#include "mla/backend/cuda/softmax.hpp"
