// mla/mla.hpp — the whole library.
#pragma once

#include "mla/tensor.hpp"
#include "mla/autodiff.hpp"
