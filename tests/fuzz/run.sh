#!/usr/bin/env bash
# tests/fuzz/run.sh SOURCE_DIR WORK_DIR SECONDS — builds the checkpoint and token-file fuzzers
# with clang (libFuzzer + ASan + UBSan), seeds them with valid files, and fuzzes each for
# SECONDS. Fails on any crash or sanitizer report.
set -euo pipefail
src=$1 work=$2 seconds=$3
mkdir -p "$work/corpus/tokens"
flags=(-std=c++20 -O1 -g -I"$src/include" -I/usr/include/eigen3 -fno-omit-frame-pointer)
clang++ "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "$src/tests/fuzz/fuzz_checkpoint.cpp" -o "$work/fuzz_checkpoint"
clang++ "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "$src/tests/fuzz/fuzz_tokens.cpp" -o "$work/fuzz_tokens"
clang++ "${flags[@]}" "$src/tests/fuzz/make_corpus.cpp" -o "$work/make_corpus"
"$work/make_corpus" "$work/corpus"
cd "$work"
./fuzz_checkpoint -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
  -print_final_stats=1 -seed=1 corpus 2>&1 | tail -n 8
./fuzz_tokens -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 \
  -print_final_stats=1 -seed=1 corpus/tokens 2>&1 | tail -n 8
