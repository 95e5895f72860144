#!/usr/bin/env bash
# tools/study.sh — what each attention variant costs and buys: every chosen variant trained with
# several seeds on the same token files, scored on the validation set, and timed (training and
# decoding), with a table, two plots and paired differences from MHA.
#
#   tools/study.sh [--variants LIST|all] [--seeds LIST] [--steps N] [--stop-after K] [--out DIR]
#                  [--doc FILE] [--d-model D] [--heads H] [--layers L] [--seq-len T] [--batch B]
#                  [--train FILE.bin] [--val FILE.bin] [--vocab-size V] [--contexts LIST] [--threads N]
#                  [--no-speed] [--bin DIR]
#
# Variants (comma-separated; `all` = the nine; default mha,gqa,mqa,mla):
#   mha-nope  MHA, no RoPE (learned positions)   mha  MHA, full RoPE   mha-decoupled  MHA, decoupled RoPE
#   mqa-nope  MQA, no RoPE                       mqa  MQA, full RoPE   gqa            GQA, 2 kv heads, full RoPE
#   mla-nope  MLA, no RoPE    mla  MLA, decoupled RoPE (kv_rank 2D/3, rope head_dim/2, q_rank D/2)
#   mla-ds    MLA at DeepSeek-V2's proportions: kv_rank 4 head_dim, rope head_dim/2
# Defaults: seeds 1,2,3; 300 steps; train_model's default model (d 256, 8 heads, 4 layers, windows
# of 256, batch 8) on data/train.bin and data/val.bin (tools/prepare_for_use.sh writes them); decode
# timed at 2048,8192,32768 cached tokens; out runs/study. About 35 minutes on a 2-core machine.
#
# Each run is DIR/runs/VARIANT/seedS: trained by train_model (a checkpoint every 50 steps, the
# validation loss every steps/10), then scored by eval_model on all of --val (score.json). A
# re-run skips scored runs and resumes unfinished ones from their checkpoint (bit-exact), so a
# long study can run in pieces; --stop-after K stops every run at step K this time. Variants and
# seeds may be added to a study later; the other flags are fixed by its first call (DIR/settings).
# When every run of a variant is scored, its speeds are measured once (DIR/speed/VARIANT.txt):
# training tokens/s (the median step of a fresh 12-step run) and decode tokens/s at each context
# (decode_speed, batch 1). Time nothing else meanwhile (--no-speed: not this time; a later call
# measures them). Then, from every scored run:
#   DIR/study.csv   one row per run;  DIR/study.md   per variant: parameters, cache bytes per token,
#                   validation loss and perplexity (mean ± sd over seeds), the paired difference from
#                   MHA with a 95% interval, training and decode tokens/s
#   DIR/loss.png    validation loss against tokens seen, mean and seed band per variant
#   DIR/pareto.png  validation perplexity against KV-cache bytes per token, with error bars
# --doc FILE also writes FILE and its plots beside it (FILE's name with _loss.png, _pareto.png).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=tools/study.sh
usage_error() { echo "$me: $*" >&2; exit 2; }
SPEED=1 VARIANTS=mha,gqa,mqa,mla SEEDS=1,2,3 STEPS=300 STOP_AFTER=0 OUT=$ROOT/runs/study DOC="" THREADS=""
D=256 H=8 L=4 T=256 B=8 V=10000 TRAIN=$ROOT/data/train.bin VAL=$ROOT/data/val.bin CONTEXTS=2048,8192,32768
BIN=${MLA_BUILD_DIR:-$ROOT/build/release}/examples
command_line="$me${*:+ $*}"
while [[ $# -gt 0 ]]; do
  [[ $1 == --no-speed ]] && { SPEED=0; shift; continue; }
  [[ $1 == -h || $1 == --help ]] && { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0; }
  [[ $# -ge 2 ]] || usage_error "$1 needs a value (see --help)"
  case "$1" in
    --variants) VARIANTS=$2 ;; --seeds) SEEDS=$2 ;; --steps) STEPS=$2 ;; --stop-after) STOP_AFTER=$2 ;;
    --out) OUT=$2 ;; --doc) DOC=$2 ;; --threads) THREADS=$2 ;; --bin) BIN=$2 ;;
    --d-model) D=$2 ;; --heads) H=$2 ;; --layers) L=$2 ;; --seq-len) T=$2 ;; --batch) B=$2 ;;
    --train) TRAIN=$2 ;; --val) VAL=$2 ;; --vocab-size) V=$2 ;; --contexts) CONTEXTS=$2 ;;
    *) usage_error "unknown argument '$1' (see --help)" ;;
  esac
  shift 2
done
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 '$2' must be a positive integer"; }
for pair in "--steps $STEPS" "--d-model $D" "--heads $H" "--layers $L" "--seq-len $T" "--batch $B" "--vocab-size $V"; do positive $pair; done
[[ $STOP_AFTER =~ ^[0-9]+$ ]] || usage_error "--stop-after '$STOP_AFTER' must be a step number"
[[ -z $THREADS ]] || positive --threads "$THREADS"
[[ $SEEDS =~ ^[0-9]+(,[0-9]+)*$ ]] || usage_error "--seeds '$SEEDS' must be a comma-separated list of integers"
[[ $CONTEXTS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || usage_error "--contexts '$CONTEXTS' must be a comma-separated list of positive integers"
(( D % H == 0 )) || usage_error "--d-model $D is not a multiple of --heads $H"
head_dim=$((D / H))
all=mha-nope,mha,mha-decoupled,mqa-nope,mqa,gqa,mla-nope,mla,mla-ds
[[ $VARIANTS == all ]] && VARIANTS=$all
IFS=, read -r -a variants <<< "$VARIANTS"
IFS=, read -r -a seeds <<< "$SEEDS"
# flags VARIANT: the variant's train_model flags.
flags() {
  case "$1" in
    mha-nope) echo "--attn mha --rope none" ;;        mha) echo "--attn mha --rope full" ;;
    mha-decoupled) echo "--attn mha --rope decoupled" ;;
    mqa-nope) echo "--attn mqa --rope none" ;;        mqa) echo "--attn mqa --rope full" ;;
    gqa) echo "--attn gqa --kv-heads 2 --rope full" ;;
    mla-nope) echo "--attn mla --rope none" ;;        mla) echo "--attn mla --rope decoupled" ;;
    mla-ds) echo "--attn mla --rope decoupled --kv-rank $((4 * head_dim)) --rope-dim $((head_dim / 2))" ;;
    *) return 1 ;;
  esac
}
for v in "${variants[@]}"; do flags "$v" > /dev/null || usage_error "unknown variant '$v' (expected some of $all, or all)"; done
for f in "$BIN/train_model" "$BIN/eval_model" "$BIN/decode_speed" "$TRAIN" "$VAL"; do
  [[ -e $f ]] || { echo "$me: $f is missing: run tools/prepare_for_use.sh first" >&2; exit 1; }
done
TRAIN=$(realpath "$TRAIN") VAL=$(realpath "$VAL")
threads=(); [[ -n $THREADS ]] && threads=(--threads "$THREADS")

# A study's runs must be comparable: the flags that shape them are fixed by its first call.
mkdir -p "$OUT/runs" "$OUT/speed"
settings="steps=$STEPS vocab=$V d_model=$D heads=$H layers=$L seq_len=$T batch=$B train=$TRAIN val=$VAL"
if [[ -f $OUT/settings ]]; then
  [[ $(cat "$OUT/settings") == "$settings" ]] ||
    { echo "$me: $OUT holds a study of other settings ($(cat "$OUT/settings")); use another --out" >&2; exit 1; }
else
  echo "$settings" > "$OUT/settings"
fi
model=(--vocab-size "$V" --d-model "$D" --heads "$H" --layers "$L" --seq-len "$T" --batch "$B")
eval_every=$(( STEPS >= 10 ? STEPS / 10 : 1 ))

# run VARIANT SEED: trains (fresh or resumed) and scores one run; returns 1 when --stop-after left it unfinished.
run() {
  local dir=$OUT/runs/$1/seed$2 stop=()
  [[ $STOP_AFTER -gt 0 ]] && stop=(--stop-after "$STOP_AFTER")
  if [[ -s $dir/model.safetensors && -f $dir/run.json ]]; then
    local done_steps
    done_steps=$(tail -n 1 "$dir/metrics.csv" | cut -d, -f1)
    if [[ $done_steps -lt $STEPS && ($STOP_AFTER -eq 0 || $done_steps -lt $STOP_AFTER) ]]; then
      "$BIN/train_model" --resume "$dir" "${stop[@]}" "${threads[@]}" > "$dir.log" 2>&1 ||
        { echo "$me: train_model --resume $dir failed (see $dir.log): $(tail -n 1 "$dir.log")" >&2; exit 1; }
    fi
  else
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2046  # flags() is words
    "$BIN/train_model" --train "$TRAIN" --val "$VAL" --steps "$STEPS" --seed "$2" --save-every 50 \
      --eval-every "$eval_every" --out "$dir" "${model[@]}" $(flags "$1") "${stop[@]}" "${threads[@]}" > "$dir.log" 2>&1 ||
      { echo "$me: train_model for $1 seed $2 failed (see $dir.log): $(tail -n 1 "$dir.log")" >&2; exit 1; }
  fi
  [[ $(tail -n 1 "$dir/metrics.csv" | cut -d, -f1) -eq $STEPS ]] || return 1
  "$BIN/eval_model" --checkpoint "$dir/model.safetensors" --data "$VAL" --json "${threads[@]}" > "$dir/eval.txt" 2>&1 ||
    { echo "$me: eval_model on $dir failed: $(tail -n 1 "$dir/eval.txt")" >&2; exit 1; }
  tail -n 1 "$dir/eval.txt" > "$dir/score.json.tmp"
  mv "$dir/score.json.tmp" "$dir/score.json"
}

# Seed by seed, so that a study stopped early has every variant at its first seeds.
total=$(( ${#variants[@]} * ${#seeds[@]} )) i=0 timed=0 timed_seconds=0 unfinished=0
for s in "${seeds[@]}"; do
  for v in "${variants[@]}"; do
    i=$((i + 1))
    if [[ -s $OUT/runs/$v/seed$s/score.json ]]; then
      echo "[$i/$total] $v seed $s: scored, skip"
      continue
    fi
    eta=""
    [[ $timed -gt 0 ]] && eta=", ETA $(( (total - i + 1) * timed_seconds / timed / 60 )) min"
    echo "[$i/$total] $v seed $s: training $STEPS steps$eta"
    start=$SECONDS
    if run "$v" "$s"; then
      timed=$((timed + 1)) timed_seconds=$((timed_seconds + SECONDS - start))
      echo "        $(cat "$OUT/runs/$v/seed$s/score.json") in $((SECONDS - start)) s"
    else
      unfinished=$((unfinished + 1))
      echo "        stopped at step $STOP_AFTER (--stop-after); a later call continues it"
    fi
  done
done

# Speeds, once per variant whose runs are all scored, on the first seed's checkpoint.
IFS=, read -r -a contexts <<< "$CONTEXTS"
for v in "${variants[@]}"; do
  [[ $SPEED -eq 1 && ! -s $OUT/speed/$v.txt ]] || continue
  complete=1
  for s in "${seeds[@]}"; do [[ -s $OUT/runs/$v/seed$s/score.json ]] || complete=0; done
  [[ $complete -eq 1 ]] || continue
  echo "speed of $v: training (12 steps), decoding at $CONTEXTS cached tokens"
  tmp=$OUT/speed/$v.train
  rm -rf "$tmp"
  # shellcheck disable=SC2046
  "$BIN/train_model" --train "$TRAIN" --steps 12 --seed 1 --out "$tmp" "${model[@]}" $(flags "$v") "${threads[@]}" > /dev/null
  train_rate=$(tail -n +4 "$tmp/metrics.csv" | cut -d, -f7 | sort -g | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }')
  decode=$("$BIN/decode_speed" --checkpoint "$OUT/runs/$v/seed${seeds[0]}/model.safetensors" --contexts "$CONTEXTS" "${threads[@]}")
  {
    echo "train_tokens_per_s=$train_rate"
    for c in "${contexts[@]}"; do
      echo "decode_tokens_per_s_$c=$(sed -nE "s/^context=$c .*tokens_per_s=([0-9.]+) .*/\1/p" <<< "$decode")"
    done
  } > "$OUT/speed/$v.txt.tmp"
  mv "$OUT/speed/$v.txt.tmp" "$OUT/speed/$v.txt"
  rm -rf "$tmp"
done

echo "writing $OUT/study.csv, study.md, loss.png, pareto.png${DOC:+ and $DOC}"
python3 "$ROOT/tools/lib/study_report.py" --out "$OUT" --variants "$VARIANTS" --seeds "$SEEDS" --contexts "$CONTEXTS" \
  --command "$command_line" --machine "$(lscpu | sed -nE 's/^Model name: +//p' | head -n 1), $(nproc) cores" \
  ${DOC:+--doc "$DOC"}
[[ $unfinished -eq 0 ]] || echo "$unfinished runs unfinished (--stop-after $STOP_AFTER): the tables hold the scored runs only"
