// mla/mla.hpp — the whole library: one include for a program that trains or runs a model.
#pragma once

#include "mla/tensor.hpp"                 // shapes, errors, devices, tensors, the arena
#include "mla/autodiff.hpp"               // the tape, Var and every differentiable op
#include "mla/attention/cache.hpp"        // cache modes and decode paths
#include "mla/attention/policy.hpp"       // MHA, GQA, MQA, MLA, Dynamic, Rope
#include "mla/model/config.hpp"           // ModelConfig and its validation
#include "mla/model/gpt.hpp"              // the GPT model: training forward, prefill, decode
#include "mla/nn/parameters.hpp"          // the flat parameter store
#include "mla/inference/sampling.hpp"     // greedy/temperature/top-k/top-p, generate
#include "mla/io/checkpoint.hpp"          // safetensors checkpoints
#include "mla/train/adamw.hpp"            // AdamW, gradient clipping
#include "mla/train/batches.hpp"          // seeded training windows
#include "mla/train/schedule.hpp"         // warmup + cosine learning rate
#include "mla/train/token_file.hpp"       // llm.c token files, evaluation windows
#include "mla/train/train_state.hpp"      // optimizer and progress inside a checkpoint
