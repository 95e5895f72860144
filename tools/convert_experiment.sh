#!/usr/bin/env bash
# tools/convert_experiment.sh — what converting a trained MHA model into MLA costs, against MLA,
# GQA and MQA trained from scratch at the same cache size (docs/conversion.md is its output).
#
#   tools/convert_experiment.sh [--steps N] [--threads N] [--out DIR] [--doc FILE]
#
# After tools/prepare_for_use.sh (its build/release programs and data/ token files):
#   1. MHA with full RoPE, trained as the default run is (d 256, 8 heads, 4 layers, seq 256,
#      batch 8) for --steps N (default 300).
#   2. convert_to_mla at the kv_rank that gives 50%, 25% and 12.5% of its KV-cache bytes per
#      token (rope dim 16), by --method svd and pca, calibrated on the first 32 windows of
#      data/train.bin; each then fine-tuned (train_model --init-from, lr 3e-4) for 2% and 10%
#      of the MHA run's tokens.
#   3. From scratch for N + 10% steps (the MHA run plus the longer fine-tuning): MLA at each of
#      those kv_ranks, GQA with 4 and 2 kv heads and MQA (the same three cache sizes), and MHA.
#   Every model is scored on all of data/val.bin. Results go to DIR/results.csv (default
#   runs/convert), one row per model as it finishes; a re-run skips what is done and resumes
#   an interrupted training. At the end: --doc (default docs/conversion.md) and
#   docs/conversion.png (gnuplot), perplexity against cache bytes per token.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STEPS=300 THREADS="" OUT=runs/convert DOC=docs/conversion.md
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
    --threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --doc) DOC=${2:?--doc needs a file}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "convert_experiment: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || { echo "convert_experiment: --steps $STEPS is not a positive number" >&2; exit 2; }
BIN=${MLA_BUILD_DIR:-build/release}/examples
DATA=${MLA_DATA_DIR:-data}
for f in "$BIN/train_model" "$BIN/convert_to_mla" "$BIN/eval_model" "$DATA/train.bin" "$DATA/val.bin"; do
  [[ -e $f ]] || { echo "convert_experiment: $f is missing: run tools/prepare_for_use.sh first" >&2; exit 1; }
done
threads=(); [[ -n $THREADS ]] && threads=(--threads "$THREADS")
mkdir -p "$OUT"
CSV=$OUT/results.csv
[[ -s $CSV ]] || echo "model,method,kv_rank,cache_bytes,finetune_steps,train_tokens,val_loss,val_ppl" >"$CSV"

model=(--d-model 256 --heads 8 --layers 4 --seq-len 256 --batch 8)
tokens_per_step=$((8 * 256))
long=$((STEPS + (STEPS + 9) / 10))                       # the run plus 10%
finetunes=($(((STEPS + 49) / 50)) $(((STEPS + 9) / 10)))  # 2% and 10% of its steps
rope=16
mha_floats=$((2 * 8 * 32))                                  # per layer: K and V of 8 heads of 32
ranks=($((mha_floats / 2 - rope)) $((mha_floats / 4 - rope)) $((mha_floats / 8 - rope)))
kv_heads=(4 2 1)

done_row() { grep -q "^$1,$2,$3,[0-9]*,$4," "$CSV"; }
# row NAME METHOD RANK FT_STEPS TOKENS CHECKPOINT: scores the checkpoint on val and appends a row.
row() {
  local line bytes loss ppl
  line=$("$BIN/eval_model" --compare "$6" --data "$DATA/val.bin" "${threads[@]}" | tail -n 1)
  IFS='|' read -r _ _ _ _ bytes _ loss ppl _ <<<"$line"
  bytes=${bytes// /} loss=${loss// /} ppl=${ppl// /}
  [[ $bytes =~ ^[0-9]+$ && -n $loss ]] || { echo "convert_experiment: cannot read eval_model's row: $line" >&2; exit 1; }
  echo "$1,$2,$3,$bytes,$4,$5,$loss,$ppl" >>"$CSV"
  echo "  $1 $2 rank $3 +$4 steps: cache $bytes bytes/token, val perplexity $ppl"
}
# train DIR STEPS ARGS...: trains (or resumes, or finds done) a run in DIR.
train() {
  local dir=$1 steps=$2
  shift 2
  if [[ -s $dir/model.safetensors && -f $dir/run.json ]]; then
    "$BIN/train_model" --resume "$dir" --steps "$steps" "${threads[@]}" >"$dir.log" 2>&1
  else
    "$BIN/train_model" --train "$DATA/train.bin" --val "$DATA/val.bin" --steps "$steps" --out "$dir" \
      --save-every 50 --eval-every 100 "${threads[@]}" "$@" >"$dir.log" 2>&1
  fi
}

start=$SECONDS
echo "== MHA, full rope, $STEPS steps"
train "$OUT/mha" "$STEPS" "${model[@]}" --attn mha --rope full
done_row mha - 0 0 || row mha - 0 0 $((STEPS * tokens_per_step)) "$OUT/mha/model.safetensors"

for method in svd pca; do
  for rank in "${ranks[@]}"; do
    echo "== convert_to_mla --method $method --kv-rank $rank"
    conv=$OUT/mla_${method}_$rank.safetensors
    [[ -s $conv ]] || "$BIN/convert_to_mla" --checkpoint "$OUT/mha/model.safetensors" --out "$conv" --kv-rank $rank \
      --rope-dim $rope --method $method --calibration "$DATA/train.bin" --calibration-windows 32 "${threads[@]}" \
      >"$conv.log"
    done_row converted $method $rank 0 || row converted $method $rank 0 $((STEPS * tokens_per_step)) "$conv"
    for ft in "${finetunes[@]}"; do
      done_row converted $method $rank $ft && continue
      dir=$OUT/ft_${method}_${rank}_$ft
      if [[ -s $dir/model.safetensors && -f $dir/run.json ]]; then
        "$BIN/train_model" --resume "$dir" "${threads[@]}" >"$dir.log" 2>&1
      else
        "$BIN/train_model" --init-from "$conv" --train "$DATA/train.bin" --seq-len 256 --batch 8 --steps $ft \
          --lr 3e-4 --out "$dir" "${threads[@]}" >"$dir.log" 2>&1
      fi
      row converted $method $rank $ft $(((STEPS + ft) * tokens_per_step)) "$dir/model.safetensors"
    done
  done
done

echo "== from scratch, $long steps"
for i in 0 1 2; do
  dir=$OUT/scratch_mla_${ranks[$i]}
  done_row mla scratch ${ranks[$i]} 0 ||
    { train "$dir" "$long" "${model[@]}" --attn mla --kv-rank ${ranks[$i]} --rope-dim $rope &&
      row mla scratch ${ranks[$i]} 0 $((long * tokens_per_step)) "$dir/model.safetensors"; }
  g=${kv_heads[$i]} name=$([[ ${kv_heads[$i]} -eq 1 ]] && echo mqa || echo gqa${kv_heads[$i]})
  dir=$OUT/scratch_$name
  done_row "$name" scratch 0 0 || {
    if [[ $g -eq 1 ]]; then train "$dir" "$long" "${model[@]}" --attn mqa --rope full
    else train "$dir" "$long" "${model[@]}" --attn gqa --kv-heads "$g" --rope full; fi
    row "$name" scratch 0 0 $((long * tokens_per_step)) "$dir/model.safetensors"
  }
done
done_row mha scratch 0 0 ||
  { train "$OUT/scratch_mha" "$long" "${model[@]}" --attn mha --rope full &&
    row mha scratch 0 0 $((long * tokens_per_step)) "$OUT/scratch_mha/model.safetensors"; }
echo "== all runs done in $(((SECONDS - start) / 60)) min; writing $DOC"
python3 "$ROOT/tools/lib/convert_report.py" "$CSV" "$DOC" "$STEPS" "${finetunes[*]}" "$long"
