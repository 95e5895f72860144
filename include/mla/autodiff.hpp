// mla/autodiff.hpp — reverse-mode autodiff: the tape, Var, grad mode and every op.
#pragma once

#include "mla/autodiff/grad_mode.hpp"
#include "mla/autodiff/tape.hpp"
#include "mla/autodiff/ops/elementwise.hpp"
#include "mla/autodiff/ops/matmul.hpp"
#include "mla/autodiff/ops/reduce.hpp"
