// mla/backend/cpu/compiler.hpp — what the CPU kernels tell the compiler about their code.
//
// The register-tile kernels (the GEMM's, the cached attention's) hold their accumulators in
// small arrays of vectors, indexed by loops of constant trip count and captured by the lambdas
// that reach their sources. Only when those loops are unrolled and those lambdas inlined do the
// arrays become registers: GCC's -O3 did both, its -O2 neither, and MLA's decode ran 4.6x slower
// with every accumulator in memory (CMake's RelWithDebInfo is -O2). These ask for it at any level:
//   MLA_UNROLL(n)   unroll the next loop n times
//   MLA_FLATTEN     inline every call in the function, lambdas included
// and these compile the functions between them for an instruction set, whatever -march says
// (every translation unit then defines them alike; call them only where cpuid reports it):
//   MLA_TARGET_BEGIN("avx2,fma") ... MLA_TARGET_END
// nvcc's front end, which also reads these headers in a .cu file, knows no unroll pragma of
// GCC's and would warn at every one.
#pragma once

#define MLA_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__CUDACC__) || !defined(__GNUC__)
#define MLA_UNROLL(n)
#elif defined(__clang__)
#define MLA_UNROLL(n) MLA_PRAGMA(unroll n)
#else
#define MLA_UNROLL(n) MLA_PRAGMA(GCC unroll n)
#endif

#if defined(__GNUC__) && !defined(__CUDACC__)
#define MLA_FLATTEN [[gnu::flatten]]
#else
#define MLA_FLATTEN
#endif

#if defined(__clang__)
#define MLA_TARGET_BEGIN(isa) MLA_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define MLA_TARGET_END MLA_PRAGMA(clang attribute pop)
#elif defined(__GNUC__)
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 headers, on the
// _mm512_undefined_ps() its shuffles pass through (GCC bug 105593).
#define MLA_TARGET_BEGIN(isa)                               \
  MLA_PRAGMA(GCC push_options)                              \
  MLA_PRAGMA(GCC target(isa))                               \
  MLA_PRAGMA(GCC diagnostic push)                           \
  MLA_PRAGMA(GCC diagnostic ignored "-Wuninitialized")      \
  MLA_PRAGMA(GCC diagnostic ignored "-Wmaybe-uninitialized")
#define MLA_TARGET_END           \
  MLA_PRAGMA(GCC diagnostic pop) \
  MLA_PRAGMA(GCC pop_options)
#endif
