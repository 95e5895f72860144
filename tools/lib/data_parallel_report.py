#!/usr/bin/env python3
"""data_parallel_report.py — docs/data_parallel.md from tools/bench_data_parallel.sh's measurements:
the all-reduce (bench_allreduce's JSON), the training rates of one process against two ranks, and
the all-reduce of a ring on a cluster on paper, against the step time this machine's rate implies.
"""
import argparse
import json
import re
import statistics

p = argparse.ArgumentParser()
p.add_argument("--allreduce", required=True)
p.add_argument("--rates", required=True)
p.add_argument("--parameters", type=int, required=True)
p.add_argument("--tokens-per-step", type=int, required=True)
p.add_argument("--steps", type=int, required=True)
p.add_argument("--machine", required=True)
p.add_argument("--command", required=True)
p.add_argument("--date", required=True, help="when the measurements began")
p.add_argument("--out", required=True)
p.add_argument("--docs")
a = p.parse_args()

# --- the all-reduce -----------------------------------------------------------------------------
rows = {}
for b in json.load(open(a.allreduce))["benchmarks"]:
    m = re.match(r"allreduce/(\w+)/elements:(\d+)", b["name"])
    if not m or b.get("run_type") == "aggregate":
        continue
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    rows.setdefault(int(m.group(2)), {})[m.group(1)] = (b["real_time"] * scale, b["bus_bytes_per_second"], b["ranks"])
default_elements = min(rows)

# --- training: one process against two ranks ----------------------------------------------------
rates = {"one": [], "two": []}
identical = set()
for line in open(a.rates):
    side, rate, same = line.strip().split(",")
    rates[side].append(float(rate))
    identical.add(same)
one, two = statistics.median(rates["one"]), statistics.median(rates["two"])
step_one = a.tokens_per_step / one  # seconds per step, one process
allreduce_ms = rows[default_elements]["rank_order"][0]
mpi_sum_ms = rows[default_elements]["mpi_sum"][0]
# This machine's training rate in FLOP/s by the usual 6 x parameters per token.
flops = 6.0 * a.parameters * one

date = a.date
out = []
w = out.append
w("# Data-parallel training: what the all-reduce costs\n")
w(f"Measured by `{a.command}` on {date}; machine: {a.machine}. "
  "Regenerate with the same command (it rewrites this file).\n")
w("## The all-reduce on this machine (2 ranks, shared memory)\n")
w("`mpirun -np 2 bench_allreduce`: one float32 buffer summed over the ranks; the time of an "
  "iteration is its slowest rank's, averaged over the iterations; bus rate = 2(N−1)/N × bytes / time (what each rank sends "
  "and receives in a ring). *rank order* is train_model's deterministic sum (MPI_Alltoallv of "
  "chunks, an ordered add, MPI_Allgatherv); *MPI_SUM* is `MPI_Allreduce`, whose order Open MPI "
  "does not fix.\n")
w("| buffer | MB | rank order (ms) | MPI_SUM (ms) | rank order / MPI_SUM | rank order, bus GB/s |")
w("|---|---:|---:|---:|---:|---:|")
for n in sorted(rows):
    r, s = rows[n]["rank_order"], rows[n]["mpi_sum"]
    label = f"default model's gradients ({n:,} floats)" if n == default_elements else f"{n:,} floats"
    w(f"| {label} | {4 * n / 1e6:.1f} | {r[0]:.2f} | {s[0]:.2f} | {r[0] / s[0]:.2f} | {r[1] / 1e9:.2f} |")
w("")
w(f"## Training the default model: two ranks against one process\n")
w(f"{a.steps} steps of the default MLA model, {a.tokens_per_step:,} tokens a step (batch 8 × 256 × 2 "
  "micro-batches): one process at `--threads 2 --accum 2` against `mpirun -np 2 --bind-to core` at "
  f"`--threads 1`, {len(rates['one'])} rounds alternating, median tokens/s. Both take the same "
  "micro-batches and sum them in the same order.\n")
w("| run | tokens/s | relative |")
w("|---|---:|---:|")
w(f"| one process, 2 threads, --accum 2 | {one:,.0f} | 1.00 |")
w(f"| mpirun -np 2, 1 thread each | {two:,.0f} | {two / one:.2f} |")
w("")
w(f"Same checkpoint bytes from both: **{'yes' if identical == {'yes'} else 'no'}**. One step takes "
  f"{step_one * 1e3:.0f} ms in one process; the all-reduce of its {4 * default_elements / 1e6:.1f} MB of "
  f"gradients {allreduce_ms:.1f} ms ({100 * allreduce_ms / 1e3 / step_one:.1f}% of the step; "
  f"MPI_SUM would take {mpi_sum_ms:.1f} ms). Two single-threaded ranks against two threads in one "
  "process trade the threads' fork/join and shared caches for the all-reduce and a second copy of "
  "the model.\n")

# --- on paper: a ring all-reduce on a cluster ---------------------------------------------------
w("## On paper: 8 and 64 machines\n")
w("A ring all-reduce moves 2(N−1)/N × the gradient bytes through each machine's link, so it "
  "takes t = 2(N−1)/N × 4P / bandwidth for P float32 parameters. train_model does not overlap it "
  "with the backward, so a step takes compute + t. Compute per machine is 6P × tokens per machine "
  f"per step / F; here F = {flops / 1e9:.0f} GFLOP/s, this machine's measured rate (6 × "
  f"{a.parameters:,} parameters × {one:,.0f} tokens/s), and every machine takes "
  f"{a.tokens_per_step:,} tokens a step, as above. (The rank-order sum moves the same bytes as a "
  "ring; its extra cost on a network is the ordered add, which runs at memory speed.)\n")
w("| model | machines | network | all-reduce | compute/step | all-reduce / compute |")
w("|---|---:|---:|---:|---:|---:|")
models = [("default (this one)", a.parameters), ("1B parameters", 1_000_000_000)]
for name, P in models:
    compute = 6.0 * P * a.tokens_per_step / flops
    for N in (8, 64):
        for gbit in (10, 100):
            t = 2 * (N - 1) / N * 4 * P / (gbit * 1e9 / 8)
            w(f"| {name} | {N} | {gbit} Gb/s | {t:.3g} s | {compute:.3g} s | {t / compute:.2f} |")
w("")
gpu = 400e12  # float32 is not what a GPU trains in; bf16 on an H100 at ~40% of its 989 TFLOP/s
def ratio(F, gbit, N, tokens):
    return (2 * (N - 1) / N * 4) / (gbit * 1e9 / 8) * F / (6.0 * tokens)
w("The ratio does not depend on the model: P cancels, leaving "
  "all-reduce / compute = 8(N−1)/N × F / (6 × bandwidth × tokens per machine per step). So on these "
  f"CPUs ({flops / 1e9:.0f} GFLOP/s) the all-reduce costs {100 * ratio(flops, 10, 64, a.tokens_per_step):.0f}% "
  f"of a step at 10 Gb/s and 64 machines, and a cheap network is enough. A machine that computes "
  f"faster moves the line: a GPU training at {gpu / 1e12:.0f} TFLOP/s (an H100 at 40% of its bf16 "
  f"peak) with the same {a.tokens_per_step:,} tokens would spend {ratio(gpu, 10, 64, a.tokens_per_step):.0f}× "
  f"its compute in the all-reduce at 10 Gb/s and {ratio(gpu, 100, 64, a.tokens_per_step):.0f}× at 100 Gb/s. "
  "That is the point where a user needs one of:\n")
need = ratio(gpu, 100, 64, 1) / 0.1  # tokens per machine per step that bring it under 10%
w(f"- **larger batches**: compute grows with the tokens per step, the all-reduce does not; under "
  f"10% on 100 Gb/s needs about {need:,.0f} tokens per GPU per step (by gradient accumulation, "
  "`--accum`), which costs optimizer steps per token;")
w("- **overlap and compression**: all-reducing each layer's gradients while the backward goes on "
  "(buckets, as PyTorch DDP does), or sending fewer bits (bf16, 8-bit or top-k gradients);")
w("- **ZeRO-style sharding**: for memory more than for bytes — a 1B model trained in float32 holds "
  "16 bytes a parameter (weights, gradients, AdamW's two moments: 16 GB) on every rank; sharding the "
  "optimizer state and gradients over N ranks divides that by N, for the same traffic "
  "(reduce-scatter + all-gather is what the rank-order sum already does).")
w("")
text = "\n".join(out)
open(a.out, "w").write(text)
if a.docs:
    open(a.docs, "w").write(text)
