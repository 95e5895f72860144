// The main of the Thrust/CUDA backend's test programs: doctest's, after a check that the device
// is there. Without a GPU the CUDA build's programs exit 77, which ctest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "mla/backend/cuda/device.hpp"

int main(int argc, char** argv) {
  if (!mla::gpu::available()) {
    std::puts("skipped: no CUDA device");
    return 77;
  }
  std::printf("device: %s\n", mla::gpu::describe().c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
