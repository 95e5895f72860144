#!/usr/bin/env bash
# tests/mpi/train.sh BUILD_DIR SOURCE_DIR WORK_DIR MPIEXEC — train_model data-parallel under
# Open MPI on this machine (--oversubscribe: more ranks than cores):
#   - N ranks with --accum 1 == one process with --accum N, to the bit (the rank-order all-reduce
#     adds the ranks' gradients as mla::GradientSum adds micro-batches), N = 2 and 3, with
#     different --threads per rank and dropout on;
#   - N ranks with --accum A == one process with --accum N*A up to float rounding of the sums;
#   - a run stopped and resumed under mpirun == the uninterrupted one, to the bit;
#   - refusals: a resume under another N, a corrupt token file on one rank, different settings
#     on one rank (the job exits non-zero with one line naming the rank, nothing written);
#   - a rank killed mid-run: the job stops, the last checkpoint is intact and resumes.
set -euo pipefail
bin=$1/examples src=$2 work=$3 mpiexec=$4
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "mpi: $*" >&2; exit 1; }
step() { echo "== $*"; }
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpi() { "$mpiexec" --oversubscribe --bind-to none "$@"; }

"$bin/prepare_data" --corpus "$src/tests/data/tiny_corpus.txt" --out data --vocab-size 320 --val-fraction 0.1 > /dev/null
common=(--train "$PWD/data/train.bin" --val "$PWD/data/val.bin" --vocab-size 320 --d-model 32 --heads 2 --layers 2
        --seq-len 16 --batch 3 --eval-every 5 --seed 11 --dropout 0.1)
tm="$bin/train_model"

# The per-step columns of metrics.csv but the rate: step,tokens,train_loss,val_loss,lr,grad_norm.
columns() { cut -d, -f1-6 "$1/metrics.csv"; }
same_run() {  # same_run A B: the same checkpoint bytes and the same losses and norms, step by step
  cmp "$1/model.safetensors" "$2/model.safetensors" || fail "$1 and $2 end with different weights"
  diff <(columns "$1") <(columns "$2") > /dev/null || fail "$1 and $2 log different losses"
}

step "one process under mpirun -np 1 is the same run as without mpirun"
"$tm" "${common[@]}" --steps 6 --out solo > /dev/null
mpi -np 1 "$tm" "${common[@]}" --steps 6 --out solo_mpi > /dev/null
same_run solo solo_mpi

for n in 2 3; do
  step "-np $n (--threads 1 and 2) == one process with --accum $n, bitwise"
  "$tm" "${common[@]}" --steps 12 --accum $n --threads 2 --out accum$n > /dev/null
  mpi -np 1 "$tm" "${common[@]}" --steps 12 --threads 1 --out np$n : \
         -np $((n - 1)) "$tm" "${common[@]}" --steps 12 --threads 2 --out np$n > np$n.txt
  same_run accum$n np$n
  grep -q "x $n processes" np$n.txt || fail "rank 0 does not say it trains with $n processes"
  [[ $(grep -c "tokens/step" np$n.txt) -eq 1 ]] || fail "more than rank 0 prints"
  ! grep -q '"processes": 1' np$n/run.json || fail "run.json does not hold the processes"
done

step "-np 2 --accum 2 == one process with --accum 4, up to the rounding of the sums, after 20 steps"
"$tm" "${common[@]}" --steps 20 --accum 4 --out accum4 > /dev/null
mpi -np 2 "$tm" "${common[@]}" --steps 20 --accum 2 --threads 1 --out np2x2 > /dev/null
python3 "$src/tests/mpi/compare_weights.py" accum4/model.safetensors np2x2/model.safetensors 1e-5 ||
  fail "-np 2 --accum 2 is not --accum 4"

step "stopped after 5 steps and resumed under mpirun -np 2 == the uninterrupted run, bitwise"
mpi -np 2 "$tm" "${common[@]}" --steps 12 --threads 1 --out resumed --stop-after 5 > stop.txt
grep -q "continue with: mpirun -np 2 train_model --resume" stop.txt || fail "the stop line does not say how to resume"
mpi -np 2 "$tm" --resume resumed --threads 1 > /dev/null
same_run np2 resumed

# Runs a command that must fail: non-zero exit, a line of train_model's on stderr matching $1
# (mpirun adds its own notice), naming the rank where there is one.
expect_error() {
  local pattern=$1
  shift
  local rc=0
  "$@" > out.txt 2> err.txt || rc=$?
  [[ $rc -ne 0 ]] || fail "expected failure, got success: $*"
  [[ $(grep -c '^train_model: ' err.txt) -eq 1 ]] || { cat err.txt >&2; fail "expected one train_model line: $*"; }
  grep '^train_model: ' err.txt | grep -qE "$pattern" || { cat err.txt >&2; fail "stderr does not say '$pattern': $*"; }
  echo "   ok: $(grep '^train_model: ' err.txt)"
}

step "refused: a resume under another number of processes; the checkpoint untouched"
cp resumed/model.safetensors before.safetensors
mpi -np 2 "$tm" "${common[@]}" --steps 12 --threads 1 --out short --stop-after 4 > /dev/null
cp short/model.safetensors short.safetensors
expect_error "^train_model: --resume short: the run was trained by 2 processes; resume it with mpirun -np 2 \(this job has 3\)" mpi -np 3 "$tm" --resume short
expect_error "trained by 2 processes; resume it with mpirun -np 2 \(this job has 1\)" "$tm" --resume short
cmp short/model.safetensors short.safetensors || fail "a refused resume changed the checkpoint"

step "refused: a corrupt token file on rank 1, another --train on rank 1 of a resume; nothing written"
head -c 1001 data/train.bin > corrupt.bin
expect_error "^train_model: rank 1: .*corrupt\.bin" \
  mpi -np 1 "$tm" "${common[@]}" --steps 4 --out bad : -np 1 "$tm" "${common[@]/$PWD\/data\/train.bin/$PWD/corrupt.bin}" --steps 4 --out bad
[[ ! -e bad ]] || fail "a refused job wrote its output folder"
expect_error "^train_model: rank 1: --train .*corrupt\.bin differs from the resumed run's" \
  mpi -np 1 "$tm" --resume short --steps 12 : -np 1 "$tm" --resume short --steps 12 --train "$PWD/corrupt.bin"
cmp short/model.safetensors short.safetensors || fail "a refused resume changed the checkpoint"

step "refused: other settings on rank 2"
expect_error "^train_model: rank 2: --lr 0.002 differs from rank 0's 0.001" \
  mpi -np 2 "$tm" "${common[@]}" --steps 4 --out bad : -np 1 "$tm" "${common[@]}" --steps 4 --out bad --lr 0.002
[[ ! -e bad ]] || fail "a refused job wrote its output folder"

step "a rank killed mid-run: the job stops; the last checkpoint is intact and resumes"
mpi -np 2 "$tm" "${common[@]}" --steps 100000 --save-every 2 --threads 1 --out killed > killed.txt 2> killed.err &
job=$!
for _ in $(seq 200); do [[ -e killed/model.safetensors ]] && break; sleep 0.1; done
[[ -e killed/model.safetensors ]] || { kill $job; fail "no checkpoint after 20 s"; }
victim=""
for pid in $(pgrep -f "$tm .*--out killed"); do
  if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$pid; fi
done
[[ -n $victim ]] || { kill $job; fail "rank 1's process not found"; }
kill -9 "$victim"
rc=0
wait $job || rc=$?
[[ $rc -ne 0 ]] || fail "the job exited 0 after a rank was killed"
grep -qiE "rank 1 .*signal 9|signal 9.*rank 1" killed.err || { cat killed.err >&2; fail "mpirun does not name the killed rank"; }
echo "   ok: $(grep -iE 'signal 9' killed.err | head -n 1)"
mpi -np 2 "$tm" --resume killed --steps "$(($(tail -n 1 killed/metrics.csv | cut -d, -f1) + 2))" --threads 1 > /dev/null ||
  fail "the checkpoint left by the killed job does not resume"
! find killed -name '.*.tmp.*' | grep -q . || fail "temporary files left in killed/"
echo "mpi: all passed"
