#!/usr/bin/env bash
# tools/bench_data_parallel.sh [--steps K] [--rounds R] [--quick] [--out DIR] — what data-parallel
# training costs on this machine, and what it would cost on a cluster.
#
# On a fresh Debian 12 machine: installs what is missing (apt-get, as root), builds bench_allreduce
# and train_model (Release, build/bench), and needs data/train.bin (tools/prepare_for_use.sh
# writes it). Then, in one run:
#   1. bench_allreduce under `mpirun -np 2`: the rank-order all-reduce of train_model against
#      MPI_Allreduce(MPI_SUM), on the default model's gradient buffer and two larger ones;
#   2. the default model trained K steps (default 20) by one process at --threads 2 --accum 2
#      and by `mpirun -np 2` at --threads 1 (the same micro-batches: the checkpoints must be the
#      same bytes), R rounds (default 3) alternating, each side's median tokens/s;
#   3. DIR/data_parallel.md (default build/bench/data_parallel): both tables, and the all-reduce
#      of a ring at 8 and 64 machines on 10 and 100 Gb/s networks for the default model and a
#      1B-parameter one, against the step time this machine's measured rate implies. A full
#      run (no --quick) also writes docs/data_parallel.md.
#   --quick  3 steps, 1 round, 3 all-reduce iterations: a smoke test, not numbers to quote
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=tools/bench_data_parallel.sh
command_line="$me${*:+ $*}"
usage_error() { echo "$me: $*" >&2; exit 2; }
steps=20 rounds=3 quick=0 out="$root/build/bench/data_parallel" iterations=30
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps|--rounds|--out)
      [[ $# -ge 2 ]] || usage_error "$1 needs a value"
      case "$1" in --steps) steps=$2 ;; --rounds) rounds=$2 ;; --out) out=$2 ;; esac
      shift ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$1' (expected --steps K, --rounds R, --quick, --out DIR or --help)" ;;
  esac
  shift
done
[[ $steps =~ ^[1-9][0-9]*$ ]] || usage_error "--steps '$steps' must be a positive integer"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage_error "--rounds '$rounds' must be a positive integer"
[[ $quick -eq 0 ]] || { steps=3 rounds=1 iterations=3; }
data="$root/data/train.bin"
[[ -s $data ]] || { echo "$me: $data is missing: run tools/prepare_for_use.sh first (it writes it)" >&2; exit 1; }

# shellcheck source=tools/lib/packages.sh
source "$root/tools/lib/packages.sh"
mla_require_packages build-essential cmake ninja-build pkg-config libeigen3-dev nlohmann-json3-dev libbenchmark-dev \
  libcli11-dev libsentencepiece-dev libomp-dev libopenmpi-dev openmpi-bin python3
build="$root/build/bench"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_TESTS=OFF -DMLA_BUILD_BENCHMARKS=ON \
  -DMLA_BUILD_EXAMPLES=ON -DMLA_ENABLE_MPI=ON > /dev/null
cmake --build "$build" -j "$(nproc)" --target bench_allreduce train_model
[[ -x $build/benchmarks/bench_allreduce ]] || { echo "$me: bench_allreduce was not built (is MPI found?)" >&2; exit 1; }

if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
rm -rf "$out"
mkdir -p "$out"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "== the all-reduce, 2 ranks"
mpirun -np 2 --bind-to core "$build/benchmarks/bench_allreduce" --iterations $iterations \
  --benchmark_out="$out/allreduce.json" --benchmark_out_format=json

# tokens/s of one run: the rate on train_model's last "N steps in ..., X tokens/s" line.
rate() { sed -nE 's/^train_model: [0-9]+ steps in [^,]+, ([0-9]+) tokens\/s.*/\1/p' "$1" | tail -n 1; }
flags=(--train "$data" --steps "$steps" --eval-every 1000000 --seed 1)
: > "$out/rates.csv"
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: one process at --threads 2 --accum 2, then mpirun -np 2 at --threads 1"
  "$build/examples/train_model" "${flags[@]}" --threads 2 --accum 2 --out "$out/one" > "$out/one.txt"
  mpirun -np 2 --bind-to core "$build/examples/train_model" "${flags[@]}" --threads 1 --out "$out/two" > "$out/two.txt"
  identical=no
  cmp -s "$out/one/model.safetensors" "$out/two/model.safetensors" && identical=yes
  echo "one,$(rate "$out/one.txt"),$identical" >> "$out/rates.csv"
  echo "two,$(rate "$out/two.txt"),$identical" >> "$out/rates.csv"
  tail -n 2 "$out/rates.csv"
done
parameters=$(sed -nE 's/.* ([0-9]+) parameters, .*/\1/p' "$out/one.txt" | head -n 1)
tokens_per_step=$(sed -nE 's/^train_model: ([0-9]+) tokens\/step.*/\1/p' "$out/one.txt" | head -n 1)

cpu=$(lscpu | sed -nE 's/^Model name: +//p' | head -n 1)
docs=""
[[ $quick -eq 1 ]] || docs="$root/docs/data_parallel.md"
python3 "$root/tools/lib/data_parallel_report.py" --allreduce "$out/allreduce.json" --rates "$out/rates.csv" \
  --parameters "$parameters" --tokens-per-step "$tokens_per_step" --steps "$steps" \
  --machine "$cpu, $(nproc) cores, Open MPI $(mpirun --version | sed -nE 's/.* ([0-9.]+)$/\1/p' | head -n 1)" \
  --command "$command_line" --date "$started" --out "$out/data_parallel.md" ${docs:+--docs "$docs"}
cat "$out/data_parallel.md"
