// examples/common/no_cuda.cpp — the CUDA side of the programs in a build without the CUDA
// backend (examples/cuda/*.cu stand here when it has one): --device cuda is refused before a
// program reads or writes anything.
#include <string>

#include "common/device.hpp"
#include "common/eval_run.hpp"
#include "common/generate_run.hpp"
#include "common/train_run.hpp"

namespace {

[[noreturn]] void no_backend() {
  throw examples::DeviceUnavailable("this build has no CUDA backend (configure with nvcc and -DMLA_ENABLE_CUDA=ON)", 2);
}

}  // namespace

std::string examples::require_cuda() { no_backend(); }

// Unreachable (each program calls require_cuda first), but a program must link.
int examples::training::train_on_cuda(const Run&, Job&) { no_backend(); }

examples::evaluation::ModelScore examples::evaluation::evaluate_checkpoint_on_cuda(const fs::path&, const fs::path&,
                                                                                    const Options&) {
  no_backend();
}

int examples::generation::generate_on_cuda(const mla::ModelConfig&, const Tokenizer&, const Options&) { no_backend(); }
