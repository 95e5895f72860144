#!/usr/bin/python3
"""bench_gpu.py — PyTorch eager float32 training on a CUDA GPU, the peer of bench_gpu's train rows.

  bench_gpu.py [--quick]

Prints `train/<variant>/<size> <tokens/s> tokens/s` lines for MHA, GQA (2 kv heads) and MLA at the
default size (d 256, 8 heads, 4 layers, vocab 10000, T 256, batch 8) and the GPU size (d 1024,
16 heads, 12 layers, vocab 32768, T 1024, batch 16; MLA q_rank 512, kv_rank 512, rope 32), with
the same model (model.py, the contracts of docs/design.md §4), step (loss, backward, clipping at
1, AdamW) and timing (median of timed steps after warm-up, the device synchronized around each)
as bench_gpu. TF32 stays off, as in ours.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import model as M  # noqa: E402


def sizes(quick: bool):
    default = dict(vocab_size=10000, d_model=256, n_heads=8, n_layers=4, max_seq_len=256), 256, 8
    if quick:
        gpu = dict(vocab_size=4096, d_model=512, n_heads=8, n_layers=2, max_seq_len=256), 256, 4
    else:
        gpu = dict(vocab_size=32768, d_model=1024, n_heads=16, n_layers=12, max_seq_len=1024), 1024, 16
    return [("default", *default), ("gpu", *gpu)]


def config(variant: str, size_name: str, base: dict, quick: bool) -> M.Config:
    if variant == "mha":
        return M.Config(**base, attention="mha", rope="full")
    if variant == "gqa":
        return M.Config(**base, attention="gqa", rope="full", n_kv_heads=2)
    extra = dict(q_rank=512, kv_rank=512, qk_rope_dim=32) if size_name == "gpu" and not quick else {}
    return M.Config(**base, attention="mla", rope="decoupled", **extra)


def median_seconds(step, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def train(variant: str, size_name: str, base: dict, T: int, B: int, quick: bool) -> float:
    model = M.GPT(config(variant, size_name, base, quick), seed=1).cuda()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, base["vocab_size"], (B, T), generator=g).cuda()
    targets = torch.randint(0, base["vocab_size"], (B, T), generator=g).cuda()
    params = list(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    s = median_seconds(step, 2, 2 if quick else 5)
    del model, opt
    torch.cuda.empty_cache()
    return B * T / s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device found", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    for size_name, base, T, B in sizes(args.quick):
        for variant in ("mha", "gqa", "mla"):
            tps = train(variant, size_name, base, T, B, args.quick)
            print(f"train/{variant}/{size_name} {tps:.0f} tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
