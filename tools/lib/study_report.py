#!/usr/bin/env python3
"""tools/lib/study_report.py — tools/study.sh's outputs from its scored runs: study.csv (one row per
run), study.md (per variant: mean ± sd over seeds, the paired difference from MHA with a 95%
interval, speeds), loss.png and pareto.png (gnuplot, pngcairo). With --doc, the same table and
plots beside that file too."""
import argparse
import csv
import datetime
import math
import os
import re
import shutil
import subprocess
import tempfile

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--variants", required=True)
p.add_argument("--seeds", required=True)
p.add_argument("--contexts", required=True)
p.add_argument("--command", required=True)
p.add_argument("--machine", required=True)
p.add_argument("--doc")
a = p.parse_args()
variants, seeds = a.variants.split(","), [int(s) for s in a.seeds.split(",")]
contexts = [int(c) for c in a.contexts.split(",")]
NAMES = {
    "mha-nope": "MHA, no RoPE", "mha": "MHA, RoPE", "mha-decoupled": "MHA, decoupled RoPE",
    "mqa-nope": "MQA, no RoPE", "mqa": "MQA, RoPE", "gqa": "GQA (2 kv heads), RoPE",
    "mla-nope": "MLA, no RoPE", "mla": "MLA, decoupled RoPE", "mla-ds": "MLA, DeepSeek-V2 proportions",
}
# Two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 for n paired seeds).
T95 = [None, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
       2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086]


def t95(df):
    return T95[df] if df < len(T95) else 1.96


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):  # the sample standard deviation (n - 1); 0 for one value
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# --- the scored runs -------------------------------------------------------------------------------
runs = []  # dicts, in the order of the variants and seeds
curves = {}  # variant -> {tokens: [val_loss per seed]}
for v in variants:
    for s in seeds:
        d = os.path.join(a.out, "runs", v, f"seed{s}")
        score_path = os.path.join(d, "score.json")
        if not os.path.exists(score_path) or os.path.getsize(score_path) == 0:
            continue
        score = __import__("json").load(open(score_path))
        log = open(d + ".log").read()
        m = re.search(r", (\d+) parameters, KV cache (\d+) bytes/token", log)
        rows = list(csv.DictReader(open(os.path.join(d, "metrics.csv"))))
        runs.append({"variant": v, "seed": s, "steps": int(rows[-1]["step"]), "train_tokens": int(rows[-1]["tokens"]),
                     "parameters": int(m.group(1)), "cache_bytes_per_token": int(m.group(2)),
                     "val_loss": float(score["loss"]), "val_perplexity": float(score["perplexity"]),
                     "val_tokens": int(score["tokens"])})
        for r in rows:
            if r["val_loss"]:
                curves.setdefault(v, {}).setdefault(int(r["tokens"]), []).append(float(r["val_loss"]))

fields = ["variant", "seed", "steps", "train_tokens", "parameters", "cache_bytes_per_token", "val_loss",
          "val_perplexity", "val_tokens"]
with open(os.path.join(a.out, "study.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in runs:
        w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in fields})
# Everything below reads the CSV back: the table is what the CSV says.
rows = list(csv.DictReader(open(os.path.join(a.out, "study.csv"))))
by = {}
for r in rows:
    by.setdefault(r["variant"], {})[int(r["seed"])] = r


def speeds(v):
    path = os.path.join(a.out, "speed", f"{v}.txt")
    if not os.path.exists(path):
        return {}
    return dict(line.strip().split("=", 1) for line in open(path) if "=" in line)


# --- study.md --------------------------------------------------------------------------------------
settings = open(os.path.join(a.out, "settings")).read().strip()
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
present = [v for v in variants if v in by]
ref = by.get("mha")
md = [f"Measured by `{a.command}` (tables and plots written {date}); machine: {a.machine}. Settings: "
      f"`{settings}`. Validation loss over all of the validation file (eval_model); mean ± sample "
      "standard deviation over the seeds. Δ vs MHA: the paired difference (same seed, so the same "
      "initialization stream and data order) with a 95% t interval; an interval that holds 0 is no "
      "difference this study can see. Speeds: one process, all threads, measured once per variant; "
      "decode at batch 1 with the given number of cached tokens.\n"]
head = ["variant", "seeds", "parameters", "KV cache bytes/token", "val loss", "perplexity", "Δ loss vs MHA (95%)",
        "Δ perplexity vs MHA", "train tokens/s"] + [f"decode tokens/s, {c:,} ctx" for c in contexts]
md.append("| " + " | ".join(head) + " |")
md.append("|" + "---|" * 2 + "---:|" * (len(head) - 2))
summary = {}
for v in present:
    rs = [by[v][s] for s in sorted(by[v])]
    loss = [float(r["val_loss"]) for r in rs]
    ppl = [float(r["val_perplexity"]) for r in rs]
    delta, delta_ppl = "–", "–"
    if ref is not None and v != "mha":
        common = sorted(set(by[v]) & set(ref))
        if common:
            d = [float(by[v][s]["val_loss"]) - float(ref[s]["val_loss"]) for s in common]
            half = t95(len(d) - 1) * sd(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
            delta = f"{mean(d):+.4f} ± {half:.4f}" if len(d) > 1 else f"{mean(d):+.4f} (1 seed)"
            delta_ppl = f"{100 * (math.exp(mean(d)) - 1):+.1f}%"
            summary[v] = (mean(d), half)
    sp = speeds(v)
    cells = [NAMES.get(v, v), str(len(rs)), f"{int(rs[0]['parameters']):,}", f"{int(rs[0]['cache_bytes_per_token']):,}",
             f"{mean(loss):.4f} ± {sd(loss):.4f}", f"{mean(ppl):.2f} ± {sd(ppl):.2f}", delta, delta_ppl,
             f"{float(sp['train_tokens_per_s']):,.0f}" if "train_tokens_per_s" in sp else "–"]
    for c in contexts:
        key = f"decode_tokens_per_s_{c}"
        cells.append(f"{float(sp[key]):,.1f}" if sp.get(key) else "–")
    md.append("| " + " | ".join(cells) + " |")
md.append("")


# --- plots -----------------------------------------------------------------------------------------
def gnuplot(script):
    subprocess.run(["gnuplot"], input=script.encode(), check=True)


def quoted(path):
    return "'" + path.replace("'", "''") + "'"


# One colour per variant (gnuplot's default list has eight, and the study has nine variants).
COLOURS = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#c8b400", "#0072b2", "#e51e10", "#000000", "#a0522d",
           "#ff69b4", "#708090", "#2e8b57"]


def colour(i):
    return f"rgb '{COLOURS[i % len(COLOURS)]}'"


def draw_plots(loss_png, pareto_png):
    tmp = tempfile.mkdtemp()
    try:
        plots, bands = [], []
        for i, v in enumerate(present):
            path = os.path.join(tmp, f"{v}.dat")
            with open(path, "w") as f:
                for tokens in sorted(curves[v]):
                    xs = curves[v][tokens]
                    f.write(f"{tokens} {mean(xs)} {min(xs)} {max(xs)}\n")
            bands.append(f"{quoted(path)} using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc {colour(i)} notitle")
            plots.append(f"{quoted(path)} using 1:2 with lines lw 2 lc {colour(i)} title {quoted(NAMES.get(v, v))}")
        gnuplot("set terminal pngcairo size 960,600\nset output " + quoted(loss_png) + "\nset grid\n"
                "set xlabel 'training tokens'\nset ylabel 'validation loss (band: min-max over seeds)'\n"
                "set key top right\nplot " + ", ".join(bands + plots) + "\n")
        pts = os.path.join(tmp, "pareto.dat")
        with open(pts, "w") as f:
            for v in present:
                rs = list(by[v].values())
                ppl = [float(r["val_perplexity"]) for r in rs]
                f.write(f"{rs[0]['cache_bytes_per_token']} {mean(ppl)} {sd(ppl)} \"{NAMES.get(v, v)}\"\n")
        gnuplot("set terminal pngcairo size 960,600\nset output " + quoted(pareto_png) + "\nset grid\nset logscale x 2\n"
                "set xlabel 'KV-cache bytes per token (all layers, float32)'\n"
                "set ylabel 'validation perplexity (± sd over seeds)'\n"
                "set offsets graph 0.05, graph 0.25, graph 0.05, graph 0.05\n"
                f"plot {quoted(pts)} using 1:2:3 with yerrorbars pt 7 ps 1.2 notitle, "
                f"'' using 1:2:4 with labels offset 1,0.6 left font ',9' notitle\n")
    finally:
        shutil.rmtree(tmp)


loss_png, pareto_png = os.path.join(a.out, "loss.png"), os.path.join(a.out, "pareto.png")
if present:
    draw_plots(loss_png, pareto_png)
else:  # nothing scored yet: no plots, and none left from an earlier call
    for png in (loss_png, pareto_png):
        if os.path.exists(png):
            os.remove(png)

text = "\n".join(md)
with open(os.path.join(a.out, "study.md"), "w") as f:
    f.write("# Attention variants compared\n\n" + text + "\n![validation loss](loss.png)\n\n![perplexity against cache](pareto.png)\n")
if a.doc and present:
    stem = os.path.splitext(a.doc)[0]
    shutil.copy(loss_png, stem + "_loss.png")
    shutil.copy(pareto_png, stem + "_pareto.png")
    base = os.path.basename(stem)
    body = open(a.doc).read() if os.path.exists(a.doc) else ""
    # The doc's generated part sits between markers, so that prose written around it stays.
    begin, end = "<!-- study: begin (tools/study.sh writes this part) -->", "<!-- study: end -->"
    generated = f"{begin}\n{text}\n![validation loss]({base}_loss.png)\n\n![perplexity against cache]({base}_pareto.png)\n{end}"
    if begin in body and end in body:
        body = body[:body.index(begin)] + generated + body[body.index(end) + len(end):]
    else:
        body = "# Attention variants compared\n\n" + generated + "\n"
    with open(a.doc, "w") as f:
        f.write(body)
for v, (d, half) in summary.items():
    print(f"  {v}: val loss {d:+.4f} vs MHA" + (f" ± {half:.4f} (95%)" if not math.isnan(half) else ""))
