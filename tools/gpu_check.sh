#!/usr/bin/env bash
# tools/gpu_check.sh — the Thrust/CUDA backend on a machine with an NVIDIA GPU, in one go: builds
# the CUDA test programs and bench_gpu for this GPU, runs the tests, and prints one table of
# speeds (ours and PyTorch's eager float32 training on the same GPU, MLA decoding at 8k context)
# beside the card's measured copy bandwidth and float32 GEMM rate.
#
#   tools/gpu_check.sh [--deps DIR] [--build DIR] [--quick]
#   tools/gpu_check.sh --stage-deps DIR
#
# The GPU machines have nvcc, CMake and PyTorch but no Debian packages and no network, so the
# header-only dependencies travel with the working tree: --stage-deps copies this machine's
# Eigen, doctest and nlohmann-json (headers and CMake package files) into DIR, and --deps DIR
# (default: .gpu-deps beside this script's repository) points the build at them. Keep DIR out
# of git (.git/info/exclude). --quick: small sizes and one build architecture, to check the
# script itself. Exits non-zero when a test fails or nothing could be measured.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.gpu-deps"
build="$root/build/gpu"
quick=()
stage=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --deps) deps=$(realpath -m "$2"); shift 2 ;;
    --build) build=$(realpath -m "$2"); shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --stage-deps) stage=$(realpath -m "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "$stage" ]]; then
  # Debian 12's locations of the three header-only libraries and their CMake packages.
  mkdir -p "$stage/include" "$stage/share/cmake"
  cp -r /usr/include/eigen3 /usr/include/doctest /usr/include/nlohmann "$stage/include/"
  cp -r /usr/share/eigen3/cmake "$stage/share/cmake/Eigen3"
  cp -r /usr/lib/cmake/doctest "$stage/share/cmake/doctest"
  cp -r /usr/share/cmake/nlohmann_json "$stage/share/cmake/nlohmann_json"
  # Eigen's and nlohmann-json's package files find their prefix three folders up, as staged;
  # doctest's names /usr outright.
  sed -i 's|set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
    "$stage/share/cmake/doctest/doctestTargets.cmake"
  echo "gpu_check.sh: staged Eigen, doctest and nlohmann-json in $stage ($(du -sh "$stage" | cut -f1))"
  exit 0
fi

nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[[ -x "$nvcc" ]] || { echo "gpu_check.sh: nvcc not found (PATH or /usr/local/cuda/bin)" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[[ -d "$deps" ]] || { echo "gpu_check.sh: no dependencies at $deps (run --stage-deps there first)" >&2; exit 1; }

arch=native
[[ ${#quick[@]} -gt 0 ]] && arch=90
jobs=$(nproc 2>/dev/null || echo 4)
start=$SECONDS
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$deps" \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" -DMLA_ENABLE_CUDA=ON \
  -DMLA_BUILD_TESTS=ON -DMLA_BUILD_EXAMPLES=OFF -DMLA_BUILD_BENCHMARKS=OFF -DMLA_BUILD_GPU_BENCHMARK=ON \
  -DEigen3_DIR="$deps/share/cmake/Eigen3" -Ddoctest_DIR="$deps/share/cmake/doctest" \
  -Dnlohmann_json_DIR="$deps/share/cmake/nlohmann_json" >"$build.configure.log" 2>&1 ||
  { tail -30 "$build.configure.log"; echo "gpu_check.sh: configure failed" >&2; exit 1; }
cmake --build "$build" -j "$jobs" --target cuda_kernels cuda_attention cuda_ops cuda_model bench_gpu
echo "gpu_check.sh: built in $((SECONDS - start)) s"

status=0
(cd "$build" && ctest -L cuda --output-on-failure -j 4) || status=1

results=$(mktemp)
"$build/benchmarks/gpu/bench_gpu" "${quick[@]}" | tee -a "$results" || status=1
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 "$root/benchmarks/pytorch/bench_gpu.py" "${quick[@]}" | sed 's/^/torch /' | tee -a "$results" || status=1
else
  echo "gpu_check.sh: PyTorch with CUDA not found; its column stays empty"
fi

python3 - "$results" <<'PY'
import sys
ours, torch, device, torch_device = {}, {}, "?", ""
for line in open(sys.argv[1]):
    parts = line.split()
    if not parts:
        continue
    if parts[0] == "device":
        device = " ".join(parts[1:])
    elif parts[0] == "torch" and len(parts) > 1 and parts[1] == "device":
        torch_device = " ".join(parts[2:])
    elif parts[0] == "torch":
        torch[parts[1]] = float(parts[2])
    elif len(parts) >= 3:
        ours[parts[0]] = (float(parts[1]), parts[2])
print(f"\n## GPU check: {device}" + (f"  (PyTorch: {torch_device})" if torch_device else ""))
print("\n| measurement | ours | PyTorch eager fp32 | ours / PyTorch |")
print("|---|---:|---:|---:|")
for name, (value, unit) in ours.items():
    t = torch.get(name)
    ratio = f"{value / t:.2f}" if t else ""
    print(f"| {name} | {value:,.1f} {unit} | {f'{t:,.0f} {unit}' if t else ''} | {ratio} |")
PY
rm -f "$results"
echo "gpu_check.sh: done in $((SECONDS - start)) s, status $status"
exit $status
