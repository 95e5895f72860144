#!/usr/bin/env bash
# tools/prepare_for_use.sh — from a fresh Debian 12 machine to a trained, evaluated model.
#
#   tools/prepare_for_use.sh [--corpus FILE] [--vocab-size V] [--steps N] [--threads N]
#
# Steps (each one is skipped when its result is already there and complete):
#   1. packages   the Debian packages below (apt-get, as root or through sudo)
#   2. build      Release build of the programs in build/release
#   3. corpus     data/corpus.txt: the King James Bible from the bible-kjv package (one verse
#                 per line, verse numbers stripped, chapter headings such as "Genesis 1" kept
#                 as their own lines), or a copy of --corpus FILE (any UTF-8 text)
#   4. data       data/tokenizer.model, data/train.bin, data/val.bin (prepare_data: BPE with
#                 --vocab-size pieces; the last 5% of the lines are the validation tail)
#   5. train      runs/default: an MLA model (d 256, 8 heads, 4 layers, seq 256) for --steps
#                 steps, about 3 minutes on 2 cores; an interrupted run resumes
#   6. evaluate   the validation perplexity (and the unigram baseline) into runs/default/eval.txt
# A failing step stops the script with a line naming the step; fix the cause and re-run.
#
# For tests, environment variables move the outputs and shrink the run:
#   MLA_BUILD_DIR (build/release), MLA_DATA_DIR (data), MLA_RUN_DIR (runs/default),
#   MLA_MODEL_FLAGS (replaces "--d-model 256 --heads 8 --layers 4 --seq-len 256 --batch 8")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CORPUS=""
VOCAB=10000
STEPS=300
THREADS=""
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --corpus) CORPUS=${2:?--corpus needs a file}; shift 2 ;;
    --vocab-size) VOCAB=${2:?--vocab-size needs a number}; shift 2 ;;
    --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
    --threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "prepare_for_use: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$VOCAB" "$STEPS" ${THREADS:+"$THREADS"}; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "prepare_for_use: '$n' is not a positive number" >&2; exit 2; }
done
if [[ -n $CORPUS ]]; then
  [[ -f $CORPUS && -r $CORPUS ]] || { echo "prepare_for_use: --corpus $CORPUS: no such readable file" >&2; exit 2; }
  CORPUS=$(cd "$(dirname "$CORPUS")" && pwd)/$(basename "$CORPUS")
fi

STEP="start"
on_error() {
  echo "prepare_for_use: step \"$STEP\" failed (exit $1); see the messages above, fix the cause and re-run" \
       "(finished steps are skipped)" >&2
}
trap 'on_error $?' ERR
step() { STEP=$1; echo; echo "== $1: $2"; }
BUILD=${MLA_BUILD_DIR:-build/release}
BIN=$BUILD/examples
DATA=${MLA_DATA_DIR:-data}
RUN=${MLA_RUN_DIR:-runs/default}
read -r -a model_flags <<<"${MLA_MODEL_FLAGS:---d-model 256 --heads 8 --layers 4 --seq-len 256 --batch 8}"
threads_flag=(); [[ -n $THREADS ]] && threads_flag=(--threads "$THREADS")

step packages "Debian packages"
source tools/lib/packages.sh
mla_require_packages build-essential cmake ninja-build pkg-config libeigen3-dev nlohmann-json3-dev \
  libcli11-dev libsentencepiece-dev gnuplot-nox bible-kjv bible-kjv-text libopenmpi-dev openmpi-bin
echo "all installed"

step build "Release build in $BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_TESTS=OFF \
  -DMLA_BUILD_BENCHMARKS=OFF -DMLA_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$BUILD"

step corpus "$DATA/corpus.txt"
mkdir -p "$DATA"
if [[ -n $CORPUS ]]; then
  if cmp -s "$CORPUS" "$DATA/corpus.txt"; then
    echo "$DATA/corpus.txt is already a copy of $CORPUS"
  else
    cp "$CORPUS" "$DATA/.corpus.txt.tmp" && mv "$DATA/.corpus.txt.tmp" "$DATA/corpus.txt"
    echo "copied $CORPUS"
  fi
elif [[ -s "$DATA/corpus.txt" ]]; then
  echo "$DATA/corpus.txt exists ($(wc -c <"$DATA/corpus.txt") bytes); delete it to fetch the Bible again"
else
  # -l: one verse per line, however wide; then drop blank lines and the verse numbers.
  bible -l100000 "Gen1:1-Rev22:21" </dev/null | sed -e '/^[[:space:]]*$/d' -e 's/^ *[0-9][0-9]* //' \
    >"$DATA/.corpus.txt.tmp"
  lines=$(wc -l <"$DATA/.corpus.txt.tmp")
  [[ $lines -gt 30000 ]] || { echo "bible printed only $lines lines" >&2; false; }
  mv "$DATA/.corpus.txt.tmp" "$DATA/corpus.txt"
  echo "the King James Bible: $lines lines, $(wc -c <"$DATA/corpus.txt") bytes"
fi

step data "tokenizer and token files"
data_key="$(md5sum <"$DATA/corpus.txt" | cut -d' ' -f1) vocab=$VOCAB"
if [[ -f "$DATA/.prepared" && $(cat "$DATA/.prepared") == "$data_key" && -s "$DATA/tokenizer.model" &&
      -s "$DATA/train.bin" && -s "$DATA/val.bin" ]]; then
  echo "$DATA/tokenizer.model, $DATA/train.bin and $DATA/val.bin are up to date"
else
  rm -f "$DATA/.prepared"
  "$BIN/prepare_data" --corpus "$DATA/corpus.txt" --out "$DATA" --vocab-size "$VOCAB" "${threads_flag[@]}"
  echo "$data_key" >"$DATA/.prepared"
fi

step train "$RUN ($STEPS steps)"
train_key="data=$data_key steps=$STEPS model=${model_flags[*]}"
train_args=(--train "$DATA/train.bin" --val "$DATA/val.bin" --out "$RUN" --attn mla --vocab-size "$VOCAB"
            "${model_flags[@]}" --steps "$STEPS" --save-every 25)
if [[ -f $RUN/.complete && $(cat "$RUN/.complete") == "$train_key" && -s $RUN/model.safetensors ]]; then
  echo "$RUN/model.safetensors is complete"
else
  if [[ -s $RUN/model.safetensors && -f $RUN/.data ]] && [[ $(cat "$RUN/.data") != "$data_key" ]]; then
    echo "$RUN was trained on other data (another corpus or vocabulary); move it away and re-run" >&2
    false
  fi
  rm -f "$RUN/.complete"
  if [[ -s $RUN/model.safetensors && -f $RUN/run.json ]]; then
    echo "resuming the run saved in $RUN"
    "$BIN/train_model" --resume "$RUN" --steps "$STEPS" --save-every 25 "${threads_flag[@]}"
  else
    mkdir -p "$RUN"
    echo "$data_key" >"$RUN/.data"
    "$BIN/train_model" "${train_args[@]}" "${threads_flag[@]}"
  fi
  echo "$train_key" >"$RUN/.complete"
fi

step evaluate "validation perplexity"
if [[ -s $RUN/eval.txt && $RUN/eval.txt -nt $RUN/model.safetensors ]]; then
  cat "$RUN/eval.txt"
else
  "$BIN/eval_model" --checkpoint "$RUN/model.safetensors" --data "$DATA/val.bin" --unigram "$DATA/train.bin" \
    "${threads_flag[@]}" >"$RUN/.eval.txt.tmp"
  mv "$RUN/.eval.txt.tmp" "$RUN/eval.txt"
  cat "$RUN/eval.txt"
fi

STEP="summary"
echo
echo "== done"
echo "  corpus:      $DATA/corpus.txt"
echo "  tokenizer:   $DATA/tokenizer.model ($VOCAB pieces)"
echo "  tokens:      $DATA/train.bin, $DATA/val.bin"
echo "  checkpoint:  $RUN/model.safetensors"
echo "  metrics:     $RUN/metrics.csv"
[[ -f $RUN/loss.png ]] && echo "  loss plot:   $RUN/loss.png"
echo "  evaluation:  $RUN/eval.txt: $(tail -n 1 "$RUN/eval.txt")"
echo "Next: $BIN/generate --checkpoint $RUN/model.safetensors --tokenizer $DATA/tokenizer.model --prompt \"And God said\""
