#!/usr/bin/env bash
# tools/bench.sh [--with-pytorch] [--threads N] [--out DIR] [--filter REGEX] [--quick] — the benchmarks.
#
# On a fresh Debian 12 machine: installs what is missing (apt-get, as root), builds the Google
# Benchmark programs (Release, build/bench) and runs every one at N threads, each writing its JSON
# to DIR/ours-<program>.json; bench_train runs one process per variant and round (its
# peak_rss_bytes is that variant's), each round also at 1 thread for the thread-scaling table. Then
# prints the tables (name, ours, PyTorch, ours/PyTorch; peak RSS; thread scaling) and writes them
# to DIR/table.md; a full run (no --quick, no --filter) also rewrites this kind of machine's page,
# docs/benchmarks/<cpu>-<isa>.md (the tables, the machine: CPU, ISA, the FMA peak and read
# bandwidth of bench_machine, the date), and the index of the pages, docs/benchmarks.md.
#   --with-pytorch  also installs python3-torch python3-numpy, checks that benchmarks/pytorch's
#                   model computes eval_model's loss on small checkpoints of every attention kind
#                   (DIR/check), then times the same rows in PyTorch (DIR/pytorch.json): the
#                   train rows in rounds alternating with ours, the others after all of ours
#   --threads N     threads of both sides (default: all cores)
#   --out DIR       results folder (default: build/bench/results)
#   --filter REGEX  only the rows whose names match (--benchmark_filter: names end in /real_time)
#   --quick         short timings: a smoke test, not numbers to quote
#   --build-dir DIR build folder (default: build/bench);  --no-build  run what DIR already holds
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=tools/bench.sh
command_line="$me${*:+ $*}"  # for the results page
usage_error() { echo "$me: $*" >&2; exit 2; }

with_pytorch=0 quick=0 build_it=1 threads="" out="" filter="" build=""
while [[ $# -gt 0 ]]; do
  arg=$1
  case "$arg" in
    --with-pytorch) with_pytorch=1 ;;
    --quick) quick=1 ;;
    --no-build) build_it=0 ;;
    --threads|--out|--filter|--build-dir)
      [[ $# -ge 2 ]] || usage_error "$arg needs a value"
      shift
      case "$arg" in
        --threads) threads=$1 ;; --out) out=$1 ;; --filter) filter=$1 ;; --build-dir) build=$1 ;;
      esac ;;
    --threads=*) threads=${arg#*=} ;;
    --out=*) out=${arg#*=} ;;
    --filter=*) filter=${arg#*=} ;;
    --build-dir=*) build=${arg#*=} ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$arg' (expected --with-pytorch, --threads N, --out DIR, --filter REGEX, --quick, --build-dir DIR, --no-build or --help)" ;;
  esac
  shift
done
jobs=$(nproc 2>/dev/null || echo 2)
threads=${threads:-$jobs}
[[ $threads =~ ^[1-9][0-9]*$ ]] || usage_error "--threads '$threads' must be a positive integer"
[[ -n $out ]] || out="$root/build/bench/results"
[[ -n $build ]] || build="$root/build/bench"
[[ ! -e $out || -d $out ]] || usage_error "--out '$out' exists and is not a directory"
[[ -z $filter ]] || printf '' | grep -Eq -- "$filter" 2>/dev/null || [[ $? -eq 1 ]] ||
  usage_error "--filter '$filter' is not a valid regular expression"

# shellcheck source=tools/lib/packages.sh
source "$root/tools/lib/packages.sh"
packages=(build-essential cmake ninja-build pkg-config libeigen3-dev nlohmann-json3-dev libbenchmark-dev
          libcli11-dev libsentencepiece-dev libomp-dev python3
          libblis4-openmp libopenblas0-openmp)  # bench_gemm's candidates, loaded when present
[[ $with_pytorch -eq 0 ]] || packages+=(python3-torch python3-numpy)
mla_require_packages "${packages[@]}"
py=/usr/bin/python3  # Debian's: python3-torch is installed for it, not for a python3 elsewhere on PATH
table="$root/tools/lib/bench_table.py" torch_bench="$root/benchmarks/pytorch/bench_torch.py"

# --- build ------------------------------------------------------------------------------------
# Every benchmarks/bench_*.cpp is a program (benchmarks/CMakeLists.txt globs them); the known
# ones first, in the order of the table.
targets=()
for t in bench_machine bench_gemm bench_attention bench_train bench_decode; do
  if [[ -e $root/benchmarks/$t.cpp ]]; then targets+=("$t"); fi
done
for src in "$root"/benchmarks/bench_*.cpp; do
  t=$(basename "$src" .cpp)
  if [[ -e $src && " ${targets[*]} " != *" $t "* ]]; then targets+=("$t"); fi
done
[[ ${#targets[@]} -gt 0 ]] || { echo "$me: no benchmarks/bench_*.cpp" >&2; exit 1; }
if [[ $build_it -eq 1 ]]; then
  examples=OFF extra=()
  [[ $with_pytorch -eq 0 ]] || { examples=ON; extra=(train_model eval_model); }
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_TESTS=OFF \
    -DMLA_BUILD_BENCHMARKS=ON -DMLA_BUILD_EXAMPLES=$examples > /dev/null
  cmake --build "$build" -j "$jobs" --target "${targets[@]}" "${extra[@]}"
fi
if [[ $with_pytorch -eq 1 ]]; then
  for t in train_model eval_model; do
    [[ -x $build/examples/$t ]] || { echo "$me: --with-pytorch needs $build/examples/$t (built with -DMLA_BUILD_EXAMPLES=ON)" >&2; exit 1; }
  done
fi
programs=()
for t in "${targets[@]}"; do
  if [[ -x $build/benchmarks/$t ]]; then programs+=("$t"); else echo "$me: note: $build/benchmarks/$t was not built" >&2; fi
done

mkdir -p "$out"
rm -f "$out"/ours-*.json "$out"/pytorch*.json "$out"/table.md
rm -rf "$out/parts"
mkdir -p "$out/parts"
# A training step takes half a second. Its rows are timed in five rounds, each 2 s of ours then
# 2 s of PyTorch's (each process fresh), and each side reports its median round: the VM's speed
# swings by a third over minutes, and a ratio taken from one pair of timings hangs on the minute
# each side happened to get (one run's MHA rounds gave 3.16, 2.47 and 2.06: five rounds' median
# leans less on any two).
# The other rows take Google Benchmark's default time.
min_time=() train_time=(--benchmark_min_time=2) rounds=5
[[ $quick -eq 0 ]] || { min_time=(--benchmark_min_time=0.05); train_time=(--benchmark_min_time=0.05); rounds=1; }
export OMP_NUM_THREADS=$threads

# Names of the rows of program $1 that the filter selects, without the /real_time suffix.
list_rows() {
  "$build/benchmarks/$1" --benchmark_list_tests=true --benchmark_filter="${filter:-.}" 2>/dev/null |
    sed -E 's#/(real_time|manual_time|process_time)$##' || true
}

# One Google Benchmark run: program, JSON file, thread count, filter.
run_ours() {
  local times=("${min_time[@]}")
  [[ $1 != bench_train ]] || times=("${train_time[@]}")
  OMP_NUM_THREADS=$3 "$build/benchmarks/$1" --benchmark_filter="$4" "${times[@]}" \
    --benchmark_format=console --benchmark_out="$2" --benchmark_out_format=json
}

# --- PyTorch: first its model is checked against ours, and its BLAS against a crippled one ----
table_args=() torch_train=() torch_train_1t=()
torch_time=(--min-time 1.0 --train-min-time 2.0 --train-repetitions 1)
[[ $quick -eq 0 ]] || torch_time=(--min-time 0.1)
torch_filter=()
[[ -z $filter ]] || torch_filter=(--filter "$filter")
# Debian's OpenBLAS (PyTorch's, and bench_gemm's candidate) mis-detects these VMs' CPU and runs
# ~5x slow. SKYLAKEX needs AVX-512: forced on a CPU without it, OpenBLAS would die of an
# illegal instruction.
if [[ -z ${OPENBLAS_CORETYPE:-} ]] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
if [[ $with_pytorch -eq 1 ]]; then
  echo "== PyTorch: does its model compute eval_model's loss? ($out/check)"
  check="$out/check"
  rm -rf "$check"
  mkdir -p "$check"
  $py "$torch_bench" tokens --out "$check/tokens.bin" --count 20000 --vocab 256
  small=(--train "$check/tokens.bin" --vocab-size 256 --d-model 64 --heads 4 --layers 2 --seq-len 32 --batch 2
         --steps 2 --seed 7 --threads "$threads")
  checkpoints=()
  for kind in "mha" "gqa" "mqa" "mla" "mha --rope decoupled" "mla --rope none" "mla --q-rank 0"; do
    name=${kind// --/_}
    name=${name// /_}
    # shellcheck disable=SC2086  # $kind is the attention flag and its options
    "$build/examples/train_model" "${small[@]}" --attn $kind --out "$check/$name" > "$check/$name.log" 2>&1 ||
      { cat "$check/$name.log" >&2; echo "$me: train_model failed for --attn $kind" >&2; exit 1; }
    # Two steps leave the model near uniform, where the loss barely depends on attention: the
    # perturbed copy's large, random weights make every op show in the loss.
    $py "$torch_bench" perturb --checkpoint "$check/$name/model.safetensors" --out "$check/$name/perturbed.safetensors"
    checkpoints+=("$check/$name/model.safetensors" "$check/$name/perturbed.safetensors")
  done
  $py "$torch_bench" check --threads "$threads" --data "$check/tokens.bin" --max-windows 64 \
    --compare-with "$build/examples/eval_model" --rtol 1e-4 --checkpoint "${checkpoints[@]}"

  gflops=$($py "$torch_bench" matmul --threads "$threads" | tail -n 1)
  echo "== PyTorch matmul 2048x256 @ 256x1024 at $threads threads: $gflops GFLOP/s (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
  if ! awk -v g="$gflops" 'BEGIN { exit !(g > 100) }'; then
    echo "$me: WARNING: PyTorch's matmul reaches only $gflops GFLOP/s (not > 100): its BLAS is not at full speed, the comparison is untrustworthy" >&2
  fi
fi

# One round of PyTorch's train row of variant $1 at $2 threads, right after ours (round $4).
# Appends the JSON file to the array named $3.
torch_train_row() {
  [[ $with_pytorch -eq 1 ]] || return 0
  local file="$out/parts/pytorch-train-$2t-$1-$4.json"
  $py "$torch_bench" run --threads "$2" "${torch_time[@]}" --filter "^train/$1/" "${torch_filter[@]}" --out "$file"
  local -n files=$3
  files+=("$file")
}

# --- ours -------------------------------------------------------------------------------------
ours=() ours_1t=""
for prog in "${programs[@]}"; do
  rows=$(list_rows "$prog")
  [[ -n $rows ]] || continue
  echo "== $prog ($threads threads)"
  if [[ $prog == bench_train ]]; then
    # One process per variant, round and thread count, so that each row's peak_rss_bytes is its
    # own. Within a round the 1-thread timings follow the N-thread ones, so that the scaling
    # table's ratio, like ours/PyTorch, comes from timings a few seconds apart.
    variants=$(echo "$rows" | awk -F/ '!seen[$2]++ {print $2}')
    parts=() parts_1t=()
    for v in $variants; do
      for round in $(seq "$rounds"); do
        run_ours "$prog" "$out/parts/train-$v-$round.json" "$threads" "^train/$v/"
        parts+=("$out/parts/train-$v-$round.json")
        torch_train_row "$v" "$threads" torch_train "$round"
        [[ $threads -ne 1 ]] || continue
        run_ours "$prog" "$out/parts/train-1t-$v-$round.json" 1 "^train/$v/"
        parts_1t+=("$out/parts/train-1t-$v-$round.json")
        torch_train_row "$v" 1 torch_train_1t "$round"
      done
    done
    $py "$table" merge "$out/ours-$prog.json" "${parts[@]}"
    if [[ ${#parts_1t[@]} -gt 0 ]]; then
      ours_1t="$out/ours-$prog-1thread.json"
      $py "$table" merge "$ours_1t" "${parts_1t[@]}"
    fi
  else
    run_ours "$prog" "$out/ours-$prog.json" "$threads" "${filter:-.}"
  fi
  ours+=("$out/ours-$prog.json")
done
[[ ${#ours[@]} -gt 0 ]] || { echo "$me: no benchmark matches --filter '$filter'" >&2; exit 1; }

# --- PyTorch ----------------------------------------------------------------------------------
if [[ $with_pytorch -eq 1 ]]; then
  echo "== PyTorch ($threads threads; its train rows ran beside ours)"
  $py "$torch_bench" run --threads "$threads" "${torch_time[@]}" "${torch_filter[@]}" --filter '^(?!train/)' \
    --out "$out/parts/pytorch-rest.json"
  $py "$table" merge "$out/pytorch.json" "$out/parts/pytorch-rest.json" "${torch_train[@]}"
  table_args+=(--pytorch "$out/pytorch.json")
  if [[ ${#torch_train_1t[@]} -gt 0 ]]; then
    $py "$table" merge "$out/pytorch-train-1thread.json" "${torch_train_1t[@]}"
    table_args+=(--pytorch-1t "$out/pytorch-train-1thread.json")
  fi
fi

# --- the tables -------------------------------------------------------------------------------
[[ -z $ours_1t ]] || table_args+=(--ours-1t "$ours_1t")
echo
if [[ $quick -eq 0 && -z $filter ]]; then
  # A full run: the results page of the repository, with the compiler that built our side.
  cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null | head -n 1)
  compiler=$("${cxx:-c++}" --version 2>/dev/null | head -n 1 || true)
  arch=$(sed -n 's/^MLA_ARCH:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null | head -n 1)
  compiler+=", -march=${arch:-(compiler default)}"
  table_args+=(--doc "$root/docs" --command "$command_line" --compiler "$compiler")
fi
$py "$table" table --ours "${ours[@]}" "${table_args[@]}" --threads "$threads" --markdown "$out/table.md"
echo
echo "JSON and table.md in $out"
