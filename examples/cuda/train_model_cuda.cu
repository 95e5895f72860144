// examples/cuda/train_model_cuda.cu — train_model's run on mla::Cuda, for each attention variant
// (nvcc; the run itself is common/train_run.hpp, the same code the CPU runs).
#include <mla/cuda.hpp>

#include "common/train_run.hpp"
#include "common/variants.hpp"

int examples::training::train_on_cuda(const Run& run, Job& job) {
  return with_policy(run.s.attn, run.s.rope, [&]<class P>() { return train<P, mla::Cuda>(run, job); });
}
