#!/usr/bin/python3
"""bench_torch.py — PyTorch peer of our Google Benchmark programs (tools/bench.sh runs it).

Subcommands (each takes --threads N, default: all cores):
  run    [--min-time S] [--train-min-time S] [--train-repetitions N] [--filter REGEX]... [--out FILE.json]
         the rows of bench_gemm, bench_attention, bench_train and bench_decode, with the same
         names, as Google Benchmark JSON ({"context": ..., "benchmarks": [...]}) in FILE (and a
         console line per row on stdout). Each train/<v> row runs in a child process of its own,
         so its peak_rss_bytes counter is that variant's. A row runs when every --filter matches
         its name followed by /real_time, the name Google Benchmark matches for our rows.
  matmul the FLOP rate of one float32 matmul 2048x256 @ 256x1024 (GFLOP/s, the last line)
  check  --checkpoint FILE... --data FILE.bin [--seq-len T] [--max-windows N] [--json]
         [--compare-with EVAL_MODEL [--rtol 1e-4]]
         loads one of our checkpoints (docs/design.md §5) into the PyTorch model and prints the eval
         loss over the §6 windows; the last line is eval_model's: loss=.. perplexity=.. tokens=..
         With --compare-with, runs our eval_model on each checkpoint too and fails when a loss
         differs by more than --rtol (relative).
  perturb --checkpoint FILE --out FILE [--std 0.3] [--seed S]
         the checkpoint's model tensors plus N(0, std) noise (optimizer state dropped). A model
         trained for a few steps is still near uniform, its loss near ln(V), where a wrong
         rotation moved the loss by ~1e-6 (relative); with perturbed weights, by ~1e-2.
  selftest  decode (token by token, through the caches) equals the full forward pass, and the
         folded GQA/MQA attention equals a naive one with repeated K/V, for every variant
  tokens --out FILE.bin --count N --vocab V [--seed S]   random ids in the llm.c format (§6)

Timing: one warm-up call (three for a train row), then calls until --min-time seconds have passed
(a train row: --train-repetitions timings, default three, of --train-min-time seconds each, the
median one reported); real_time is the
mean wall time per call. Forward-only rows (attention_forward, decode) run under
torch.inference_mode(). The train step zeroes gradients with zero_grad(set_to_none=True) and
uses torch.optim.AdamW with its defaults for the CPU (per-tensor loop). peak_rss_bytes is the
child's VmHWM (ru_maxrss would include the parent's peak: Linux carries it across fork+exec).
OpenBLAS: when OPENBLAS_CORETYPE is unset and the CPU has AVX-512, it is set to SKYLAKEX before
torch loads (Debian's OpenBLAS mis-detects these VMs' CPU and runs about 5x slower).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("mha", "gqa2", "mqa", "mla")


def fail(msg: str, code: int = 1):
    print(f"bench_torch.py: {msg}", file=sys.stderr)
    sys.exit(code)


def cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def setup_threads(threads: int) -> None:
    """Environment that must be in place before torch (and its OpenBLAS) loads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if "OPENBLAS_CORETYPE" not in os.environ and cpu_has_avx512():
        os.environ["OPENBLAS_CORETYPE"] = "SKYLAKEX"


def import_torch(threads: int):
    setup_threads(threads)
    global torch, F, M
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402

    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import model as M  # noqa: E402

    torch.set_num_threads(threads)
    return torch


# --------------------------------------------------------------------------------------------
# Timing and rows


def measure(fn, min_time: float, warmup: int = 1):
    """(mean wall seconds, mean cpu seconds, iterations) of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            break
    return elapsed / n, (time.process_time() - c0) / n, n


_UNITS = {"ns": 1e9, "us": 1e6, "ms": 1e3, "s": 1.0}


def row(name: str, wall: float, cpu: float, iters: int, items: float, unit: str = "ms", **counters) -> dict:
    r = {"name": name, "run_name": name, "run_type": "iteration", "repetitions": 1, "repetition_index": 0,
         "threads": 1, "iterations": iters, "real_time": wall * _UNITS[unit], "cpu_time": cpu * _UNITS[unit],
         "time_unit": unit, "items_per_second": items / wall}
    r.update({k: float(v) for k, v in counters.items()})
    return r


def console(r: dict) -> None:
    extra = " ".join(f"{k}={r[k]:.4g}" for k in r if k not in (
        "name", "run_name", "run_type", "repetitions", "repetition_index", "threads", "iterations",
        "real_time", "cpu_time", "time_unit", "items_per_second"))
    print(f"{r['name']:<44} {r['real_time']:12.3f} {r['time_unit']:<2} {r['iterations']:8d}  "
          f"items_per_second={r['items_per_second']:.4g}/s {extra}", flush=True)


def model_config(variant: str, max_seq_len: int):
    """The default model of our benchmarks: vocab 8192, D 256, 8 heads, 4 layers."""
    attention = {"gqa2": "gqa"}.get(variant, variant)
    kw = dict(vocab_size=8192, d_model=256, n_heads=8, n_layers=4, max_seq_len=max_seq_len, attention=attention)
    if variant == "gqa2":
        kw["n_kv_heads"] = 2
    if variant == "mla":
        kw.update(rope="decoupled", q_rank=128, kv_rank=170, qk_rope_dim=16, qk_nope_dim=16, v_head_dim=32)
    else:
        kw["rope"] = "full"
    return M.Config(**kw).resolved()


# --------------------------------------------------------------------------------------------
# The groups of rows


GEMM_SHAPES = ((256, 256), (1024, 256), (256, 1024), (8192, 256))


def matmul_rate(min_time: float = 0.3) -> float:
    """GFLOP/s of a 2048x256 @ 256x1024 float32 matmul."""
    a, b = torch.randn(2048, 256), torch.randn(256, 1024)
    c = torch.empty(2048, 1024)
    wall, _, _ = measure(lambda: torch.matmul(a, b, out=c), min_time)
    return 2.0 * 2048 * 256 * 1024 / wall / 1e9


def bench_gemm(want, min_time):
    M_ = 2048
    for N, K in GEMM_SHAPES:
        name = f"gemm/M:{M_}/N:{N}/K:{K}"
        if want(name):  # C[M, N] = A[M, K] @ B[N, K]^T
            a, b = torch.randn(M_, K), torch.randn(N, K)
            c = torch.empty(M_, N)
            wall, cpu, n = measure(lambda: torch.matmul(a, b.t(), out=c), min_time)
            yield row(name, wall, cpu, n, 2.0 * M_ * N * K, unit="us")
    for Mw, N in GEMM_SHAPES:
        name = f"gemm_wgrad/M:{Mw}/N:{N}/K:2048"
        if want(name):  # dW[M, N] = dY[2048, M]^T @ X[2048, N]
            dy, x = torch.randn(2048, Mw), torch.randn(2048, N)
            dw = torch.empty(Mw, N)
            wall, cpu, n = measure(lambda: torch.matmul(dy.t(), x, out=dw), min_time)
            yield row(name, wall, cpu, n, 2.0 * Mw * N * 2048, unit="us")


def bench_attention(want, min_time):
    B = 8
    for kind in ("forward", "train"):
        for v in VARIANTS:
            for T in (256, 1024):
                name = f"attention_{kind}/{v}/T:{T}"
                if not want(name):
                    continue
                torch.manual_seed(1)
                layer = M.attention_layer(model_config(v, T))
                for p in layer.parameters():
                    torch.nn.init.normal_(p, std=0.02)
                x = torch.randn(B, T, 256)
                if kind == "forward":
                    def step():
                        with torch.inference_mode():
                            layer(x)
                else:
                    x.requires_grad_(True)
                    g = torch.randn(B, T, 256)

                    def step():
                        layer.zero_grad(set_to_none=True)
                        x.grad = None
                        (layer(x) * g).sum().backward()
                wall, cpu, n = measure(step, min_time)
                yield row(name, wall, cpu, n, B * T)


def train_step_fn(variant: str):
    """One training step of the default model (seq 256, batch 8), as bench_train's."""
    B, T = 8, 256
    model = M.GPT(model_config(variant, T), seed=1)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    window = torch.randint(0, 8192, (B, T + 1), generator=g)
    ids, targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()
    params = list(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step, sum(p.numel() for p in params)


def peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM of /proc/self/status where there is one. Not
    ru_maxrss: Linux carries the parent's peak across fork and exec into the child's ru_maxrss,
    so a child of the process that ran the attention rows would report their peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# Untimed steps before a training row's timing, as bench_train does: the first steps of a fresh
# process fault in their memory (ours: the arena's first step grows it in blocks, the second
# moves into one block of the final size), which is set-up, not the steady state.
TRAIN_WARMUP = 3
# A training row is, by default, the median of this many timings of --train-min-time each: one
# disturbed timing does not move it. (tools/bench.sh times one per round instead, alternating
# with ours, and takes the median over the rounds.)
TRAIN_REPETITIONS = 3


def train_one(variant: str, min_time: float, repetitions: int = TRAIN_REPETITIONS) -> dict:
    """train/<variant> in this process (a fresh child: its peak RSS is this row's alone)."""
    import_rss = peak_rss_bytes()
    step, count = train_step_fn(variant)
    runs = [measure(step, min_time, warmup=TRAIN_WARMUP if i == 0 else 0) for i in range(repetitions)]
    wall, cpu, _ = sorted(runs)[len(runs) // 2]
    n = sum(r[2] for r in runs)
    peak = peak_rss_bytes()
    return row(f"train/{variant}", wall, cpu, n, 8 * 256, parameters=count, peak_rss_bytes=peak,
               import_rss_bytes=import_rss)


def bench_train(want, min_time, threads, repetitions):
    for v in VARIANTS:
        name = f"train/{v}"
        if not want(name):
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "train-one", "--variant", v, "--threads", str(threads),
               "--min-time", str(min_time), "--repetitions", str(repetitions)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=False, text=True)
        if out.returncode != 0:
            fail(f"train/{v}: the child process failed (exit {out.returncode})")
        yield json.loads(out.stdout.strip().splitlines()[-1])


def bench_decode(want, min_time):
    for v in VARIANTS:
        names = [(C, B, f"decode/{v}/context:{C}/batch:{B}") for C in (512, 2048, 8192) for B in (1, 8)]
        names = [x for x in names if want(x[2])]
        if not names:
            continue
        model = M.GPT(model_config(v, 8193), seed=1)
        model.eval()
        for C, B, name in names:
            yield decode_row(model, name, C, B, min_time)


def decode_row(model, name: str, C: int, B: int, min_time: float) -> dict:
    """One decode step at position C of B rows whose caches hold C tokens (noise: their content
    does not change the cost); the caches are freed on return."""
    with torch.inference_mode():
        cache = model.make_cache(B, C + 1)
        for layer in cache:
            for t in layer.values():
                t.normal_()
        tokens = torch.full((B, 1), 42, dtype=torch.long)
        wall, cpu, n = measure(lambda: model.decode(tokens, cache, C), min_time)
    return row(name, wall, cpu, n, B, cache_bytes_per_token=model.cache_bytes_per_token())


# --------------------------------------------------------------------------------------------
# Subcommands


def blas_name() -> str:
    """The BLAS torch was built for (torch.__config__) and the library this process loaded."""
    built = re.search(r"BLAS_INFO=(\S+)", torch.__config__.show())
    loaded = ""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "blas" in line.rsplit("/", 1)[-1].lower()})
        loaded = ", ".join(libs)
    except OSError:
        pass
    return "; ".join(p for p in (f"built for {built.group(1)}" if built else "", loaded) if p)


def context(threads: int, min_time: float, gflops: float) -> dict:
    import numpy

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host_name": platform.node(),
        "executable": "benchmarks/pytorch/bench_torch.py",
        "num_cpus": os.cpu_count(),
        "library_build_type": "release",
        "threads": threads,
        "min_time": min_time,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "blas": blas_name(),
        "matmul_gflops_per_s": gflops,
    }


def cmd_run(a) -> None:
    try:
        rxs = [re.compile(f) for f in a.filter or ["."]]
    except re.error as e:
        fail(f"--filter: {e}", 2)
    # Matched as Google Benchmark matches our rows: against the name with its /real_time suffix.
    want = lambda name: all(rx.search(name + "/real_time") for rx in rxs)  # noqa: E731
    gflops = matmul_rate()
    print(f"bench_torch.py: torch {torch.__version__}, {a.threads} threads, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, matmul 2048x256x1024: {gflops:.1f} GFLOP/s", flush=True)
    rows = []
    groups = (bench_gemm(want, a.min_time), bench_attention(want, a.min_time),
              bench_train(want, a.train_min_time or a.min_time, a.threads, a.train_repetitions),
              bench_decode(want, a.min_time))
    for group in groups:
        for r in group:
            console(r)
            rows.append(r)
    doc = {"context": context(a.threads, a.min_time, gflops), "benchmarks": rows}
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, a.out)


def cmd_train_one(a) -> None:
    print(json.dumps(train_one(a.variant, a.min_time, a.repetitions)))


def cmd_matmul(a) -> None:
    print(f"matmul 2048x256 @ 256x1024, {a.threads} threads, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"{matmul_rate(a.min_time):.1f}")


def evaluate(path: str, data_path: str, seq_len: int, max_windows: int, batch: int):
    """(model, loss, windows, T) of checkpoint `path` over the §6 windows of `data_path`."""
    model = M.load_checkpoint(path)
    tokens = M.read_tokens(data_path)
    c = model.c
    T = seq_len or c.max_seq_len
    if T < 1 or T > c.max_seq_len:
        raise ValueError(f"--seq-len {T} must be between 1 and the checkpoint's max_seq_len = {c.max_seq_len}")
    windows = (tokens.size - 1) // T  # window k: k*T + T + 1 <= N
    if windows < 1:
        raise ValueError(f"{data_path}: its {tokens.size} tokens hold no window of {T}")
    if max_windows > 0:
        windows = min(windows, max_windows)
    used = tokens[: windows * T + 1]
    if int(used.max()) >= c.vocab_size:
        raise ValueError(f"{data_path}: token id {int(used.max())} >= vocab_size = {c.vocab_size}")
    model.eval()
    data = torch.from_numpy(used.astype("int64"))
    total = 0.0
    with torch.inference_mode():
        for first in range(0, windows, batch):
            k = range(first, min(windows, first + batch))
            ids = torch.stack([data[i * T : i * T + T] for i in k])
            targets = torch.stack([data[i * T + 1 : i * T + T + 1] for i in k])
            logits = model(ids)
            ce = F.cross_entropy(logits.view(-1, c.vocab_size), targets.view(-1), reduction="none")
            total += float(ce.double().sum())
    return model, total / (windows * T), windows, T


def eval_model_loss(exe: str, path: str, a) -> float:
    """The loss our eval_model prints (--json) for checkpoint `path`."""
    cmd = [exe, "--checkpoint", path, "--data", a.data, "--json", "--threads", str(a.threads)]
    cmd += ["--seq-len", str(a.seq_len)] if a.seq_len else []
    cmd += ["--max-windows", str(a.max_windows)] if a.max_windows else []
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        fail(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["loss"])


def cmd_check(a) -> None:
    """Per checkpoint: a description line and eval_model's result line (the last line, for the
    last checkpoint). With --compare-with EVAL_MODEL: one line per checkpoint comparing the two
    losses, exit 1 when one differs by more than --rtol."""
    bad = 0
    for path in a.checkpoint:
        try:
            model, loss, windows, T = evaluate(path, a.data, a.seq_len, a.max_windows, a.batch)
        except (OSError, ValueError, KeyError) as e:
            fail(str(e))
        c = model.c
        n = windows * T
        if a.compare_with:
            ours = eval_model_loss(a.compare_with, path, a)
            rel = abs(loss - ours) / max(abs(ours), 1e-30)
            ok = rel <= a.rtol
            bad += not ok
            print(f"{path}: {c.attention} rope {c.rope}, {n} tokens: eval_model loss={ours:.7f}, "
                  f"PyTorch loss={loss:.7f}, relative difference {rel:.1e} {'ok' if ok else 'MISMATCH'}", flush=True)
            continue
        print(f"{path}: {c.attention} (rope {c.rope}), {sum(p.numel() for p in model.parameters())} "
              f"parameters; {windows} windows of {T} tokens of {a.data} (PyTorch {torch.__version__})")
        if a.json:
            print(json.dumps({"loss": loss, "perplexity": math.exp(loss), "tokens": n}))
        else:
            print(f"loss={loss:.6f} perplexity={math.exp(loss):.4f} tokens={n}")
    if a.compare_with:
        if bad:
            fail(f"check: PyTorch's loss differs from eval_model's by more than {a.rtol:g} (relative) "
                 f"on {bad} of {len(a.checkpoint)} checkpoints")
        print(f"check: PyTorch and eval_model agree within {a.rtol:g} (relative) on {len(a.checkpoint)} checkpoints")


def cmd_perturb(a) -> None:
    """Our checkpoint's model tensors plus N(0, std) noise, optimizer state dropped: every
    weight, norm and bias matters and the logits are large, so a loss comparison is sharp."""
    import numpy as np

    tensors, meta = M.read_safetensors(a.checkpoint)
    rng = np.random.default_rng(a.seed)
    model = {k: v + rng.normal(0.0, a.std, v.shape).astype(np.float32)
             for k, v in tensors.items() if not k.startswith(("optim.", "train."))}
    M.write_safetensors(a.out, model, {"config": meta["config"]})


def naive_headwise(layer, x):
    """Reference for HeadwiseAttention.forward: K/V repeated per query head, [B, H, T, T] scores."""
    c = layer.c
    B, T, _ = x.shape
    q, k, v = layer.project(x, 0)
    r = c.n_heads // c.n_kv_heads
    q, k, v = q.transpose(1, 2), k.repeat_interleave(r, 2).transpose(1, 2), v.repeat_interleave(r, 2).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / (c.head_dim ** 0.5)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return layer.o_proj((torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, -1))


def cmd_selftest(a) -> None:
    base = dict(vocab_size=50, d_model=48, n_heads=4, n_layers=2, max_seq_len=12)
    cases = {
        "mha none": dict(attention="mha", rope="none"),
        "mha full": dict(attention="mha", rope="full"),
        "gqa2 full": dict(attention="gqa", rope="full", n_kv_heads=2),
        "mqa full": dict(attention="mqa", rope="full"),
        "mha decoupled": dict(attention="mha", rope="decoupled"),
        "gqa2 decoupled": dict(attention="gqa", rope="decoupled", n_kv_heads=2),
        "mla": dict(attention="mla", rope="decoupled"),
        "mla q_rank 0": dict(attention="mla", rope="decoupled", q_rank=0),
        "mla ropeless": dict(attention="mla", rope="none"),
    }
    worst = 0.0
    for label, kw in cases.items():
        model = M.GPT(M.Config(**base, **kw), seed=3)
        for p in model.parameters():  # non-trivial norms and biases too
            torch.nn.init.normal_(p, std=0.3)
        ids = torch.randint(0, 50, (3, 12))
        with torch.inference_mode():
            full = model(ids)
            cache = model.make_cache(3, 12)
            steps = torch.cat([model.decode(ids[:, t : t + 1], cache, t) for t in range(12)], dim=1)
            diff = float((full - steps).abs().max())
            if kw["attention"] != "mla":
                layer = model.layers[0].attn
                x = torch.randn(3, 12, 48)
                diff = max(diff, float((layer(x) - naive_headwise(layer, x)).abs().max()))
        worst = max(worst, diff)
        print(f"{label:<16} max |forward - decode| (and |folded - naive|) = {diff:.2e}")
        names = set(model.state_dict())
        if any(n.startswith("wpe") for n in names) != (model.c.rope == "none"):
            fail(f"{label}: wpe present iff rope = none is violated")
    if worst > 1e-4:
        fail(f"selftest: max difference {worst:.2e} > 1e-4")
    print("selftest: ok")


def cmd_tokens(a) -> None:
    import numpy as np

    M.write_tokens(a.out, np.random.default_rng(a.seed).integers(0, a.vocab, size=a.count))


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    p = Parser(prog="bench_torch.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, min_time=1.0):
        sp.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
        sp.add_argument("--min-time", type=float, default=min_time, help="seconds of timed calls per row")

    r = sub.add_parser("run", help="time every row, write Google Benchmark JSON")
    common(r)
    r.add_argument("--filter", action="append", help="regex: rows whose name + '/real_time' it matches, as Google Benchmark "
                   "filters ours (default: all); "
                   "given more than once, rows that match every one")
    r.add_argument("--out", help="JSON output file")
    r.add_argument("--train-min-time", type=float, default=0.0,
                   help="seconds of timed steps per train row (default: --min-time)")
    r.add_argument("--train-repetitions", type=int, default=TRAIN_REPETITIONS,
                   help=f"timings per train row, the median one reported (default: {TRAIN_REPETITIONS})")
    t = sub.add_parser("train-one", help="(internal) one train/<variant> row as JSON")
    common(t)
    t.add_argument("--variant", choices=VARIANTS, required=True)
    t.add_argument("--repetitions", type=int, default=TRAIN_REPETITIONS)
    m = sub.add_parser("matmul", help="GFLOP/s of a 2048x256 @ 256x1024 matmul")
    common(m, 0.5)
    c = sub.add_parser("check", help="eval loss of one of our checkpoints, as eval_model prints it")
    common(c)
    c.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints")
    c.add_argument("--data", required=True)
    c.add_argument("--seq-len", type=int, default=0, help="window length T (default: the checkpoint's max_seq_len)")
    c.add_argument("--max-windows", type=int, default=0, help="score only the first N windows (default: all)")
    c.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    c.add_argument("--json", action="store_true", help="last line as a JSON object")
    c.add_argument("--compare-with", metavar="EVAL_MODEL", help="our eval_model: run it on each checkpoint, compare")
    c.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of --compare-with")
    q = sub.add_parser("perturb", help="a checkpoint's model tensors plus noise, as a new checkpoint")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--std", type=float, default=0.3)
    q.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("selftest", help="decode equals forward, folded GQA equals naive")
    common(s)
    k = sub.add_parser("tokens", help="random token file (llm.c format)")
    k.add_argument("--out", required=True)
    k.add_argument("--count", type=int, required=True)
    k.add_argument("--vocab", type=int, required=True)
    k.add_argument("--seed", type=int, default=1)

    a = p.parse_args(argv)
    if getattr(a, "threads", 1) < 1:
        fail(f"--threads {a.threads} must be at least 1", 2)
    if getattr(a, "min_time", 1.0) <= 0:
        fail(f"--min-time {a.min_time} must be positive", 2)
    for flag, value in (("--train-repetitions", getattr(a, "train_repetitions", 1)),
                        ("--repetitions", getattr(a, "repetitions", 1))):
        if value < 1:
            fail(f"{flag} {value} must be at least 1", 2)
    if getattr(a, "train_min_time", 0.0) < 0:
        fail(f"--train-min-time {a.train_min_time} must not be negative", 2)
    if a.cmd in ("tokens", "perturb"):
        sys.path.insert(0, HERE)
        sys.dont_write_bytecode = True
        global M
        import model as M  # noqa: E402 (numpy only: no threads to set up)

        return cmd_tokens(a) if a.cmd == "tokens" else cmd_perturb(a)
    import_torch(a.threads)
    {"run": cmd_run, "train-one": cmd_train_one, "matmul": cmd_matmul, "check": cmd_check,
     "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    main()
