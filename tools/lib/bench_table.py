#!/usr/bin/env python3
"""tools/lib/bench_table.py — the tables of tools/bench.sh, from Google Benchmark JSON (stdlib only).

  bench_table.py merge OUT.json IN.json...
      one JSON file holding the rows of every IN (context of the first): bench.sh runs each
      train variant in its own process and merges them.
  bench_table.py table --ours F.json... [--pytorch F.json] [--ours-1t F.json] [--pytorch-1t F.json]
                       [--markdown OUT.md] [--min-gflops 100]
      prints, for every row of either side: name | ours | PyTorch | ours/PyTorch (items per
      second in human units: GFLOP/s for gemm rows, tokens/s otherwise; "—" where a side has no
      row); then peak RSS of the train rows, and the thread scaling of the train rows when the
      1-thread files are given. --markdown writes the same tables as Markdown.

Rows are joined by name without Google Benchmark's /real_time (/manual_time, /process_time)
suffix; a row timed in several rounds (bench.sh's train rows: one file per round) stands as its
median timing. Our decode/mla_absorbed|mla_decompressing|mla_full_cache/... rows have PyTorch's
decode/mla/... row (the reference experiments' decompressing MLA decode) as their peer, and a reference row
eigen/<name> has PyTorch's <name>. Rows named gemm* show FLOP/s. The header warns when the
PyTorch file's context says its matmul did not exceed --min-gflops GFLOP/s: PyTorch's BLAS was then
not at full speed and the comparison is not to be trusted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

SUFFIX = re.compile(r"/(real_time|manual_time|process_time)$")
MLA_DECODE = re.compile(r"^decode/mla_(absorbed|decompressing|full_cache)/")
REFERENCE = re.compile(r"^eigen/")  # a reference row of ours (plain Eigen) at a shape PyTorch also times
FLOP_ROW = re.compile(r"(^|/)gemm")
DASH = "—"


def fail(msg: str, code: int = 1):
    print(f"bench_table.py: {msg}", file=sys.stderr)
    sys.exit(code)


def load(path: str) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        fail(f"{path}: not Google Benchmark JSON (no \"benchmarks\" list)")
    return doc


def rows_of(paths) -> tuple[dict, dict]:
    """({name: row}, context of the first file) over `paths`, names without the timing suffix.
    With repetitions, the median aggregate stands for its run (the mean without a median); a row
    timed more than once without aggregates (tools/bench.sh's rounds of train rows, one file
    each) is its median timing by real_time. One disturbed timing on a shared machine does not
    move either."""
    rows, timings, ctx = {}, {}, {}
    for path in paths:
        doc = load(path)
        ctx = ctx or doc.get("context", {})
        for r in doc["benchmarks"]:
            if "name" not in r:
                continue
            kind = r.get("run_type", "iteration")
            if kind == "aggregate" and r.get("aggregate_name") not in ("median", "mean"):
                continue
            name = SUFFIX.sub("", r.get("run_name", r["name"]) if kind == "aggregate" else r["name"])
            if kind == "iteration":
                timings.setdefault(name, []).append(r)
            elif not (name in rows and rows[name].get("aggregate_name") == "median"):
                rows[name] = r
    for name, runs in timings.items():
        if name not in rows:  # aggregates, where there are any, stand for the timings
            rows[name] = sorted(runs, key=lambda r: r.get("real_time", 0.0))[len(runs) // 2]
    return rows, ctx


def peer_name(name: str) -> str:
    """Name of the PyTorch row that stands beside our row `name`."""
    return REFERENCE.sub("", MLA_DECODE.sub("decode/mla/", name))


def rate(r) -> float | None:
    if r is None or r.get("error_occurred"):
        return None
    v = r.get("items_per_second")
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def human(v: float | None, name: str, r=None) -> str:
    if r is not None and r.get("error_occurred"):
        return "error"
    if v is None:
        return DASH
    if FLOP_ROW.search(name):
        return f"{v / 1e9:.1f} GFLOP/s"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if v >= scale or scale == 1.0:
            x = v / scale
            return f"{x:.{2 if x < 10 else 1 if x < 100 else 0}f}{prefix} tok/s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else DASH


def mb(r, key="peak_rss_bytes") -> float | None:
    v = r.get(key) if r else None
    return float(v) / 1e6 if isinstance(v, (int, float)) and v > 0 else None


class Table:
    def __init__(self, title: str, header: list[str], align: list[str]):
        self.title, self.header, self.align, self.body = title, header, align, []

    def add(self, cells: list[str]) -> None:
        self.body.append(cells)

    def text(self) -> str:
        widths = [max(len(row[i]) for row in [self.header] + self.body) for i in range(len(self.header))]

        def line(cells):
            return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, self.align)).rstrip()

        out = [self.title, line(self.header), "  ".join("-" * w for w in widths)]
        return "\n".join(out + [line(r) for r in self.body])

    def markdown(self) -> str:
        def line(cells):
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join("---" if a == "l" else "---:" for a in self.align) + "|"
        return "\n".join([f"**{self.title}**", "", line(self.header), rule] + [line(r) for r in self.body])


def comparison(ours: dict, torch: dict) -> Table:
    t = Table("Throughput (items/s; higher is better)", ["name", "ours", "PyTorch", "ours/PyTorch"],
              ["l", "r", "r", "r"])
    matched = set()
    for name, r in ours.items():
        p = torch.get(peer_name(name))
        if p is not None:
            matched.add(peer_name(name))
        t.add([name, human(rate(r), name, r), human(rate(p), name, p), ratio(rate(r), rate(p))])
    for name, p in torch.items():  # PyTorch rows with no row of ours
        if name not in matched:
            t.add([name, DASH, human(rate(p), name, p), DASH])
    return t


def memory(ours: dict, torch: dict) -> Table | None:
    names = [n for n in ours if n.startswith("train/")] + [n for n in torch if n.startswith("train/") and n not in ours]
    if not any(mb(ours.get(n)) or mb(torch.get(n)) for n in names):
        return None
    t = Table("Peak RSS of a training process (MB; lower is better)", ["name", "ours", "PyTorch", "ours/PyTorch"],
              ["l", "r", "r", "r"])
    for n in names:
        a, b = mb(ours.get(n)), mb(torch.get(n))
        t.add([n, f"{a:.0f}" if a else DASH, f"{b:.0f}" if b else DASH, ratio(a, b)])
    return t


def scaling(ours_n: dict, ours_1: dict, torch_n: dict, torch_1: dict, threads: str) -> Table | None:
    names = [n for n in ours_n if n.startswith("train/") and (n in ours_1 or n in torch_1)]
    names += [n for n in torch_n if n.startswith("train/") and n in torch_1 and n not in names]
    if not names:
        return None
    t = Table(f"Thread scaling of a training step (tokens/s at 1 and {threads} threads)",
              ["name", "ours 1T", f"ours {threads}T", "speed-up", "PyTorch 1T", f"PyTorch {threads}T", "speed-up"],
              ["l", "r", "r", "r", "r", "r", "r"])
    for n in names:
        a1, an, b1, bn = rate(ours_1.get(n)), rate(ours_n.get(n)), rate(torch_1.get(n)), rate(torch_n.get(n))
        t.add([n, human(a1, n), human(an, n), ratio(an, a1), human(b1, n), human(bn, n), ratio(bn, b1)])
    return t


def threads_of(ctx: dict, fallback: str = "?") -> str:
    return str(ctx.get("threads") or os.environ.get("OMP_NUM_THREADS") or fallback)


def header_lines(ours_ctx: dict, torch_ctx: dict, have_torch: bool, min_gflops: float, threads: str) -> list[str]:
    lines = [f"mla benchmarks: {threads} threads on {ours_ctx.get('host_name', '?')} "
             f"({ours_ctx.get('num_cpus', '?')} CPUs), {ours_ctx.get('date', '')}".rstrip(", ")]
    if have_torch:
        g = torch_ctx.get("matmul_gflops_per_s")
        core = torch_ctx.get("openblas_coretype") or "unset"
        desc = f"{g:.0f} GFLOP/s" if isinstance(g, (int, float)) else "not measured"
        lines.append(f"PyTorch {torch_ctx.get('torch_version', '?')} at {torch_ctx.get('threads', '?')} threads; "
                     f"matmul 2048x256 @ 256x1024: {desc} (OPENBLAS_CORETYPE={core})")
        if not isinstance(g, (int, float)) or g <= min_gflops:
            lines.append(f"WARNING: PyTorch's matmul reached {desc}, not above {min_gflops:.0f} GFLOP/s: its BLAS "
                         "is not at full speed here, so the PyTorch comparison is untrustworthy")
        if str(torch_ctx.get("threads", threads)) != str(threads):
            lines.append(f"WARNING: PyTorch ran at {torch_ctx.get('threads')} threads, ours at {threads}")
    return lines


def cmd_table(a) -> None:
    ours, ours_ctx = rows_of(a.ours)
    torch, torch_ctx = rows_of([a.pytorch]) if a.pytorch else ({}, {})
    ours_1, _ = rows_of([a.ours_1t]) if a.ours_1t else ({}, {})
    torch_1, _ = rows_of([a.pytorch_1t]) if a.pytorch_1t else ({}, {})
    threads = a.threads or threads_of(ours_ctx)
    head = header_lines(ours_ctx, torch_ctx, bool(a.pytorch), a.min_gflops, threads)
    tables = [t for t in (comparison(ours, torch), memory(ours, torch), scaling(ours, ours_1, torch, torch_1, threads))
              if t is not None]
    print("\n".join(head) + "\n")
    print("\n\n".join(t.text() for t in tables))
    if a.markdown:
        text = "\n".join(f"> {h}" if h.startswith("WARNING") else h for h in head)
        text = text.replace("\n", "  \n") + "\n\n" + "\n\n".join(t.markdown() for t in tables) + "\n"
        tmp = a.markdown + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.markdown)


def cmd_merge(a) -> None:
    docs = [load(p) for p in a.inputs]
    out = {"context": docs[0].get("context", {}), "benchmarks": [r for d in docs for r in d["benchmarks"]]}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, a.out)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    p = Parser(prog="bench_table.py", description=__doc__.split("\n")[0], epilog=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge Google Benchmark JSON files")
    m.add_argument("out")
    m.add_argument("inputs", nargs="+")
    t = sub.add_parser("table", help="print the comparison tables")
    t.add_argument("--ours", nargs="+", required=True, help="our Google Benchmark JSON files")
    t.add_argument("--pytorch", help="bench_torch.py's JSON")
    t.add_argument("--ours-1t", help="our train rows at 1 thread")
    t.add_argument("--pytorch-1t", help="PyTorch's train rows at 1 thread")
    t.add_argument("--threads", help="thread count of the main runs (default: from the JSON or OMP_NUM_THREADS)")
    t.add_argument("--markdown", help="also write the tables as Markdown to this file")
    t.add_argument("--min-gflops", type=float, default=100.0, help="PyTorch matmul rate below which to warn")
    a = p.parse_args(argv)
    cmd_merge(a) if a.cmd == "merge" else cmd_table(a)


if __name__ == "__main__":
    main()
