#!/usr/bin/env bash
# tests/study/run.sh BUILD_DIR SOURCE_DIR WORK_DIR — tools/study.sh on a tiny configuration (two
# variants, two seeds, 6 steps of a one-layer model on tests/data's corpus): it writes the CSV,
# the table and both PNGs; the table's means, standard deviations and paired differences are
# those of the CSV's rows; a re-run skips the scored runs; a study run in pieces (--stop-after)
# ends with the same checkpoints as one run straight; a study's settings cannot change; and
# tools/cache_quality.sh tables every variant's model through f32, bf16 and int8 caches.
set -euo pipefail
bin=$1/examples src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "study test: $*" >&2; exit 1; }
"$bin/prepare_data" --corpus "$src/tests/data/tiny_corpus.txt" --out data --vocab-size 320 --val-fraction 0.1 > /dev/null
study=("$src/tools/study.sh" --bin "$bin" --variants mha,mla --seeds 1,2 --steps 6 --vocab-size 320 --d-model 32
       --heads 2 --layers 1 --seq-len 16 --batch 2 --contexts 32,64 --train data/train.bin --val data/val.bin --threads 2)

echo "== a study: files and table"
"${study[@]}" --out a > a.txt
for f in study.csv study.md; do [[ -s a/$f ]] || fail "no $f"; done
for f in loss.png pareto.png; do
  [[ $(head -c 8 "a/$f" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "$f is not a PNG"
done
[[ $(tail -n +2 a/study.csv | wc -l) -eq 4 ]] || fail "study.csv does not hold one row per run"
python3 - a/study.csv a/study.md <<'PY'
import csv, math, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
table = {}
for line in open(sys.argv[2]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) > 8 and cells[1].isdigit():
        table[cells[0]] = cells
names = {"mha": "MHA, RoPE", "mla": "MLA, decoupled RoPE"}
def sd(x):
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))
loss = {v: {int(r["seed"]): float(r["val_loss"]) for r in rows if r["variant"] == v} for v in names}
for v, name in names.items():
    cells = table[name]
    x = list(loss[v].values())
    ppl = [float(r["val_perplexity"]) for r in rows if r["variant"] == v]
    assert cells[4] == f"{sum(x) / len(x):.4f} ± {sd(x):.4f}", (cells[4], x)
    assert cells[5] == f"{sum(ppl) / len(ppl):.2f} ± {sd(ppl):.2f}", (cells[5], ppl)
    assert cells[3] == f"{int(next(r for r in rows if r['variant'] == v)['cache_bytes_per_token']):,}"
d = [loss["mla"][s] - loss["mha"][s] for s in (1, 2)]
half = 12.706 * sd(d) / math.sqrt(2)
assert table[names["mla"]][6] == f"{sum(d) / 2:+.4f} ± {half:.4f}", (table[names["mla"]][6], d)
print("   ok: the table is the CSV's means, deviations and paired difference")
PY

echo "== a re-run skips every scored run"
cp a/runs/mla/seed2/model.safetensors before.safetensors
"${study[@]}" --out a > again.txt
[[ $(grep -c "scored, skip" again.txt) -eq 4 ]] || { cat again.txt; fail "a re-run did not skip the 4 scored runs"; }
cmp a/runs/mla/seed2/model.safetensors before.safetensors || fail "a re-run changed a scored run"

echo "== in pieces: --stop-after 3, then the rest == straight, bitwise"
"${study[@]}" --out b --stop-after 3 > b1.txt
grep -q "4 runs unfinished" b1.txt || { cat b1.txt; fail "--stop-after did not leave the runs unfinished"; }
[[ $(tail -n +2 b/study.csv | wc -l) -eq 0 ]] || fail "unfinished runs reached study.csv"
"${study[@]}" --out b > b2.txt
for r in mha/seed1 mha/seed2 mla/seed1 mla/seed2; do
  cmp "a/runs/$r/model.safetensors" "b/runs/$r/model.safetensors" || fail "$r run in pieces differs from straight"
done
cmp <(cut -d, -f1-9 a/study.csv) <(cut -d, -f1-9 b/study.csv) || fail "the pieces' study.csv differs"

echo "== a study's settings are fixed"
rc=0
"${study[@]}" --out a --steps 7 > bad.txt 2> bad.err || rc=$?
[[ $rc -ne 0 ]] && grep -q "holds a study of other settings" bad.err || fail "a study accepted other settings"
echo "== tools/cache_quality.sh: one row per variant and cache dtype"
"$src/tools/cache_quality.sh" --study a --val data/val.bin --max-windows 2 --prompts 2 --prompt-len 4 --bin "$bin" --doc quality.md \
  2> quality.err || { cat quality.err; fail "cache_quality.sh failed"; }
cmp a/cache_quality.md quality.md || fail "--doc is not the study's cache_quality.md"
python3 - a/study.csv quality.md <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
table = [[c.strip() for c in l.strip().strip("|").split("|")] for l in open(sys.argv[2]) if l.startswith("| MHA") or l.startswith("| MLA")]
names = {"mha": "MHA, RoPE", "mla": "MLA, decoupled RoPE"}
assert [(r[0], r[1]) for r in table] == [(n, d) for n in names.values() for d in ("f32", "bf16", "int8")], table
for v, name in names.items():
    f32 = next(r for r in table if r[0] == name and r[1] == "f32")
    assert f32[2] == f"{int(next(r for r in rows if r['variant'] == v)['cache_bytes_per_token']):,}", f32
    assert f32[5] == "–" and f32[6] == "–", f32
    for r in table:
        if r[0] == name and r[1] != "f32":
            assert int(r[2].replace(",", "")) < int(f32[2].replace(",", "")), r  # fewer bytes than f32
            assert r[5].endswith("%") and (r[6] == "100%" or r[6].endswith(")")), r
print("   ok: 2 variants x 3 cache dtypes, f32's bytes as the study's, quantized ones fewer")
PY
rc=0
"$src/tools/cache_quality.sh" --study nowhere --val data/val.bin --bin "$bin" > /dev/null 2> none.err || rc=$?
[[ $rc -ne 0 ]] && grep -q "holds no scored run" none.err || fail "cache_quality.sh accepted a study with no runs"
echo "study test: all passed"
