#!/usr/bin/env bash
# tools/cache_quality.sh — what a bf16 or int8 KV cache costs each variant of a study: for the
# first seed's model of every variant tools/study.sh trained, cache_quality scores the validation
# windows token by token through an f32, a bf16 and an int8 cache, and continues a few prompts
# greedily with each; one table of all of it.
#
#   tools/cache_quality.sh [--study DIR] [--val FILE.bin] [--max-windows N] [--prompts P]
#                          [--prompt-len N] [--doc FILE] [--bin DIR]
#
# Defaults: --study runs/study, --val data/val.bin, the first 64 windows, 4 prompts of 16 tokens
# continued to the model's max_seq_len, programs from build/release/examples. Writes
# DIR/cache_quality.md (and FILE with --doc): per variant and cache dtype, bytes per token, the
# validation loss and perplexity through the cache, its change from f32, and the greedy tokens
# that agree with f32's before the first difference.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=tools/cache_quality.sh
usage_error() { echo "$me: $*" >&2; exit 2; }
STUDY=$ROOT/runs/study VAL=$ROOT/data/val.bin WINDOWS=64 PROMPTS=4 PROMPT_LEN=16 DOC="" BIN=${MLA_BUILD_DIR:-$ROOT/build/release}/examples
command_line="$me${*:+ $*}"
while [[ $# -gt 0 ]]; do
  [[ $1 == -h || $1 == --help ]] && { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0; }
  [[ $# -ge 2 ]] || usage_error "$1 needs a value (see --help)"
  case "$1" in
    --study) STUDY=$2 ;; --val) VAL=$2 ;; --max-windows) WINDOWS=$2 ;; --prompts) PROMPTS=$2 ;; --prompt-len) PROMPT_LEN=$2 ;;
    --doc) DOC=$2 ;; --bin) BIN=$2 ;;
    *) usage_error "unknown argument '$1' (see --help)" ;;
  esac
  shift 2
done
[[ $WINDOWS =~ ^[1-9][0-9]*$ ]] || usage_error "--max-windows '$WINDOWS' must be a positive integer"
[[ $PROMPTS =~ ^[1-9][0-9]*$ ]] || usage_error "--prompts '$PROMPTS' must be a positive integer"
[[ $PROMPT_LEN =~ ^[1-9][0-9]*$ ]] || usage_error "--prompt-len '$PROMPT_LEN' must be a positive integer"
[[ -x $BIN/cache_quality ]] || { echo "$me: $BIN/cache_quality is missing: build the examples first" >&2; exit 1; }
[[ -f $VAL ]] || { echo "$me: $VAL is missing: run tools/prepare_for_use.sh first" >&2; exit 1; }

# The study's variants in its order, each with a trained first seed.
order=(mha-nope mha mha-decoupled mqa-nope mqa gqa mla-nope mla mla-ds)
declare -A names=([mha-nope]="MHA, no RoPE" [mha]="MHA, RoPE" [mha-decoupled]="MHA, decoupled RoPE"
  [mqa-nope]="MQA, no RoPE" [mqa]="MQA, RoPE" [gqa]="GQA (2 kv heads), RoPE" [mla-nope]="MLA, no RoPE"
  [mla]="MLA, decoupled RoPE" [mla-ds]="MLA, DeepSeek-V2 proportions")
found=()
for v in "${order[@]}"; do
  first=$(ls -d "$STUDY/runs/$v"/seed* 2> /dev/null | sort -V | head -n 1 || true)
  [[ -n $first && -f $first/model.safetensors && -f $first/score.json ]] && found+=("$v:$first")
done
[[ ${#found[@]} -gt 0 ]] || { echo "$me: $STUDY holds no scored run: run tools/study.sh first" >&2; exit 1; }

table=$(mktemp)
trap 'rm -f "$table"' EXIT
for entry in "${found[@]}"; do
  v=${entry%%:*} run=${entry#*:}
  echo "$v ($(basename "$run")): scoring through f32, bf16 and int8 caches" >&2
  "$BIN/cache_quality" --checkpoint "$run/model.safetensors" --data "$VAL" --max-windows "$WINDOWS" \
    --prompts "$PROMPTS" --prompt-len "$PROMPT_LEN" | tee /dev/stderr | awk -v name="${names[$v]}" -v prompts="$PROMPTS" '
      function commas(n) { while (n ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", n); return n }
      /^dtype=/ {
        for (i = 1; i <= NF; ++i) { split($i, kv, "="); f[kv[1]] = kv[2] }
        change = f["dtype"] == "f32" ? "–" : sprintf("%+.2f%%", f["vs_f32"])
        agree = f["dtype"] == "f32" ? "–" : f["agreement"] == 1 ? "100%" : \
                sprintf("%.0f%% (first at %d)", 100 * f["agreement"], f["first_difference"])
        printf "| %s | %s | %s | %.4f | %.2f | %s | %s |\n", name, f["dtype"], commas(f["cache_bytes_per_token"]),
               f["loss"], f["perplexity"], change, agree
      }' >> "$table"
done

machine="$(lscpu | sed -nE 's/^Model name: +//p' | head -n 1), $(nproc) cores"
report=$STUDY/cache_quality.md
{
  echo "# What a quantized KV cache costs"
  echo
  echo "Measured by \`$command_line\` ($(date -u '+%Y-%m-%d %H:%M UTC')); machine: $machine. Each variant's"
  echo "first-seed model from \`$STUDY\`; the first $WINDOWS validation windows scored token by token"
  echo "through the cache (\`eval_model --through-cache\`), and $PROMPTS prompts of $PROMPT_LEN tokens of the validation file"
  echo "continued greedily to the model's context. bf16: the float's top 16 bits, rounded to nearest"
  echo "even; int8: one float scale per 64 values of a cached row (MLA keeps its RoPE key in bf16)."
  echo "Agreement: the share of the greedy tokens generated before the first that differs from f32's"
  echo "(and the earliest position where one differs)."
  echo
  echo "| variant | cache | bytes/token | loss through the cache | perplexity | vs f32 | greedy agreement with f32 |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  cat "$table"
} > "$report.tmp"
mv "$report.tmp" "$report"
[[ -z $DOC ]] || cp "$report" "$DOC"
echo "wrote $report${DOC:+ and $DOC}" >&2
