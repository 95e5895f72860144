// examples/cuda/eval_model_cuda.cu — eval_model's scoring on mla::Cuda, for each attention variant
// (nvcc; the scoring itself is common/eval_run.hpp, the same code the CPU runs).
#include <mla/cuda.hpp>

#include "common/eval_run.hpp"

examples::evaluation::ModelScore examples::evaluation::evaluate_checkpoint_on_cuda(const fs::path& path,
                                                                                    const fs::path& data,
                                                                                    const Options& opt) {
  return evaluate_checkpoint<mla::Cuda>(path, data, opt);
}
