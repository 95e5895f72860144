#!/usr/bin/env bash
# tools/test.sh [--sanitize] — the project's test command.
#
# On a fresh Debian 12 machine: installs what is missing (apt-get, as root), configures and
# builds every test program, and runs ctest. Exits non-zero on any failure.
#   (default)    build/test      optimized, with the tests' own checks
#   --sanitize   build/sanitize  AddressSanitizer + UndefinedBehaviorSanitizer
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sanitize=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/test.sh: unknown argument '$arg' (expected --sanitize or --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=tools/lib/packages.sh
source "$root/tools/lib/packages.sh"
mla_require_packages build-essential cmake ninja-build pkg-config libeigen3-dev nlohmann-json3-dev \
  doctest-dev libbenchmark-dev libcli11-dev libsentencepiece-dev gnuplot-nox clang libclang-rt-14-dev libomp-dev \
  libopenmpi-dev openmpi-bin

jobs=$(nproc 2>/dev/null || echo 2)
if [[ $sanitize -eq 1 ]]; then
  # clang builds this code faster than g++, and line tables are all a stack trace needs.
  build="$root/build/sanitize"
  flags=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only"
         -DMLA_SANITIZE=ON -DMLA_BUILD_BENCHMARKS=OFF -DMLA_BUILD_EXAMPLES=OFF -DMLA_ENABLE_CUDA=OFF)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # The fuzzer carries its own sanitizers; the build-system tests gain nothing from them.
  ctest_args=(-LE "fuzz|downstream|failtest")
else
  build="$root/build/test"
  # -O2, not Release's -O3: compiling is most of a CI run, and the largest test compiles a sixth
  # faster; the kernels are the same (the GEMM kernels are intrinsics; no fast-math either way).
  # The programs users build (prepare_for_use.sh, bench.sh) keep -O3.
  flags=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG")
  ctest_args=()
fi

cmake -S "$root" -B "$build" -G Ninja "${flags[@]}" -DMLA_BUILD_TESTS=ON
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs" "${ctest_args[@]}"
