#!/usr/bin/env bash
# tests/e2e/run.sh BUILD_DIR SOURCE_DIR WORK_DIR — the pipeline as a new user runs it, on the
# small corpus in tests/data: tokenizer and token files, 20 training steps, a stopped and
# resumed run that must end with the same bytes, evaluation, conversion to MLA and its
# fine-tuning, generation, and the bad inputs of the pipeline issue (each: one line on stderr,
# a non-zero exit, no partial file left).
set -euo pipefail
bin=$1/examples src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "e2e: $*" >&2; exit 1; }
step() { echo "== $*"; }

# Runs a command that must fail: non-zero exit, exactly one line on stderr that matches $1.
# The exit status is left in $error_rc.
expect_error() {
  local pattern=$1
  shift
  local rc=0
  "$@" > out.txt 2> err.txt || rc=$?
  error_rc=$rc
  [[ $rc -ne 0 ]] || fail "expected failure, got success: $*"
  [[ $rc -lt 128 ]] || fail "crashed (exit $rc): $*"
  [[ $(wc -l < err.txt) -eq 1 ]] || { cat err.txt >&2; fail "expected one line on stderr: $*"; }
  grep -qiE "$pattern" err.txt || { cat err.txt >&2; fail "stderr does not mention '$pattern': $*"; }
  echo "   ok: $(cat err.txt)"
}
no_temp_files() { ! find "$@" -name '.*.tmp.*' | grep -q . || fail "temporary files left in $*"; }

step "prepare_data"
vocab=320
"$bin/prepare_data" --corpus "$src/tests/data/tiny_corpus.txt" --out data --vocab-size $vocab --val-fraction 0.1
for f in data/tokenizer.model data/train.bin data/val.bin; do [[ -s $f ]] || fail "missing $f"; done

common=(--train data/train.bin --val data/val.bin --vocab-size $vocab --d-model 32 --heads 2 --layers 1
        --seq-len 16 --max-seq-len 64 --batch 4 --eval-every 10 --seed 7 --threads 2)
step "train_model: 20 steps, and 10 + resume 10"
"$bin/train_model" "${common[@]}" --steps 20 --attn mla --out run_a > /dev/null
"$bin/train_model" "${common[@]}" --steps 20 --attn mla --out run_b --stop-after 10 > /dev/null
"$bin/train_model" --resume run_b > /dev/null
cmp run_a/model.safetensors run_b/model.safetensors || fail "a resumed run differs from an uninterrupted one"
[[ -s run_a/metrics.csv ]] || fail "no metrics.csv"
no_temp_files run_a run_b

step "eval_model"
"$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin | tail -n 1 | tee eval.txt
grep -qE '^loss=[0-9.]+ perplexity=[0-9.]+ tokens=[0-9]+$' eval.txt || fail "eval_model's last line breaks the contract"
"$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin --json | tail -n 1 > eval.json
python3 -c 'import json,sys; j=json.load(open("eval.json")); assert {"loss","perplexity","tokens"} <= set(j), j' ||
  fail "eval_model --json's last line is not the contract's object"

step "train_model --latent-norm: rmsnorm and none train, evaluate and say so"
for norm in rmsnorm none; do
  "$bin/train_model" "${common[@]}" --steps 4 --attn mla --latent-norm $norm --out run_$norm > /dev/null
  "$bin/eval_model" --checkpoint run_$norm/model.safetensors --data data/val.bin > eval_$norm.txt
  grep -q "latent norm $norm" eval_$norm.txt || fail "eval_model does not name latent norm $norm"
  grep -qE '^loss=[0-9.]+ ' eval_$norm.txt || fail "a $norm model does not evaluate"
done
expect_error "latent-norm" "$bin/train_model" "${common[@]}" --steps 4 --attn gqa --latent-norm rmsnorm --out run_x
expect_error "latent-norm" "$bin/train_model" "${common[@]}" --steps 4 --attn mla --latent-norm groupnorm --out run_x

step "convert_to_mla: exact at full rank, fine-tuned with --init-from, bad input refused"
"$bin/train_model" "${common[@]}" --steps 10 --attn mha --rope none --out run_mha > /dev/null
# Rank 32 = d_model is the largest keys and values can have: exact, at half the cache.
"$bin/convert_to_mla" --checkpoint run_mha/model.safetensors --out converted.safetensors --kv-rank 32 \
  --calibration data/val.bin --method pca --seq-len 16 > convert.txt
tail -n 1 convert.txt | grep -qE '^cache_bytes_before=256 cache_bytes_after=128 loss_before=[0-9.]+ loss_after=[0-9.]+$' ||
  { cat convert.txt; fail "convert_to_mla's last line"; }
for ckpt in run_mha/model.safetensors converted.safetensors; do
  "$bin/eval_model" --checkpoint $ckpt --data data/val.bin --seq-len 16 | tail -n 1 > "$ckpt.eval"
done
python3 -c 'import sys; a, b = (float(open(p).read().split()[0][5:]) for p in sys.argv[1:]); assert abs(a - b) <= 1e-5 * a, (a, b)' \
  run_mha/model.safetensors.eval converted.safetensors.eval || fail "the exact conversion evaluates to another loss"
"$bin/train_model" --init-from converted.safetensors --train data/train.bin --val data/val.bin --seq-len 16 \
  --batch 4 --steps 6 --lr 3e-4 --threads 2 --out run_ft > /dev/null
"$bin/eval_model" --checkpoint run_ft/model.safetensors --data data/val.bin | grep -q "latent norm none" ||
  fail "the fine-tuned model is not the converted MLA"
"$bin/train_model" --init-from converted.safetensors --train data/train.bin --seq-len 16 --batch 4 --steps 6 \
  --lr 3e-4 --threads 2 --out run_ft2 --stop-after 3 > /dev/null
"$bin/train_model" --resume run_ft2 > /dev/null
cmp run_ft/model.safetensors run_ft2/model.safetensors || fail "a resumed --init-from run differs"
expect_error "d-model.*init-from" "$bin/train_model" --init-from converted.safetensors --train data/train.bin \
  --d-model 64 --out run_x
expect_error "mla attention already" "$bin/convert_to_mla" --checkpoint converted.safetensors --out x.safetensors --kv-rank 8
expect_error "kv_rank 33.*between 1 and 32" "$bin/convert_to_mla" --checkpoint run_mha/model.safetensors \
  --out x.safetensors --kv-rank 33
expect_error "rope_dim 4.*no rope" "$bin/convert_to_mla" --checkpoint run_mha/model.safetensors --out x.safetensors \
  --kv-rank 8 --rope-dim 4
expect_error "pca.*calibration" "$bin/convert_to_mla" --checkpoint run_mha/model.safetensors --out x.safetensors \
  --kv-rank 8 --method pca
expect_error "missing.bin" "$bin/convert_to_mla" --checkpoint run_mha/model.safetensors --out x.safetensors \
  --kv-rank 8 --calibration missing.bin
expect_error "input checkpoint" "$bin/convert_to_mla" --checkpoint run_mha/model.safetensors --out run_mha/../run_mha/model.safetensors \
  --kv-rank 8
[[ ! -e x.safetensors && ! -e run_x ]] || fail "a refused conversion or run left a file"
no_temp_files .

step "generate"
"$bin/generate" --checkpoint run_a/model.safetensors --tokenizer data/tokenizer.model --prompt "The river" \
  --tokens 12 --temperature 0 > gen.txt
grep -qi "bytes" gen.txt || fail "generate does not report the cache size"

step "quantized caches: eval_model --through-cache and generate --cache-dtype"
for dtype in f32 bf16 int8; do
  "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin --through-cache --cache-dtype $dtype |
    tail -n 1 > through_$dtype.txt
done
# f32 through the cache is the windowed loss up to float rounding; bf16 and int8 stay near it.
python3 - eval.txt through_f32.txt through_bf16.txt through_int8.txt <<'PY' || fail "--through-cache losses"
import sys
loss = [float(open(p).read().split()[0][5:]) for p in sys.argv[1:]]
assert abs(loss[1] - loss[0]) <= 1e-5 * loss[0], loss
assert all(abs(x - loss[0]) <= 1e-2 * loss[0] for x in loss[2:]), loss
PY
"$bin/generate" --checkpoint run_a/model.safetensors --tokenizer data/tokenizer.model --prompt "The river" \
  --tokens 8 --cache-dtype int8 > gen_int8.txt
grep -q "^KV cache (latent, int8): " gen_int8.txt || fail "generate --cache-dtype int8 does not say so"
"$bin/cache_quality" --checkpoint run_a/model.safetensors --data data/val.bin --max-windows 2 --prompts 2 \
  --tokens 8 > quality.txt
grep -qE '^dtype=int8 cache_bytes_per_token=[0-9]+ loss=[0-9.]+ perplexity=[0-9.]+ vs_f32=[-+][0-9.]+% agreement=[0-9.]+ first_difference=[0-9]+$' \
  quality.txt || { cat quality.txt; fail "cache_quality's int8 line"; }
grep -q '^dtype=f32 .* agreement=1.0000 first_difference=8$' quality.txt || fail "f32 does not agree with itself"
expect_error "cache-dtype" "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin --through-cache \
  --cache-dtype int4
expect_error "through-cache" "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin \
  --cache-dtype int8

step "bad input"
head -c 1000 run_a/model.safetensors > truncated.safetensors
printf 'not a checkpoint at all' > garbage.safetensors
expect_error "missing.safetensors" "$bin/eval_model" --checkpoint missing.safetensors --data data/val.bin
expect_error "truncated" "$bin/eval_model" --checkpoint truncated.safetensors --data data/val.bin
expect_error "garbage|header" "$bin/eval_model" --checkpoint garbage.safetensors --data data/val.bin
head -c 1500 data/val.bin > wrong_size.bin
expect_error "size|match" "$bin/eval_model" --checkpoint run_a/model.safetensors --data wrong_size.bin
python3 -c 'import sys; d=bytearray(open("data/val.bin","rb").read()); d[0]=0; open("bad_magic.bin","wb").write(d)'
expect_error "magic" "$bin/eval_model" --checkpoint run_a/model.safetensors --data bad_magic.bin
python3 -c 'import sys; d=bytearray(open("data/val.bin","rb").read()); d[1024:1026]=(65000).to_bytes(2,"little"); open("big_id.bin","wb").write(d)'
expect_error "65000|vocab" "$bin/eval_model" --checkpoint run_a/model.safetensors --data big_id.bin
expect_error "seq|max_seq_len" "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin --seq-len 999
expect_error "attn|xyz" "$bin/train_model" "${common[@]}" --attn xyz --out run_x
expect_error "seq-len|max" "$bin/train_model" --train data/train.bin --vocab-size $vocab --d-model 32 --heads 2 \
  --layers 1 --seq-len 128 --max-seq-len 64 --out run_x
[[ ! -e run_x ]] || fail "a refused run left its output folder"
: > empty.txt
expect_error "empty" "$bin/prepare_data" --corpus empty.txt --out data_x
head -c 3000 "$bin/prepare_data" > binary.txt
expect_error "binary|UTF-8|NUL" "$bin/prepare_data" --corpus binary.txt --out data_x
[[ ! -e data_x/train.bin ]] || fail "a refused corpus left token files"
touch not_a_folder
expect_error "not_a_folder" "$bin/train_model" "${common[@]}" --out not_a_folder/run

step "--device"
expect_error "device.*bogus|bogus.*cpu" "$bin/train_model" "${common[@]}" --out run_dev --device bogus
expect_error "device.*bogus|bogus.*cpu" "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin \
  --device bogus
expect_error "device.*bogus|bogus.*cpu" "$bin/generate" --checkpoint run_a/model.safetensors \
  --tokenizer data/tokenizer.model --prompt "The river" --device bogus
# --device cuda where it cannot run: one line naming why, nothing on stdout, no output folder.
# Without the CUDA backend the status is 2; with it but no GPU, "no CUDA device found".
if grep -qx 'MLA_ENABLE_CUDA:BOOL=ON' "$1/CMakeCache.txt" 2> /dev/null; then
  no_cuda="no CUDA device found" no_cuda_rc=1
else
  no_cuda="no CUDA backend" no_cuda_rc=2
fi
cuda_runs=0
if [[ $no_cuda_rc -eq 1 ]] && "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin \
     --max-windows 1 --device cuda > /dev/null 2>&1; then
  cuda_runs=1
fi
if [[ $cuda_runs -eq 0 ]]; then
  expect_error "^train_model: --device cuda: .*$no_cuda" "$bin/train_model" "${common[@]}" --steps 2 --out run_dev \
    --device cuda
  [[ $error_rc -eq $no_cuda_rc ]] || fail "train_model --device cuda exited $error_rc, not $no_cuda_rc"
  [[ ! -s out.txt ]] || fail "train_model --device cuda printed to stdout before refusing"
  [[ ! -e run_dev ]] || fail "a refused --device cuda run left its output folder"
  cp run_a/model.safetensors before.safetensors
  expect_error "^train_model: --device cuda: .*$no_cuda" "$bin/train_model" --resume run_a --steps 30 --device cuda
  cmp before.safetensors run_a/model.safetensors || fail "a refused --device cuda resume changed the checkpoint"
  expect_error "^eval_model: --device cuda: .*$no_cuda" "$bin/eval_model" --checkpoint run_a/model.safetensors \
    --data data/val.bin --device cuda
  [[ ! -s out.txt ]] || fail "eval_model --device cuda printed to stdout before refusing"
  expect_error "^generate: --device cuda: .*$no_cuda" "$bin/generate" --checkpoint run_a/model.safetensors \
    --tokenizer data/tokenizer.model --prompt "The river" --tokens 12 --temperature 0 --device cuda
  [[ ! -s out.txt ]] || fail "generate --device cuda printed to stdout before refusing"
else
  # A GPU: the same run trains to the same losses, evaluates to the CPU's loss, and generates
  # the same greedy text; a run stopped on the CPU resumes on the GPU.
  "$bin/train_model" "${common[@]}" --steps 20 --attn mla --out run_gpu --device cuda > /dev/null
  "$bin/train_model" "${common[@]}" --steps 20 --attn mla --out run_mixed --stop-after 10 > /dev/null
  "$bin/train_model" --resume run_mixed --device cuda > /dev/null
  python3 - run_a/metrics.csv run_gpu/metrics.csv run_mixed/metrics.csv <<'PY' || fail "--device cuda trains to other losses"
import csv, sys
cpu, *others = [[float(r["train_loss"]) for r in csv.DictReader(open(p))] for p in sys.argv[1:]]
for o in others:
    assert len(o) == len(cpu) and max(abs(a - b) for a, b in zip(cpu, o)) < 1e-3, (cpu, o)
PY
  "$bin/eval_model" --checkpoint run_gpu/model.safetensors --data data/val.bin --device cuda | tail -n 1 > eval_gpu.txt
  grep -qE '^loss=[0-9.]+ perplexity=[0-9.]+ tokens=[0-9]+$' eval_gpu.txt || fail "eval_model --device cuda's last line"
  "$bin/eval_model" --checkpoint run_a/model.safetensors --data data/val.bin --device cuda | tail -n 1 > eval_gpu_a.txt
  python3 -c 'import sys; a, b = (float(open(p).read().split()[0][5:]) for p in sys.argv[1:]); assert abs(a - b) <= 1e-5 * abs(a), (a, b)' \
    eval.txt eval_gpu_a.txt || fail "eval_model --device cuda gives another loss than the CPU"
  "$bin/generate" --checkpoint run_a/model.safetensors --tokenizer data/tokenizer.model --prompt "The river" \
    --tokens 12 --temperature 0 --device cuda > gen_gpu.txt
  cmp <(sed '/^prompt: /,$d' gen.txt) <(sed '/^prompt: /,$d' gen_gpu.txt) || fail "generate --device cuda gives other greedy text"
fi

step "SIGKILL while saving: the previous checkpoint still loads"
"$bin/train_model" "${common[@]}" --steps 1000000 --save-every 1 --out run_k > /dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -s run_k/model.safetensors ]] && break; sleep 0.1; done
sleep 0.7
kill -0 $pid 2> /dev/null || fail "the run to be killed ended by itself"
kill -9 $pid
wait $pid 2> /dev/null || true
[[ -s run_k/model.safetensors ]] || fail "no checkpoint before the kill"
"$bin/eval_model" --checkpoint run_k/model.safetensors --data data/val.bin --max-windows 2 > /dev/null ||
  fail "the checkpoint left by a killed run does not load"
echo "e2e: all passed"
