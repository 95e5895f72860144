// mla/tensor.hpp — the tensor core: shapes, errors, devices, tensors and the arena.
#pragma once

#include "mla/backend/devices.hpp"
#include "mla/core/arena.hpp"
#include "mla/core/device.hpp"
#include "mla/core/error.hpp"
#include "mla/core/shape.hpp"
#include "mla/core/tensor.hpp"
