// mla/backend/cpu/gemm_kernel.hpp — which kernel computes the large float products, chosen
// when the program runs from what the CPU can do, whatever the flags it was compiled with.
//
//   GemmKernel::Avx512   gemm_avx512.hpp: 12x32 register tile (CPUs with AVX-512F)
//   GemmKernel::Avx2     gemm_avx2.hpp:    6x16 register tile (CPUs with AVX2 and FMA)
//   GemmKernel::Eigen    Eigen's GEBP kernels, for the ISA the program was compiled for
//
// The two register-tile kernels are compiled for their ISA by target attributes, not by
// -march, so one binary carries both and every translation unit defines them alike; a kernel
// runs only on a CPU whose cpuid (and operating system) reports its ISA. The best available is
// the default. MLA_GEMM_KERNEL=avx512|avx2|eigen in the environment, or set_gemm_kernel(),
// chooses another: to compare them, or to test each on one machine. Double always takes Eigen.
// The cached attention's register tiles (cached_kernels.hpp) follow the same choice.
//
// A program should call gemm_kernel() once at start-up, before any work: an MLA_GEMM_KERNEL
// this CPU cannot run is then refused there, with one line, not in the middle of a product.
#pragma once

#include <array>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

// The register-tile kernels need x86-64 and GCC's or Clang's target attributes.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MLA_GEMM_X86 1
#endif

namespace mla::kernels {

enum class GemmKernel { Eigen, Avx2, Avx512 };

inline constexpr std::array<GemmKernel, 3> kGemmKernels = {GemmKernel::Avx512, GemmKernel::Avx2, GemmKernel::Eigen};

[[nodiscard]] constexpr std::string_view name(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::Avx512: return "avx512";
    case GemmKernel::Avx2: return "avx2";
    case GemmKernel::Eigen: return "eigen";
  }
  return "?";
}

/// Whether this CPU (and its operating system, which must save the wider registers) can run
/// `kernel`. __builtin_cpu_supports reads cpuid and XCR0 once, at start-up.
[[nodiscard]] inline bool available(GemmKernel kernel) {
  switch (kernel) {
#if defined(MLA_GEMM_X86)
    case GemmKernel::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    case GemmKernel::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    case GemmKernel::Avx512:
    case GemmKernel::Avx2: return false;
#endif
    case GemmKernel::Eigen: return true;
  }
  return false;
}

/// The fastest kernel this CPU can run.
[[nodiscard]] inline GemmKernel best_gemm_kernel() {
  for (const GemmKernel kernel : kGemmKernels) {
    if (available(kernel)) return kernel;
  }
  return GemmKernel::Eigen;
}

namespace detail {

/// `text` as a kernel's name, or why not (the message starts with `source`, then `text`).
inline GemmKernel parse_gemm_kernel(std::string_view text, std::string_view source) {
  for (const GemmKernel kernel : kGemmKernels) {
    if (text != name(kernel)) continue;
    if (!available(kernel)) {
      throw std::invalid_argument(std::string(source) + std::string(text) + ": this CPU cannot run the " +
                                  std::string(text) + " GEMM kernel");
    }
    return kernel;
  }
  throw std::invalid_argument(std::string(source) + std::string(text) +
                              ": not a GEMM kernel (avx512, avx2 or eigen)");
}

/// The kernel in use: MLA_GEMM_KERNEL's when set (read once), else the best available.
inline std::atomic<GemmKernel>& gemm_kernel_choice() {
  static std::atomic<GemmKernel> choice = [] {
    const char* forced = std::getenv("MLA_GEMM_KERNEL");
    return forced && *forced ? parse_gemm_kernel(forced, "MLA_GEMM_KERNEL=") : best_gemm_kernel();
  }();
  return choice;
}

}  // namespace detail

/// The kernel the float products take now. Throws std::invalid_argument when MLA_GEMM_KERNEL
/// names a kernel that is unknown or that this CPU cannot run.
[[nodiscard]] inline GemmKernel gemm_kernel() { return detail::gemm_kernel_choice().load(std::memory_order_relaxed); }

/// Makes `kernel` the one the float products take, from the next product on; throws
/// std::invalid_argument, changing nothing, when this CPU cannot run it.
inline void set_gemm_kernel(GemmKernel kernel) {
  if (!available(kernel)) {
    throw std::invalid_argument("set_gemm_kernel: this CPU cannot run the " + std::string(name(kernel)) +
                                " GEMM kernel");
  }
  detail::gemm_kernel_choice().store(kernel, std::memory_order_relaxed);
}

/// The kernel named `text` (avx512, avx2, eigen), for a command line; throws
/// std::invalid_argument naming the problem when there is none or this CPU cannot run it.
[[nodiscard]] inline GemmKernel gemm_kernel_named(std::string_view text) {
  return detail::parse_gemm_kernel(text, "GEMM kernel ");
}

}  // namespace mla::kernels
