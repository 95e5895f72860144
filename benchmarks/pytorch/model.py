"""The GPT of docs/design.md §4 in PyTorch: the peer that tools/bench.sh times our library against.

Legend: B batch, T time, D d_model, V vocab, H query heads, G kv heads, Dh head dim, N unrotated
(nope) and R rotated (rope) dims of a query/key head, Dv value head dim, Dq query rank, Dc kv
(latent) rank, S cache slots.

Parameter names are those of docs/design.md §5, so `GPT.state_dict()` maps 1:1 onto the tensors of
one of our checkpoints (see `load_checkpoint`). Written for torch 1.13 (Debian 12's
python3-torch): attention is spelled out (matmul, causal mask, softmax, matmul), as 1.13 has no
scaled_dot_product_attention.

  x = wte[ids] (+ wpe[positions] when rope = none)                          [B, T, D]
  n_layers pre-norm blocks:  x = x + attn(ln1(x));  x = x + fc2(relu(fc1(ln2(x))))
  logits = lm_head(ln_f(x))                                                  [B, T, V]

Decoding (`GPT.decode`) runs one new token per row against preallocated caches: MHA/GQA/MQA
cache rotated K and V [B, G, S, Dh]; MLA caches c_kv [B, S, Dc] (after kv_a_layernorm) and
k_pe [B, S, R] (rotated), and every step decompresses kv_b_proj over the whole cached latent,
as the seed does (no absorption).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------------------------
# Configuration (the "config" of a checkpoint's __metadata__, docs/design.md §5)


@dataclasses.dataclass
class Config:
    vocab_size: int = 8192
    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 4
    max_seq_len: int = 256
    attention: str = "mha"  # mha | gqa | mqa | mla
    rope: str = "full"  # none | full | decoupled
    n_kv_heads: int = -1  # mha: H, mqa: 1, gqa: required (our trainer's default is 2)
    head_dim: int = -1  # default D / H
    q_rank: int = -1  # mla; default D/2, 0 = no query compression
    kv_rank: int = -1  # mla; default 2D/3
    qk_nope_dim: int = -1  # mla and decoupled rope; default Dh - R
    qk_rope_dim: int = -1  # mla and decoupled rope; default Dh/2
    v_head_dim: int = -1  # mla; default Dh
    rope_theta: float = 10000.0
    ln_eps: float = 1e-5
    latent_norm: str = "layernorm"  # mla: layernorm | rmsnorm | none

    def resolved(self) -> "Config":
        """A copy with every default of docs/design.md §4 filled in, checked."""
        c = dataclasses.replace(self)
        if c.attention not in ("mha", "gqa", "mqa", "mla"):
            raise ValueError(f"attention = {c.attention!r} must be mha, gqa, mqa or mla")
        if c.rope not in ("none", "full", "decoupled"):
            raise ValueError(f"rope = {c.rope!r} must be none, full or decoupled")
        if c.head_dim < 0:
            if c.d_model % c.n_heads:
                raise ValueError(f"d_model = {c.d_model} is not a multiple of n_heads = {c.n_heads}")
            c.head_dim = c.d_model // c.n_heads
        dh = c.head_dim
        if c.attention == "mla":
            if c.rope == "full":
                raise ValueError("rope = full is not defined for mla (use decoupled or none)")
            c.q_rank = c.d_model // 2 if c.q_rank < 0 else c.q_rank
            c.kv_rank = 2 * c.d_model // 3 if c.kv_rank < 0 else c.kv_rank
            if c.rope == "none":
                c.qk_rope_dim = 0
            elif c.qk_rope_dim < 0:
                c.qk_rope_dim = dh // 2
            c.qk_nope_dim = dh - c.qk_rope_dim if c.qk_nope_dim < 0 else c.qk_nope_dim
            c.v_head_dim = dh if c.v_head_dim < 0 else c.v_head_dim
            c.rope = "decoupled" if c.qk_rope_dim > 0 else "none"
            c.n_kv_heads = c.n_heads
        else:
            default_g = {"mha": c.n_heads, "mqa": 1, "gqa": 2}[c.attention]
            c.n_kv_heads = default_g if c.n_kv_heads < 0 else c.n_kv_heads
            if c.n_heads % c.n_kv_heads:
                raise ValueError(f"n_heads = {c.n_heads} is not a multiple of n_kv_heads = {c.n_kv_heads}")
            if c.rope == "decoupled":
                c.qk_rope_dim = dh // 2 if c.qk_rope_dim < 0 else c.qk_rope_dim
            else:
                c.qk_rope_dim = dh if c.rope == "full" else 0
            c.qk_nope_dim = dh - c.qk_rope_dim
            c.v_head_dim = dh
        if c.latent_norm not in ("layernorm", "rmsnorm", "none") or (c.attention != "mla" and c.latent_norm != "layernorm"):
            raise ValueError(f"latent_norm = {c.latent_norm!r} must be layernorm, rmsnorm or none (mla only)")
        if c.qk_rope_dim % 2:
            raise ValueError(f"qk_rope_dim = {c.qk_rope_dim} must be even")
        return c

    @staticmethod
    def from_json(text: str) -> "Config":
        d = json.loads(text)
        fields = {f.name for f in dataclasses.fields(Config)}
        return Config(**{k: v for k, v in d.items() if k in fields}).resolved()


# --------------------------------------------------------------------------------------------
# RoPE, rotate-half form (docs/design.md §4)


class Rope(nn.Module):
    """cos/sin tables [max_seq_len, R/2] for R rotated dims; angles in double, then float32
    (as our library computes them)."""

    def __init__(self, dim: int, max_seq_len: int, theta: float):
        super().__init__()
        half = dim // 2
        i = torch.arange(half, dtype=torch.float64)
        inv_freq = theta ** (-2.0 * i / dim)
        angle = torch.arange(max_seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x [B, T, ..., R] at positions start..start+T-1."""
        T, half = x.shape[1], x.shape[-1] // 2
        shape = [1, T] + [1] * (x.dim() - 3) + [half]
        cos = self.cos[start : start + T].view(shape)
        sin = self.sin[start : start + T].view(shape)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def causal_mask(rows: int, T: int) -> torch.Tensor:
    """Additive mask [rows, T] for `rows` queries (rows = r*T: r query heads folded into time)
    at positions (row % T): 0 where key position <= query position, -inf elsewhere. Built once
    per shape (and per inference mode: an inference tensor must not meet autograd)."""
    return _causal_mask(rows, T, torch.is_inference_mode_enabled())


@functools.lru_cache(maxsize=8)
def _causal_mask(rows: int, T: int, inference: bool) -> torch.Tensor:
    q = torch.arange(rows) % T
    k = torch.arange(T)
    return torch.zeros(rows, T).masked_fill(k[None, :] > q[:, None], float("-inf"))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v over the last two dims (q is scaled: fewer elements)."""
    s = torch.matmul(q * scale, k.transpose(-1, -2))
    if mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


# --------------------------------------------------------------------------------------------
# Attention layers


class HeadwiseAttention(nn.Module):
    """MHA / GQA / MQA with rope none, full or decoupled. Query head h uses kv head h // (H/G):
    the H/G query heads of a group are folded into the time axis ([B, G, (H/G)*T, Dh]) so one
    matmul per group serves them all without copying K or V."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        D, H, G, dh, N, R = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.qk_nope_dim, c.qk_rope_dim
        k_out = G * N + R if c.rope == "decoupled" else G * dh
        self.q_proj = nn.Linear(D, H * dh, bias=False)
        self.k_proj = nn.Linear(D, k_out, bias=False)
        self.v_proj = nn.Linear(D, G * dh, bias=False)
        self.o_proj = nn.Linear(H * dh, D, bias=False)
        self.rope = Rope(R, c.max_seq_len, c.rope_theta) if R > 0 else None
        self.scale = 1.0 / math.sqrt(dh)

    def project(self, x: torch.Tensor, start: int):
        """q [B, T, H, Dh], k [B, T, G, Dh] rotated, v [B, T, G, Dh]."""
        c = self.c
        B, T, _ = x.shape
        H, G, dh, N, R = c.n_heads, c.n_kv_heads, c.head_dim, c.qk_nope_dim, c.qk_rope_dim
        q = self.q_proj(x).view(B, T, H, dh)
        k = self.k_proj(x)
        v = self.v_proj(x).view(B, T, G, dh)
        if c.rope == "full":
            q = self.rope(q, start)
            k = self.rope(k.view(B, T, G, dh), start)
        elif c.rope == "decoupled":
            q = torch.cat((q[..., :N], self.rope(q[..., N:], start)), dim=-1)
            k_pe = self.rope(k[..., G * N :], start)  # [B, T, R], shared by every kv head
            k = torch.cat((k[..., : G * N].view(B, T, G, N), k_pe[:, :, None, :].expand(B, T, G, R)), dim=-1)
        else:
            k = k.view(B, T, G, dh)
        return q, k, v

    def fold(self, q: torch.Tensor) -> torch.Tensor:
        """[B, T, H, Dh] -> [B, G, (H/G)*T, Dh]."""
        B, T, H, dh = q.shape
        G = self.c.n_kv_heads
        return q.view(B, T, G, H // G, dh).permute(0, 2, 3, 1, 4).reshape(B, G, (H // G) * T, dh)

    def unfold(self, o: torch.Tensor, T: int) -> torch.Tensor:
        """[B, G, (H/G)*T, Dh] -> [B, T, H*Dh]."""
        B, G, _, dh = o.shape
        return o.view(B, G, -1, T, dh).permute(0, 3, 1, 2, 4).reshape(B, T, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D], causal, positions 0..T-1."""
        T = x.shape[1]
        q, k, v = self.project(x, 0)
        qf = self.fold(q)
        mask = causal_mask(qf.shape[2], T)
        o = attend(qf, k.transpose(1, 2), v.transpose(1, 2), self.scale, mask)
        return self.o_proj(self.unfold(o, T))

    def make_cache(self, B: int, S: int) -> dict:
        c = self.c
        return {"k": torch.zeros(B, c.n_kv_heads, S, c.head_dim), "v": torch.zeros(B, c.n_kv_heads, S, c.head_dim)}

    def decode(self, x: torch.Tensor, cache: dict, pos: int) -> torch.Tensor:
        """One new token per row, x [B, 1, D] at position `pos`: writes its K and V into the
        cache, attends over the pos+1 cached tokens."""
        q, k, v = self.project(x, pos)
        cache["k"][:, :, pos] = k[:, 0]
        cache["v"][:, :, pos] = v[:, 0]
        L = pos + 1
        o = attend(self.fold(q), cache["k"][:, :, :L], cache["v"][:, :, :L], self.scale, None)
        return self.o_proj(self.unfold(o, 1))


class RmsNorm(nn.Module):
    """DeepSeek's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def latent_norm(c: "Config", size: int) -> nn.Module:
    """The norm of an MLA latent, as the config's latent_norm says (docs/design.md §4)."""
    if c.latent_norm == "rmsnorm":
        return RmsNorm(size, c.ln_eps)
    if c.latent_norm == "none":
        return nn.Identity()
    return nn.LayerNorm(size, eps=c.ln_eps)


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2) with decoupled RoPE (R > 0) or none (R = 0)."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        D, H, N, R, Dv, Dq, Dc = c.d_model, c.n_heads, c.qk_nope_dim, c.qk_rope_dim, c.v_head_dim, c.q_rank, c.kv_rank
        if Dq > 0:
            self.q_a_proj = nn.Linear(D, Dq, bias=False)
            self.q_a_layernorm = latent_norm(c, Dq)
            self.q_b_proj = nn.Linear(Dq, H * (N + R), bias=False)
        else:
            self.q_proj = nn.Linear(D, H * (N + R), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, Dc + R, bias=False)
        self.kv_a_layernorm = latent_norm(c, Dc)
        self.kv_b_proj = nn.Linear(Dc, H * (N + Dv), bias=False)
        self.o_proj = nn.Linear(H * Dv, D, bias=False)
        self.rope = Rope(R, c.max_seq_len, c.rope_theta) if R > 0 else None
        self.scale = 1.0 / math.sqrt(N + R)

    def query(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """[B, H, T, N+R], the R part of every head rotated."""
        c = self.c
        B, T, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if c.q_rank > 0 else self.q_proj(x)
        q = q.view(B, T, c.n_heads, c.qk_nope_dim + c.qk_rope_dim)
        if c.qk_rope_dim > 0:
            q = torch.cat((q[..., : c.qk_nope_dim], self.rope(q[..., c.qk_nope_dim :], start)), dim=-1)
        return q.transpose(1, 2)

    def latent(self, x: torch.Tensor, start: int):
        """c_kv [B, T, Dc] (normalized), k_pe [B, T, R] (rotated) or None."""
        c = self.c
        kv_a = self.kv_a_proj_with_mqa(x)
        c_kv = self.kv_a_layernorm(kv_a[..., : c.kv_rank])
        k_pe = self.rope(kv_a[..., c.kv_rank :], start) if c.qk_rope_dim > 0 else None
        return c_kv, k_pe

    def decompress(self, c_kv: torch.Tensor, k_pe):
        """Keys [B, H, L, N+R] and values [B, H, L, Dv] of every head."""
        c = self.c
        B, L, _ = c_kv.shape
        H, N, R = c.n_heads, c.qk_nope_dim, c.qk_rope_dim
        kv = self.kv_b_proj(c_kv).view(B, L, H, N + c.v_head_dim).transpose(1, 2)
        k, v = kv[..., :N], kv[..., N:]
        if R > 0:
            k = torch.cat((k, k_pe[:, None, :, :].expand(B, H, L, R)), dim=-1)
        return k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D], causal, positions 0..T-1."""
        B, T, _ = x.shape
        q = self.query(x, 0)
        k, v = self.decompress(*self.latent(x, 0))
        o = attend(q, k, v, self.scale, causal_mask(T, T))
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))

    def make_cache(self, B: int, S: int) -> dict:
        c = self.c
        return {"c_kv": torch.zeros(B, S, c.kv_rank), "k_pe": torch.zeros(B, S, c.qk_rope_dim)}

    def decode(self, x: torch.Tensor, cache: dict, pos: int) -> torch.Tensor:
        """One new token per row at position `pos`: writes c_kv and k_pe, then decompresses the
        pos+1 cached latents through kv_b_proj and attends over them (the reference experiments' MLA decode)."""
        B = x.shape[0]
        q = self.query(x, pos)
        c_kv, k_pe = self.latent(x, pos)
        L = pos + 1
        cache["c_kv"][:, pos] = c_kv[:, 0]
        if k_pe is not None:
            cache["k_pe"][:, pos] = k_pe[:, 0]
        k, v = self.decompress(cache["c_kv"][:, :L], cache["k_pe"][:, :L] if k_pe is not None else None)
        o = attend(q, k, v, self.scale, None)
        return self.o_proj(o.transpose(1, 2).reshape(B, 1, -1))


def attention_layer(c: Config) -> nn.Module:
    return LatentAttention(c) if c.attention == "mla" else HeadwiseAttention(c)


# --------------------------------------------------------------------------------------------
# The model


class Mlp(nn.Module):
    def __init__(self, D: int):
        super().__init__()
        self.fc1 = nn.Linear(D, 4 * D)
        self.fc2 = nn.Linear(4 * D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.attn = attention_layer(c)
        self.ln2 = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.mlp = Mlp(c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def decode(self, x: torch.Tensor, cache: dict, pos: int) -> torch.Tensor:
        x = x + self.attn.decode(self.ln1(x), cache, pos)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, c: Config, seed: int = 1):
        super().__init__()
        self.c = c = c.resolved()
        torch.manual_seed(seed)
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.max_seq_len, c.d_model) if c.rope == "none" else None
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size)
        # GPT-2 style scale (the values do not matter for timing; a checkpoint replaces them).
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        x = self.wte(ids)
        if self.wpe is not None:
            x = x + self.wpe.weight[start : start + ids.shape[1]]
        return x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V], positions 0..T-1."""
        x = self.embed(ids, 0)
        for blk in self.layers:
            x = blk(x)
        return self.lm_head(self.ln_f(x))

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the next-token predictions."""
        logits = self(ids)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))

    def make_cache(self, B: int, S: int) -> list:
        return [blk.attn.make_cache(B, S) for blk in self.layers]

    def cache_bytes_per_token(self) -> int:
        """Bytes a `make_cache` cache holds per token, all layers."""
        c = self.c
        per_layer = c.kv_rank + c.qk_rope_dim if c.attention == "mla" else 2 * c.n_kv_heads * c.head_dim
        return 4 * per_layer * c.n_layers

    def decode(self, ids: torch.Tensor, cache: list, pos: int) -> torch.Tensor:
        """ids [B, 1] at position `pos` of every row -> logits [B, 1, V]; appends to `cache`."""
        x = self.embed(ids, pos)
        for blk, layer_cache in zip(self.layers, cache):
            x = blk.decode(x, layer_cache, pos)
        return self.lm_head(self.ln_f(x))


# --------------------------------------------------------------------------------------------
# Our files: safetensors checkpoints (docs/design.md §5) and llm.c token files (§6)

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
           "U16": np.uint16, "F16": np.float16, "BF16": None}


def read_safetensors(path: str):
    """(tensors {name: np.ndarray}, metadata {str: str}) of a safetensors file, parsed by hand:
    8-byte little-endian header length, JSON header, raw little-endian row-major data."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: truncated (no header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: truncated (header of {n} bytes, file of {len(blob)})")
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n :]
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            continue  # a dtype we never write (bf16): not ours to check
        begin, end = info["data_offsets"]
        if end > len(data):
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        arr = np.frombuffer(data[begin:end], dtype=np.dtype(dtype).newbyteorder("<"))
        tensors[name] = arr.reshape(info["shape"])
    return tensors, meta


def write_safetensors(path: str, tensors: dict, metadata: dict) -> None:
    """float32 tensors {name: np.ndarray} and string metadata as one safetensors file."""
    header, offset = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        n = t.size * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())


def load_checkpoint(path: str):
    """A GPT with the weights of one of our checkpoints (optim.* / train.* tensors ignored)."""
    tensors, meta = read_safetensors(path)
    if "config" not in meta:
        raise ValueError(f"{path}: no __metadata__.config")
    model = GPT(Config.from_json(meta["config"]))
    ours = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "train."))}
    state = model.state_dict()
    missing = sorted(set(state) - set(ours))
    extra = sorted(set(ours) - set(state))
    if missing or extra:
        raise ValueError(f"{path}: tensors do not match the model: missing {missing}, unexpected {extra}")
    for name, t in state.items():
        if tuple(ours[name].shape) != tuple(t.shape):
            raise ValueError(f"{path}: {name} has shape {list(ours[name].shape)}, the model wants {list(t.shape)}")
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in ours.items()})
    return model


TOKEN_MAGIC = 20240520


def read_tokens(path: str) -> np.ndarray:
    """The uint16 tokens of an llm.c token file (header of 256 int32: magic, version 1, count)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype="<i4")
        if header.size != 256 or header[0] != TOKEN_MAGIC:
            raise ValueError(f"{path}: not an llm.c token file (bad magic)")
        if header[1] != 1:
            raise ValueError(f"{path}: version {header[1]}, expected 1 (uint16 tokens)")
        tokens = np.frombuffer(f.read(), dtype="<u2")
    if tokens.size != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, the file holds {tokens.size}")
    return tokens


def write_tokens(path: str, tokens) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = (TOKEN_MAGIC, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
