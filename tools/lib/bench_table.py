#!/usr/bin/env python3
"""tools/lib/bench_table.py — the tables of tools/bench.sh, from Google Benchmark JSON (stdlib only).

  bench_table.py merge OUT.json IN.json...
      one JSON file holding the rows of every IN (context of the first): bench.sh runs each
      train variant in its own process and merges them.
  bench_table.py table --ours F.json... [--pytorch F.json] [--ours-1t F.json] [--pytorch-1t F.json]
                       [--markdown OUT.md] [--doc DIR --command CMD [--compiler TEXT]] [--min-gflops 100]
      prints, for every row of either side: name | ours | PyTorch | ours/PyTorch (items per
      second in human units: GFLOP/s for gemm rows, tokens/s otherwise; "—" where a side has no
      row); then peak RSS of the train rows, and the thread scaling of the train rows when the
      1-thread files are given. --markdown writes the same tables as Markdown. --doc DIR writes
      the whole results page of this kind of machine, DIR/benchmarks/<cpu>-<isa>.md (say
      amd-epyc-avx512.md: the CPU's make and model, the ISA of the GEMM kernel in use): the
      command CMD that produced it, the machine (CPU model and ISA from /proc/cpuinfo, cores,
      the measured FMA peak and read bandwidth of the machine/ rows), the date, PyTorch's
      version and BLAS, what the rows measure, and the tables; then rewrites DIR/benchmarks.md,
      the index of every page in DIR/benchmarks/ with its machine, date and limits.

Rows are joined by name without Google Benchmark's /real_time (/manual_time, /process_time)
suffix; a row timed in several rounds (bench.sh's train rows: one file per round) stands as its
median timing. Our decode rows name their cache dtype (decode/<variant>/f32|bf16|int8/...); the
f32 ones have PyTorch's float32 decode/<variant>/... as their peer (decode/mla_absorbed|
mla_decompressing|mla_full_cache/f32/...: PyTorch's decode/mla/..., the reference experiments'
decompressing MLA decode), the bf16 and int8 ones none, and a reference row
eigen/<name> has PyTorch's <name>. Rows named gemm* show FLOP/s. Rows named machine/* (the FMA
peak and the read bandwidth, benchmarks/bench_machine.cpp) describe the machine, not a
comparison: they go into the header, not the tables. The header warns when the
PyTorch file's context says its matmul did not exceed --min-gflops GFLOP/s: PyTorch's BLAS was then
not at full speed and the comparison is not to be trusted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

MACHINE = re.compile(r"^machine/")  # the machine's limits (bench_machine), shown in the header
SUFFIX = re.compile(r"/(real_time|manual_time|process_time)$")
MLA_DECODE = re.compile(r"^decode/mla_(absorbed|decompressing|full_cache)/")
F32_DECODE = re.compile(r"^(decode/[^/]+)/f32/")  # our float32 decode rows: PyTorch's have no dtype
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
    """({name: row}, context) over `paths`, names without the timing suffix; the context is the
    first file's, with what only later files' contexts hold (gemm_kernel, fma_isa) added.
    With repetitions, the median aggregate stands for its run (the mean without a median); a row
    timed more than once without aggregates (tools/bench.sh's rounds of train rows, one file
    each) is its median timing by real_time. One disturbed timing on a shared machine does not
    move either."""
    rows, timings, ctx = {}, {}, {}
    for path in paths:
        doc = load(path)
        for key, value in doc.get("context", {}).items():
            ctx.setdefault(key, value)
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
    return REFERENCE.sub("", MLA_DECODE.sub("decode/mla/", F32_DECODE.sub(r"\1/", name)))


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


def machine_limits(machine: dict, ctx: dict | None = None) -> str | None:
    """'FMA peak 146 GFLOP/s (avx512; 73 on AVX2's vectors), read bandwidth 12.3 GB/s (2 threads);
    GEMM kernel avx512' from the machine/ rows and the programs' context."""
    ctx = ctx or {}
    fma, read = rate(machine.get("machine/fma_peak")), rate(machine.get("machine/read_bandwidth"))
    if fma is None and read is None:
        return None
    avx2 = rate(machine.get("machine/fma_peak_avx2"))
    n = next((r.get("threads") for r in machine.values() if r.get("threads")), None)
    isa = ctx.get("fma_isa")
    extra = ", ".join(x for x in (isa, f"{avx2 / 1e9:.0f} on AVX2's vectors" if avx2 else None) if x)
    parts = [f"FMA peak {fma / 1e9:.0f} GFLOP/s" + (f" ({extra})" if extra else "") if fma else None,
             f"read bandwidth {read / 1e9:.1f} GB/s" if read else None]
    text = ", ".join(p for p in parts if p) + (f" ({n:.0f} threads)" if isinstance(n, (int, float)) else "")
    return text + (f"; GEMM kernel: {ctx['gemm_kernel']}" if ctx.get("gemm_kernel") else "")


CANDIDATE = re.compile(r"^candidates/([^/]+)/(.*)$")


def percent(r, key: str) -> str:
    v = r.get(key) if r else None
    return f"{100 * v:.0f}%" if isinstance(v, (int, float)) and not r.get("error_occurred") else DASH


def against_limits(ours: dict) -> list:
    """The GEMM shapes on every candidate kernel and the training steps, as fractions of the FMA
    peak measured in the same run (of_peak, mfu counters); the decode steps against their
    roofline (of_roofline)."""
    tables = []
    kernels, shapes = [], []
    for name in ours:
        m = CANDIDATE.match(name)
        if m:
            kernels += [m.group(1)] if m.group(1) not in kernels else []
            shapes += [m.group(2)] if m.group(2) not in shapes else []
    shapes = shapes or [n for n in ours if re.match(r"^gemm", n)]
    if shapes:
        t = Table("GEMM: fraction of the FMA peak (mla's chosen kernel, then each candidate)",
                  ["shape", "mla"] + kernels, ["l"] + ["r"] * (1 + len(kernels)))
        for shape in shapes:
            t.add([shape, percent(ours.get(shape), "of_peak")] +
                  [percent(ours.get(f"candidates/{k}/{shape}"), "of_peak") for k in kernels])
        tables.append(t)
    train = [n for n in ours if n.startswith("train/") and isinstance(ours[n].get("mfu"), (int, float))]
    if train:
        t = Table("Training step: model FLOPs per token, and model-FLOPs utilization of the FMA peak",
                  ["name", "tokens/s", "model FLOPs/token", "MFU"], ["l", "r", "r", "r"])
        for n in train:
            r = ours[n]
            t.add([n, human(rate(r), n, r), f"{r.get('model_flops_per_token', 0) / 1e6:.1f} M", percent(r, "mfu")])
        tables.append(t)
    decode = [n for n in ours if n.startswith("decode/") and isinstance(ours[n].get("of_roofline"), (int, float))]
    if decode:
        t = Table("Decode step against its roofline: the larger of bytes / read bandwidth and FLOPs / FMA peak, "
                  "both measured in this run (a step above it reads from cache what the roofline counts from DRAM)",
                  ["name", "ms/step", "MB/step", "MFLOP/step", "roofline ms", "of roofline"], ["l"] + ["r"] * 5)
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
        for n in decode:
            r = ours[n]
            ms = r["real_time"] * unit.get(r.get("time_unit", "ns"), 1e-6)
            t.add([n, f"{ms:.2f}", f"{r.get('bytes_per_step', 0) / 1e6:.1f}", f"{r.get('flops_per_step', 0) / 1e6:.0f}",
                   f"{r.get('roofline_ms', 0):.2f}", percent(r, "of_roofline")])
        tables.append(t)
    return tables


def header_lines(ours_ctx: dict, torch_ctx: dict, have_torch: bool, min_gflops: float, threads: str,
                 machine: dict | None = None) -> list[str]:
    lines = [f"mla benchmarks: {threads} threads on {ours_ctx.get('host_name', '?')} "
             f"({ours_ctx.get('num_cpus', '?')} CPUs), {ours_ctx.get('date', '')}".rstrip(", ")]
    limits = machine_limits(machine or {}, ours_ctx)
    if limits:
        lines.append(f"machine, measured in the same run: {limits}")
    if have_torch:
        g = torch_ctx.get("matmul_gflops_per_s")
        core = torch_ctx.get("openblas_coretype") or "unset"
        desc = f"{g:.0f} GFLOP/s" if isinstance(g, (int, float)) else "not measured"
        blas = torch_ctx.get("blas") or "BLAS unknown"
        lines.append(f"PyTorch {torch_ctx.get('torch_version', '?')} ({blas}) at {torch_ctx.get('threads', '?')} threads; "
                     f"matmul 2048x256 @ 256x1024: {desc} (OPENBLAS_CORETYPE={core})")
        if not isinstance(g, (int, float)) or g <= min_gflops:
            lines.append(f"WARNING: PyTorch's matmul reached {desc}, not above {min_gflops:.0f} GFLOP/s: its BLAS "
                         "is not at full speed here, so the PyTorch comparison is untrustworthy")
        if str(torch_ctx.get("threads", threads)) != str(threads):
            lines.append(f"WARNING: PyTorch ran at {torch_ctx.get('threads')} threads, ours at {threads}")
    return lines


def cpu_info() -> dict:
    """Model, ISA flags that matter here, logical CPUs and physical cores, from /proc/cpuinfo."""
    info = {"model": "?", "flags": [], "cpus": os.cpu_count(), "cores": None}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    info["model"] = fields.get("model name", "?")
    have = set(fields.get("flags", "").split())
    info["flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if f in have]
    cores = {(p, c) for p, c in re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", text)}
    info["cores"] = len(cores) or None
    return info


def os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return sys.platform


ROWS_EXPLAINED = """\
Rows: `gemm` — the default model's GEMM shapes on the kernel mla chose for this CPU (FLOP/s;
`gemm_wgrad` its weight gradients; `eigen/` the same products through Eigen's own GEMM, for
reference; `candidates/<kernel>/`, in the last tables only, each kernel that could do the work:
mla's avx512 and avx2 register tiles and its driver of Eigen's kernels, BLIS and OpenBLAS
when installed); `attention_*` — one
attention layer (projections, RoPE, attention, output projection) at batch 8, forward, and
forward + backward; `train` — a whole training step of the default config (d_model 256, 8
heads, 4 layers, vocab 8192, seq 256, batch 8, AdamW, clipping); `decode` — one decode step
with `context` tokens cached, per cache mode (the `mla_*` rows are all compared with
PyTorch's one MLA decode, which decompresses the latent cache at every step).

PyTorch runs `benchmarks/pytorch/`, an implementation of docs/design.md §4 whose parameter
names are those of §5. Before timing anything, `tools/bench.sh` checks that it computes
`eval_model`'s loss on small checkpoints of every attention kind, and that torch's matmul is
not crippled. A training row is timed in rounds, each a few seconds of ours and then of
PyTorch's, and each side shows its median round; the other PyTorch rows run after all of ours.
On a shared machine, read a single ratio as ±20%."""


def page_name(model: str, isa: str) -> str:
    """The results page of a kind of machine: the CPU's make and model, lower case, without
    trademarks, clock and filler words, then the GEMM kernel's ISA ("amd-epyc-avx512")."""
    words = re.sub(r"\((R|TM|tm)\)|@.*$", " ", model).lower()
    words = [w for w in re.findall(r"[a-z0-9]+", words) if w not in ("processor", "cpu", "core", "with")]
    return "-".join(words[:4] + [re.sub(r"[^a-z0-9]", "", isa.lower()) or "unknown"]) + ".md"


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


INDEX_HEAD = """\
# mla benchmarks

One page per kind of machine, each written whole by the newest full run of `tools/bench.sh` (not
`--quick`, not `--filter`) on it, which also rewrites this index: do not edit them by hand. A
page holds the machine (CPU, caches, the FMA peak and read bandwidth measured in the run), what
each row measures, and every table: ours against PyTorch, memory, thread scaling, the GEMM
shapes against the FMA peak for each candidate kernel, the training step's model-FLOPs
utilization and every decode step against its roofline.

| machine | run | measured in that run | page |
|---|---|---|---|
"""


def write_index(doc_dir: str) -> None:
    """DIR/benchmarks.md from the header lines of every page in DIR/benchmarks/."""
    pages = sorted(f for f in os.listdir(os.path.join(doc_dir, "benchmarks")) if f.endswith(".md"))
    rows = []
    for name in pages:
        with open(os.path.join(doc_dir, "benchmarks", name)) as f:
            text = f.read()
        cpu = re.search(r"^- CPU: (.*?)(;|$)", text, re.M)
        date = re.search(r"^Generated by `[^`]*` on (\S+?)\.?$", text, re.M)
        limits = re.search(r"^- measured in this run: (.*)$", text, re.M)
        rows.append(f"| {cpu.group(1) if cpu else '?'} | {date.group(1)[:10] if date else '?'} | "
                    f"{limits.group(1) if limits else 'not measured'} | [{name}](benchmarks/{name}) |")
    write_atomic(os.path.join(doc_dir, "benchmarks.md"), INDEX_HEAD + "\n".join(rows) + "\n")


def write_doc(doc_dir: str, a, head: list[str], tables: list, ours_ctx: dict, torch_ctx: dict, machine: dict,
              threads: str) -> str:
    """Writes this machine's page in doc_dir/benchmarks/ and the index; returns the page's path."""
    cpu = cpu_info()
    date = ours_ctx.get("date", "?")
    cores = f"{cpu['cores']} cores, " if cpu["cores"] else ""
    path = os.path.join(doc_dir, "benchmarks", page_name(cpu["model"], str(ours_ctx.get("gemm_kernel", "unknown"))))
    lines = [
        "# mla benchmarks",
        "",
        f"Generated by `{a.command}` on {date}.",
        "The newest full run of `tools/bench.sh` (not `--quick`, not `--filter`) on a machine of this kind replaces "
        "this page: do not edit it by hand.",
        "",
        "## The machine",
        "",
        f"- CPU: {cpu['model']}, {cores}{cpu['cpus']} logical CPUs; ISA: {', '.join(cpu['flags']) or 'none of avx2/fma/avx512f'}",
    ]
    caches = [c for c in ours_ctx.get("caches", []) if isinstance(c, dict)]
    if caches:
        def size(b):
            return f"{b // 1024} KiB" if b < 1 << 20 else f"{b // (1 << 20)} MiB"
        desc = ", ".join(f"L{c.get('level')}{'d' if c.get('type') == 'Data' else '' if c.get('type') == 'Unified' else 'i'} "
                         f"{size(int(c.get('size', 0)))}" for c in caches if c.get("type") != "Instruction")
        lines.append(f"- caches: {desc}")
    limits = machine_limits(machine, ours_ctx)
    lines.append(f"- measured in this run: {limits}" if limits else "- FMA peak and read bandwidth: not measured (no machine/ rows)")
    lines.append(f"- {os_name()}" + (f", {a.compiler}" if a.compiler else "") + f"; {threads} threads for both sides")
    if a.pytorch:
        g = torch_ctx.get("matmul_gflops_per_s")
        lines.append(f"- PyTorch {torch_ctx.get('torch_version', '?')}, BLAS: {torch_ctx.get('blas') or '?'} "
                     f"(OPENBLAS_CORETYPE={torch_ctx.get('openblas_coretype') or 'unset'}); its matmul 2048x256 @ "
                     f"256x1024 at the start: " + (f"{g:.0f} GFLOP/s" if isinstance(g, (int, float)) else "not measured"))
    else:
        lines.append("- PyTorch: not run (`tools/bench.sh --with-pytorch` adds it)")
    warnings = [h for h in head if h.startswith("WARNING")]
    lines += [""] + [f"> {w}" for w in warnings] + ([""] if warnings else [])
    lines += ["## The rows", "", ROWS_EXPLAINED, "", "## Results", ""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n" + "\n\n".join(t.markdown() for t in tables) + "\n")
    write_index(doc_dir)
    return path


def cmd_table(a) -> None:
    ours, ours_ctx = rows_of(a.ours)
    machine = {n: r for n, r in ours.items() if MACHINE.search(n)}
    ours = {n: r for n, r in ours.items() if not MACHINE.search(n)}
    torch, torch_ctx = rows_of([a.pytorch]) if a.pytorch else ({}, {})
    ours_1, _ = rows_of([a.ours_1t]) if a.ours_1t else ({}, {})
    torch_1, _ = rows_of([a.pytorch_1t]) if a.pytorch_1t else ({}, {})
    threads = a.threads or threads_of(ours_ctx)
    head = header_lines(ours_ctx, torch_ctx, bool(a.pytorch), a.min_gflops, threads, machine)
    candidates = {n: r for n, r in ours.items() if CANDIDATE.match(n)}
    compared = {n: r for n, r in ours.items() if n not in candidates}
    tables = [t for t in (comparison(compared, torch), memory(compared, torch),
                          scaling(compared, ours_1, torch, torch_1, threads)) if t is not None]
    tables += against_limits(ours)
    print("\n".join(head) + "\n")
    print("\n\n".join(t.text() for t in tables))
    if a.markdown:
        text = "\n".join(f"> {h}" if h.startswith("WARNING") else h for h in head)
        text = text.replace("\n", "  \n") + "\n\n" + "\n\n".join(t.markdown() for t in tables) + "\n"
        write_atomic(a.markdown, text)
    if a.doc:
        print(f"\n{write_doc(a.doc, a, head, tables, ours_ctx, torch_ctx, machine, threads)} and its index rewritten from this run")


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
    t.add_argument("--doc", metavar="DIR", help="also write this machine's results page in DIR/benchmarks/ and the index DIR/benchmarks.md")
    t.add_argument("--command", default="tools/bench.sh", help="the command line that produced the results, for --doc")
    t.add_argument("--compiler", help="the compiler that built our side, for --doc")
    t.add_argument("--min-gflops", type=float, default=100.0, help="PyTorch matmul rate below which to warn")
    a = p.parse_args(argv)
    cmd_merge(a) if a.cmd == "merge" else cmd_table(a)


if __name__ == "__main__":
    main()
