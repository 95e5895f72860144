// examples/cuda/generate_cuda.cu — generate's decoding on mla::Cuda, for each attention variant
// (nvcc; the decoding itself is common/generate_run.hpp, the same code the CPU runs).
#include <mla/cuda.hpp>

#include "common/generate_run.hpp"

int examples::generation::generate_on_cuda(const mla::ModelConfig& stored, const Tokenizer& tok,
                                           const Options& opt) {
  return generate_on<mla::Cuda>(stored, tok, opt);
}
