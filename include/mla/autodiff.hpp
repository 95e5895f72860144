// mla/autodiff.hpp — reverse-mode autodiff: the tape, Var, grad mode and every op.
#pragma once

#include "mla/autodiff/grad_mode.hpp"
#include "mla/autodiff/tape.hpp"
#include "mla/autodiff/ops/attention.hpp"
#include "mla/autodiff/ops/dropout.hpp"
#include "mla/autodiff/ops/elementwise.hpp"
#include "mla/autodiff/ops/embedding.hpp"
#include "mla/autodiff/ops/layout.hpp"
#include "mla/autodiff/ops/loss.hpp"
#include "mla/autodiff/ops/matmul.hpp"
#include "mla/autodiff/ops/norm.hpp"
#include "mla/autodiff/ops/reduce.hpp"
#include "mla/autodiff/ops/rope.hpp"
#include "mla/autodiff/ops/softmax.hpp"
