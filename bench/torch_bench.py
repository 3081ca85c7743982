#!/usr/bin/env python3
"""The PyTorch side of the LoRA benchmark: the same training step, in plain torch (fp32).

Loads the weights the Node side wrote (weights.safetensors: every parameter under its module path,
Linear layout [out, in], LoRA A [r, in] and B [out, r] at their initial values, plus the batch and
the generation prompt), then runs GPT-2 or Llama forward as Hugging Face computes it (eager
attention, no transformers package), LoRA as PEFT computes it (y = W x + b + alpha/r * B A x),
cross-entropy over the next tokens, backward, and torch.optim.AdamW over the LoRA matrices only.
Then greedy generation with a KV cache. Prints one JSON line (bench/spec.ts ChildResult).

  /usr/bin/python3 bench/torch_bench.py --probe
  /usr/bin/python3 bench/torch_bench.py --spec '<StepSpec JSON>' --weights DIR --threads N

Set OMP_NUM_THREADS=N, OPENBLAS_NUM_THREADS=N and OMP_WAIT_POLICY=PASSIVE in the environment
(bench.ts does): with 2 threads and the default wait policy, OpenMP spinning and OpenBLAS threads
oversubscribe 2 cores and the step runs 2.5x slower.
"""

import argparse
import json
import math
import os
import resource
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "I32": torch.int32}


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def blas_libraries():
    """The BLAS/LAPACK libraries this process has loaded (Linux /proc/self/maps), after one matmul."""
    torch.ones(8, 8) @ torch.ones(8, 8)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    return sorted(os.path.realpath(p) for p in paths if any(k in os.path.basename(p) for k in ("blas", "mkl")))


def load_safetensors(path):
    """name -> tensor, all views into one buffer read once (no second copy of the weights)."""
    buf = bytearray(os.path.getsize(path))
    with open(path, "rb") as f:
        f.readinto(buf)
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(bytes(buf[8 : 8 + n]))
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        count = (end - start) // 4
        t = torch.frombuffer(buf, dtype=dtype, count=count, offset=8 + n + start)
        out[name] = t.reshape(info["shape"])
    return out


class Lin:
    """nn.Linear (weight [out, in]), plus PEFT's LoRA delta when the file has lora_A/lora_B for it."""

    def __init__(self, P, path, scale):
        lora = path + ".lora_A" in P
        base = path + ".base_layer" if lora else path
        self.W = P[base + ".weight"]
        self.b = P.get(base + ".bias")
        self.A = P[path + ".lora_A"].clone().requires_grad_(True) if lora else None
        self.B = P[path + ".lora_B"].clone().requires_grad_(True) if lora else None
        self.scale = scale

    def __call__(self, x):
        y = F.linear(x, self.W, self.b)
        if self.A is not None:
            y = y + self.scale * F.linear(F.linear(x, self.A), self.B)
        return y

    def lora_params(self):
        return [] if self.A is None else [self.A, self.B]


def attend(q, k, v):
    """q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D] -> [B, Tq, Hq*D]; causal, query i at position Tk-Tq+i."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if Hkv != Hq:
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
    if Tq > 1:
        mask = torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1)
        s = s.masked_fill(mask, float("-inf"))
    y = torch.matmul(torch.softmax(s, dim=-1), v)
    return y.transpose(1, 2).reshape(B, Tq, Hq * D)


class Cache:
    """Per layer, keys and values of every position so far ([B, H, T, D]), grown by concatenation."""

    def __init__(self):
        self.kv = {}
        self.length = 0

    def append(self, layer, k, v):
        if layer in self.kv:
            pk, pv = self.kv[layer]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.kv[layer] = (k, v)
        return k, v


class GPT2:
    def __init__(self, P, cfg, scale):
        self.cfg = cfg
        self.P = P
        L = cfg["n_layer"]
        self.lin = {}
        for i in range(L):
            for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                path = f"transformer.h.{i}.{name}"
                self.lin[path] = Lin(P, path, scale)

    def forward(self, ids, cache=None):
        P, cfg = self.P, self.cfg
        C, H, eps = cfg["n_embd"], cfg["n_head"], cfg.get("layer_norm_epsilon", 1e-5)
        B, T = ids.shape
        past = cache.length if cache else 0
        x = P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][past : past + T]
        for i in range(cfg["n_layer"]):
            p = f"transformer.h.{i}."
            h = F.layer_norm(x, (C,), P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
            q, k, v = self.lin[p + "attn.c_attn"](h).split(C, dim=-1)
            q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            if cache:
                k, v = cache.append(i, k, v)
            x = x + self.lin[p + "attn.c_proj"](attend(q, k, v))
            h = F.layer_norm(x, (C,), P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
            x = x + self.lin[p + "mlp.c_proj"](F.gelu(self.lin[p + "mlp.c_fc"](h), approximate="tanh"))
        if cache:
            cache.length += T
        x = F.layer_norm(x, (C,), P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], eps)
        return F.linear(x, P["transformer.wte.weight"])  # tied head


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, offset, theta):
    """x [B, H, T, D]; HF's rotate-half convention."""
    T, D = x.shape[2], x.shape[3]
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    freqs = torch.arange(offset, offset + T, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Llama:
    def __init__(self, P, cfg, scale):
        self.cfg = cfg
        self.P = P
        self.lin = {}
        for i in range(cfg["num_hidden_layers"]):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                self.lin[f"model.layers.{i}.self_attn.{name}"] = Lin(P, f"model.layers.{i}.self_attn.{name}", scale)
            for name in ("gate_proj", "up_proj", "down_proj"):
                self.lin[f"model.layers.{i}.mlp.{name}"] = Lin(P, f"model.layers.{i}.mlp.{name}", scale)
        self.head = P.get("lm_head.weight", P["model.embed_tokens.weight"])

    def forward(self, ids, cache=None):
        P, cfg = self.P, self.cfg
        Hq = cfg["num_attention_heads"]
        Hkv = cfg.get("num_key_value_heads", Hq)
        D = cfg.get("head_dim") or cfg["hidden_size"] // Hq
        eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
        B, T = ids.shape
        past = cache.length if cache else 0
        x = P["model.embed_tokens.weight"][ids]
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
            q = self.lin[p + "self_attn.q_proj"](h).reshape(B, T, Hq, D).transpose(1, 2)
            k = self.lin[p + "self_attn.k_proj"](h).reshape(B, T, Hkv, D).transpose(1, 2)
            v = self.lin[p + "self_attn.v_proj"](h).reshape(B, T, Hkv, D).transpose(1, 2)
            q, k = rope(q, past, theta), rope(k, past, theta)
            if cache:
                k, v = cache.append(i, k, v)
            x = x + self.lin[p + "self_attn.o_proj"](attend(q, k, v))
            h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
            gate, up = self.lin[p + "mlp.gate_proj"](h), self.lin[p + "mlp.up_proj"](h)
            x = x + self.lin[p + "mlp.down_proj"](F.silu(gate) * up)
        if cache:
            cache.length += T
        return F.linear(rms_norm(x, P["model.norm.weight"], eps), self.head)


def train_record(spec, P, params, logits_of):
    """Warm-up then timed steps (logits_of(ids), cross-entropy, backward, AdamW over `params`): the
    ChildResult's train record. Shared by both Python peers."""
    ids = P["bench.input_ids"].long()
    targets = P["bench.targets"].long().reshape(-1)
    opt = torch.optim.AdamW(params, lr=spec["lr"])  # weight_decay 0.01, betas (0.9, 0.999), eps 1e-8
    losses = []

    def step():
        t0 = time.perf_counter()
        logits = logits_of(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=-100)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) * 1000

    for _ in range(spec["warmup"]):
        step()
    step_ms = [step() for _ in range(spec["steps"])]
    median_ms = statistics.median(step_ms)
    tokens = spec["batch"] * spec["seq"]
    return {
        "tokensPerStep": tokens,
        "stepMs": step_ms,
        "medianMs": median_ms,
        "tokPerSec": tokens * 1000 / median_ms,
        "losses": losses,
        "peakRssMiB": rss_mib(),
        "trainableParams": sum(p.numel() for p in params),
        "totalParams": sum(t.numel() for k, t in P.items() if not k.startswith("bench.")),
    }


def child_result(side, threads, backend, train, gen):
    """The one JSON line a Python peer prints (bench/spec.ts ChildResult)."""
    return {
        "side": side,
        "threads": threads,
        "backend": backend,
        "blas": blas_libraries(),
        "version": f"python {sys.version.split()[0]}",
        "train": train,
        "gen": gen,
        "finalRssMiB": rss_mib(),
    }


def cli(run, versions, description):
    """A peer's command line: --probe prints {torch: versions(), blas}, else run(spec, weights, threads)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--probe", action="store_true", help="print the versions and exit")
    ap.add_argument("--spec", help="StepSpec JSON (bench/spec.ts)")
    ap.add_argument("--weights", help="folder holding weights.safetensors")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.probe:
        print(json.dumps({"torch": versions(), "blas": blas_libraries()}))
        return
    if not a.spec or not a.weights:
        ap.error("--spec and --weights are required")
    print(json.dumps(run(json.loads(a.spec), a.weights, a.threads)))


def run(spec, weights_dir, threads):
    torch.set_num_threads(threads)
    P = load_safetensors(os.path.join(weights_dir, "weights.safetensors"))
    cfg = spec["config"]
    scale = spec["alpha"] / spec["r"]
    model = (GPT2 if cfg["model_type"] == "gpt2" else Llama)(P, cfg, scale)
    params = [t for lin in model.lin.values() for t in lin.lora_params()]
    train = train_record(spec, P, params, model.forward)

    gen = None
    if spec["genTokens"] > 0:
        with torch.no_grad():
            cache = Cache()
            out = []
            t0 = time.perf_counter()
            x = P["bench.prompt"].long()[None, :]
            prefill_ms = 0.0
            for _ in range(spec["genTokens"]):
                nxt = int(model.forward(x, cache)[0, -1].argmax())
                if not out:
                    prefill_ms = (time.perf_counter() - t0) * 1000
                out.append(nxt)
                x = torch.tensor([[nxt]])
            ms = (time.perf_counter() - t0) * 1000
        gen = {
            "promptTokens": spec["genPrompt"],
            "newTokens": len(out),
            "ms": ms,
            "prefillMs": prefill_ms,
            "tokPerSec": len(out) * 1000 / ms,
            "tokens": out,
        }

    return child_result("torch", threads, f"torch {torch.__version__}", train, gen)


if __name__ == "__main__":
    cli(run, lambda: torch.__version__, __doc__.split("\n")[0])
