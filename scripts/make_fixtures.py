#!/usr/bin/env python3
"""Independent PyTorch reference for the committed test fixtures.

Writes
  test/fixtures/ops/ops.json                 op cases: inputs, outputs, and input gradients
  test/fixtures/models/<name>/...            tiny Hugging Face checkpoints (+ PEFT LoRA adapters)
                                             with expected logits, losses and adapter gradients

Every random tensor is drawn in float32 (so it is exactly representable in float32), then the
reference math runs in float64 with plain torch ops written from the Hugging Face / PEFT
definitions (no transformers, peft or safetensors package is used). Stored numbers are the
float64 results rounded to float32, written with the shortest repr that round-trips.

Run from anywhere:  /usr/bin/python3 scripts/make_fixtures.py
Needs only torch (1.13+) and numpy. The output is deterministic for a given torch build.
"""

import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "test", "fixtures")
OPS_DIR = os.path.join(FIX, "ops")
MODELS_DIR = os.path.join(FIX, "models")

CHECKS = []  # (label, worst error) of the internal self-checks, printed in the summary


def check(label, ok, err=0.0):
    CHECKS.append((label, err))
    if not ok:
        raise AssertionError(f"self-check failed: {label} (err {err})")


F32_RTOL, F32_ATOL = 1e-4, 1e-5  # test/helpers.ts TOL.f32
F32_SIM = []  # (label, worst |got-want| / (atol + rtol*|want|)) of the float32 recomputation


def f32_sim(label, got32, want64):
    """Would a float32 implementation pass the consumer's f32 tolerance against this fixture?"""
    g = got32.detach().double()
    w = torch.from_numpy(want64.detach().double().numpy().astype(np.float32).astype(np.float64))
    ratio = ((g - w).abs() / (F32_ATOL + F32_RTOL * w.abs())).max().item() if w.numel() else 0.0
    F32_SIM.append((label, ratio))
    check(label + ": float32 recomputation within f32 tolerance", ratio <= 0.5, ratio)


def close_check(label, got, want, tol):
    err = (got.detach() - want.detach()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, want.detach().abs().max().item()) if want.numel() else 1.0
    check(label, err <= tol * scale, err)


# ----------------------------------------------------------------------------------------------
# Random numbers (float32-representable, returned as float64)
# ----------------------------------------------------------------------------------------------


def gen(name):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode("utf-8")))
    return g


def randn(g, shape, std=1.0, mean=0.0):
    t = torch.randn(list(shape), generator=g, dtype=torch.float32) * std + mean
    return t.double()


def randint(g, low, high, shape):
    return torch.randint(low, high, list(shape), generator=g, dtype=torch.int64)


# ----------------------------------------------------------------------------------------------
# JSON number encoding
# ----------------------------------------------------------------------------------------------


def f32_list(t):
    a = t.detach().to(torch.float64).reshape(-1).numpy().astype(np.float32)
    assert np.all(np.isfinite(a)), "non-finite value in fixture"
    return [float(str(x)) for x in a]


def tens(t):
    return {"shape": list(t.shape), "data": f32_list(t)}


def ints(t):
    return {"shape": list(t.shape), "data": [int(x) for x in t.reshape(-1).tolist()]}


def f32_scalar(x):
    return float(str(np.float32(x)))


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def write_json_pretty(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Reference ops (float64, written from the definitions)
# ----------------------------------------------------------------------------------------------


def ref_matmul(a, b, transA, transB):
    A = a.transpose(-1, -2) if transA else a
    B = b.transpose(-1, -2) if transB else b
    return A @ B


def ref_layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as torch / HF
    return (x - mean) / torch.sqrt(var + eps) * w + b


def ref_rms_norm(x, w, eps):
    var = (x * x).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * w


def ref_gelu_tanh(x):  # GPT-2 "gelu_new"
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def ref_silu(x):
    return x / (1.0 + torch.exp(-x))


def ref_softmax(x):
    m = x.max(-1, keepdim=True).values.detach()
    e = torch.exp(x - m)
    return e / e.sum(-1, keepdim=True)


def rope_cos_sin(T, D, theta, offset):
    half = D // 2
    inv_freq = torch.tensor([theta ** (-(2.0 * i) / D) for i in range(half)], dtype=torch.float64)
    pos = torch.arange(offset, offset + T, dtype=torch.float64)
    freqs = pos[:, None] * inv_freq[None, :]  # [T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [T, D]
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def ref_rope(x, theta, offset):
    """x: [B, T, H, D]; positions offset..offset+T-1; HF Llama rotate_half convention."""
    _, T, _, D = x.shape
    cos, sin = rope_cos_sin(T, D, theta, offset)
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


def ref_attention(q, k, v, causal=True):
    """q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] -> [B, Tq, Hq, D]; query i at absolute Tk-Tq+i."""
    _, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    rep = Hq // Hkv
    kk = k.repeat_interleave(rep, dim=2)  # == HF repeat_kv: query head h uses kv head h // rep
    vv = v.repeat_interleave(rep, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kk) / math.sqrt(D)
    if causal:
        qpos = torch.arange(Tq)[:, None] + (Tk - Tq)
        kpos = torch.arange(Tk)[None, :]
        s = s.masked_fill(kpos > qpos, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, vv)


def ref_cross_entropy(logits, targets, ignore_index=-100):
    V = logits.shape[-1]
    lg = logits.reshape(-1, V)
    tg = targets.reshape(-1)
    m = lg.max(-1, keepdim=True).values.detach()
    logp = lg - m - torch.log(torch.exp(lg - m).sum(-1, keepdim=True))
    keep = tg != ignore_index
    picked = logp[keep].gather(1, tg[keep][:, None])[:, 0]
    return -picked.sum() / keep.sum()


# naive loop versions, used only to check the vectorized references above


def naive_rope(x, theta, offset):
    B, T, H, D = x.shape
    half = D // 2
    out = torch.zeros_like(x)
    for t in range(T):
        p = offset + t
        for i in range(half):
            ang = p * theta ** (-(2.0 * i) / D)
            c, s = math.cos(ang), math.sin(ang)
            a, b = x[:, t, :, i], x[:, t, :, i + half]
            out[:, t, :, i] = a * c - b * s
            out[:, t, :, i + half] = b * c + a * s
    return out


def naive_attention(q, k, v):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(Hq):
            kv = h // (Hq // Hkv)
            for i in range(Tq):
                last = Tk - Tq + i
                sc = [(q[b, i, h] * k[b, j, kv]).sum() / math.sqrt(D) for j in range(last + 1)]
                w = [torch.exp(s) for s in sc]
                z = sum(w)
                for j in range(last + 1):
                    out[b, i, h] += (w[j] / z) * v[b, j, kv]
    return out


# ----------------------------------------------------------------------------------------------
# 1. Op fixtures
# ----------------------------------------------------------------------------------------------

OPS = {}


def op_case(name, op, attrs, inputs, fn, int_inputs=None, grad_names=None, builtin=None):
    """inputs: name -> float64 tensor (float32-representable); fn(inputs, ints, attrs) -> out."""
    int_inputs = int_inputs or {}
    if grad_names is None:
        grad_names = list(inputs.keys())
    xs = {k: v.clone().requires_grad_(k in grad_names) for k, v in inputs.items()}
    out = fn(xs, int_inputs, attrs)
    g = gen("grad_out/" + name)
    grad_out = randn(g, out.shape)
    grads = torch.autograd.grad((out * grad_out).sum(), [xs[k] for k in grad_names])
    # self-check: autograd vs finite differences of the float64 reference
    def f_of(*vals):
        d = dict(xs)
        for k, val in zip(grad_names, vals):
            d[k] = val
        return fn(d, int_inputs, attrs)

    ok = torch.autograd.gradcheck(
        f_of, tuple(inputs[k].clone().requires_grad_(True) for k in grad_names), eps=1e-6, atol=1e-7
    )
    check(f"ops/{name}: gradcheck", ok)
    # self-check against a torch builtin / naive version where one exists
    if builtin is not None:
        xb = {k: v.clone().requires_grad_(k in grad_names) for k, v in inputs.items()}
        ob = builtin(xb, int_inputs, attrs)
        close_check(f"ops/{name}: forward vs builtin", out, ob, 1e-12)
        gb = torch.autograd.grad((ob * grad_out).sum(), [xb[k] for k in grad_names])
        for k, a, b in zip(grad_names, grads, gb):
            close_check(f"ops/{name}: grad {k} vs builtin", a, b, 1e-12)
    # float32 recomputation (what the TypeScript side does) vs the float64 reference
    x32 = {k: v.float().requires_grad_(k in grad_names) for k, v in inputs.items()}
    o32 = fn(x32, int_inputs, attrs)
    g32 = torch.autograd.grad((o32 * grad_out.float()).sum(), [x32[k] for k in grad_names])
    f32_sim(f"ops/{name}: out", o32, out)
    for k, a, b in zip(grad_names, g32, grads):
        f32_sim(f"ops/{name}: grad {k}", a, b)
    OPS[name] = {
        "op": op,
        "attrs": attrs,
        "inputs": {k: tens(v) for k, v in inputs.items()},
        "ints": {k: ints(v) for k, v in int_inputs.items()},
        "out": tens(out),
        "grad_out": tens(grad_out),
        "grads": {k: tens(gr) for k, gr in zip(grad_names, grads)},
    }


def make_ops():
    g = gen("ops")

    # matmul --------------------------------------------------------------------------------
    def mm(x, _i, a):
        return ref_matmul(x["a"], x["b"], a["transA"], a["transB"])

    def mm_builtin(x, _i, a):
        A = x["a"].transpose(-1, -2).contiguous() if a["transA"] else x["a"]
        B = x["b"].transpose(-1, -2).contiguous() if a["transB"] else x["b"]
        return torch.matmul(A, B)

    M, K, N = 3, 5, 7
    for tA in (False, True):
        for tB in (False, True):
            nm = "matmul_" + ("t" if tA else "n") + ("t" if tB else "n")
            a = randn(g, [2, K, M] if tA else [2, M, K])
            b = randn(g, [N, K] if tB else [K, N])
            op_case(nm, "matmul", {"transA": tA, "transB": tB}, {"a": a, "b": b}, mm, builtin=mm_builtin)
    op_case(
        "matmul_batched",
        "matmul",
        {"transA": False, "transB": False},
        {"a": randn(g, [2, 3, 5]), "b": randn(g, [2, 5, 4])},
        mm,
        builtin=mm_builtin,
    )
    op_case(
        "matmul_batched_nt",
        "matmul",
        {"transA": False, "transB": True},
        {"a": randn(g, [2, 3, 5]), "b": randn(g, [2, 4, 5])},
        mm,
        builtin=mm_builtin,
    )
    op_case(
        "matmul_batched_tn",
        "matmul",
        {"transA": True, "transB": False},
        {"a": randn(g, [2, 5, 3]), "b": randn(g, [2, 5, 4])},
        mm,
        builtin=mm_builtin,
    )
    op_case(
        "matmul_2d_m1",
        "matmul",
        {"transA": False, "transB": False},
        {"a": randn(g, [1, 5]), "b": randn(g, [5, 7])},
        mm,
        builtin=mm_builtin,
    )

    # add / mul -----------------------------------------------------------------------------
    bshapes = {
        "bcast_last": ([2, 3, 4], [4]),
        "bcast_mid": ([2, 1, 4], [3, 1]),
        "scalar": ([5], []),
        "same": ([3, 5], [3, 5]),
    }
    for opn, f, fb in (
        ("add", lambda x, _i, _a: x["a"] + x["b"], lambda x, _i, _a: torch.add(x["a"], x["b"])),
        ("mul", lambda x, _i, _a: x["a"] * x["b"], lambda x, _i, _a: torch.mul(x["a"], x["b"])),
    ):
        for tag, (sa, sb) in bshapes.items():
            op_case(f"{opn}_{tag}", opn, {}, {"a": randn(g, sa), "b": randn(g, sb)}, f, builtin=fb)

    # embedding -----------------------------------------------------------------------------
    ids = torch.tensor([[3, 0, 10, 3, 7], [7, 7, 1, 10, 5]], dtype=torch.int64)
    op_case(
        "embedding",
        "embedding",
        {},
        {"weight": randn(g, [11, 6])},
        lambda x, i, _a: x["weight"][i["ids"]],
        int_inputs={"ids": ids},
        builtin=lambda x, i, _a: F.embedding(i["ids"], x["weight"]),
    )

    # norms ---------------------------------------------------------------------------------
    op_case(
        "layer_norm",
        "layer_norm",
        {"eps": 1e-5},
        {"x": randn(g, [2, 3, 7], 1.5, 0.3), "weight": randn(g, [7], 0.2, 1.0), "bias": randn(g, [7], 0.2)},
        lambda x, _i, a: ref_layer_norm(x["x"], x["weight"], x["bias"], a["eps"]),
        builtin=lambda x, _i, a: F.layer_norm(x["x"], (7,), x["weight"], x["bias"], a["eps"]),
    )
    op_case(
        "rms_norm",
        "rms_norm",
        {"eps": 1e-6},
        {"x": randn(g, [2, 3, 7], 1.5, 0.3), "weight": randn(g, [7], 0.2, 1.0)},
        lambda x, _i, a: ref_rms_norm(x["x"], x["weight"], a["eps"]),
        builtin=lambda x, _i, a: x["x"]
        / torch.sqrt(x["x"].pow(2).sum(-1, keepdim=True) / 7 + a["eps"])
        * x["weight"],
    )

    # activations ---------------------------------------------------------------------------
    grid = torch.linspace(-6.0, 6.0, 65, dtype=torch.float32).double()  # step 0.1875, exact
    op_case(
        "gelu_tanh",
        "gelu_tanh",
        {},
        {"x": grid.clone()},
        lambda x, _i, _a: ref_gelu_tanh(x["x"]),
        builtin=lambda x, _i, _a: F.gelu(x["x"], approximate="tanh"),
    )
    op_case(
        "silu",
        "silu",
        {},
        {"x": grid.clone()},
        lambda x, _i, _a: ref_silu(x["x"]),
        builtin=lambda x, _i, _a: F.silu(x["x"]),
    )

    # softmax -------------------------------------------------------------------------------
    for nm, shape, std in (("softmax", [3, 7], 2.0), ("softmax_wide", [1, 65], 5.0)):
        op_case(
            nm,
            "softmax",
            {},
            {"x": randn(g, shape, std)},
            lambda x, _i, _a: ref_softmax(x["x"]),
            builtin=lambda x, _i, _a: F.softmax(x["x"], dim=-1),
        )

    # rope ----------------------------------------------------------------------------------
    for nm, off in (("rope", 0), ("rope_offset", 3)):
        op_case(
            nm,
            "rope",
            {"theta": 10000.0, "offset": off},
            {"x": randn(g, [2, 5, 3, 8])},
            lambda x, _i, a: ref_rope(x["x"], a["theta"], a["offset"]),
            builtin=lambda x, _i, a: naive_rope(x["x"], a["theta"], a["offset"]),
        )

    # attention -----------------------------------------------------------------------------
    att = lambda x, _i, a: ref_attention(x["q"], x["k"], x["v"], a["causal"])  # noqa: E731
    natt = lambda x, _i, _a: naive_attention(x["q"], x["k"], x["v"])  # noqa: E731
    for nm, B, Tq, Tk, Hq, Hkv, D in (
        ("attention", 2, 5, 5, 4, 2, 8),
        ("attention_mha", 2, 7, 7, 3, 3, 4),
        ("attention_offset", 2, 3, 7, 4, 2, 8),
    ):
        op_case(
            nm,
            "attention",
            {"causal": True},
            {"q": randn(g, [B, Tq, Hq, D]), "k": randn(g, [B, Tk, Hkv, D]), "v": randn(g, [B, Tk, Hkv, D])},
            att,
            builtin=natt,
        )

    # cross entropy -------------------------------------------------------------------------
    ce = lambda x, i, _a: ref_cross_entropy(x["logits"], i["targets"])  # noqa: E731

    def ce_builtin(x, i, _a):
        V = x["logits"].shape[-1]
        return F.cross_entropy(x["logits"].reshape(-1, V), i["targets"].reshape(-1), ignore_index=-100)

    op_case(
        "cross_entropy",
        "cross_entropy",
        {"ignore_index": -100},
        {"logits": randn(g, [6, 11], 2.0)},
        ce,
        int_inputs={"targets": torch.tensor([3, 10, 0, -100, 7, 3], dtype=torch.int64)},
        builtin=ce_builtin,
    )
    op_case(
        "cross_entropy_3d",
        "cross_entropy",
        {"ignore_index": -100},
        {"logits": randn(g, [2, 4, 9], 2.0)},
        ce,
        int_inputs={"targets": torch.tensor([[1, 8, 0, 4], [4, 2, 6, 8]], dtype=torch.int64)},
        builtin=ce_builtin,
    )

    # slice / sum / scale -------------------------------------------------------------------
    op_case(
        "slice",
        "slice",
        {"start": 4, "length": 5},
        {"x": randn(g, [2, 3, 12])},
        lambda x, _i, a: x["x"][..., a["start"] : a["start"] + a["length"]],
        builtin=lambda x, _i, a: torch.narrow(x["x"], -1, a["start"], a["length"]),
    )
    op_case(
        "sum",
        "sum",
        {},
        {"x": randn(g, [3, 4])},
        lambda x, _i, _a: x["x"].sum(),
        builtin=lambda x, _i, _a: torch.sum(x["x"]),
    )
    op_case(
        "scale",
        "scale",
        {"s": -0.37},
        {"x": randn(g, [7])},
        lambda x, _i, a: x["x"] * a["s"],
        builtin=lambda x, _i, a: torch.mul(x["x"], a["s"]),
    )

    write_json(os.path.join(OPS_DIR, "ops.json"), OPS)


# ----------------------------------------------------------------------------------------------
# safetensors (hand-written)
# ----------------------------------------------------------------------------------------------


def f32_bytes(t):
    a = t.detach().to(torch.float64).numpy()
    a32 = a.astype("<f4")
    assert np.array_equal(a32.astype(np.float64), a), "tensor is not float32-representable"
    return a32.tobytes()


def bf16_round(t):
    """Round float32-representable values to bfloat16 (round to nearest even); returns
    (float64 tensor of the rounded values, little-endian bf16 bytes)."""
    a32 = t.detach().to(torch.float64).numpy().astype(np.float32)
    bits = a32.view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    hi = ((bits + rounding) >> 16).astype(np.uint16)
    back = (hi.astype(np.uint32) << 16).view(np.float32)
    # cross-check with torch's own conversion
    tb = torch.from_numpy(a32.copy()).to(torch.bfloat16).to(torch.float32).numpy()
    assert np.array_equal(tb, back)
    return torch.from_numpy(back.astype(np.float64)).reshape(t.shape), hi.astype("<u2").tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> (dtype string, shape list, raw little-endian bytes); written in name order."""
    header = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    blobs = []
    off = 0
    for name in sorted(tensors):
        dt, shape, raw = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Independent reader used only for the self-check round trip."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    assert n % 8 == 0
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    data = buf[8 + n :]
    out = {}
    end = 0
    for name, info in header.items():
        s, e = info["data_offsets"]
        raw = data[s:e]
        end = max(end, e)
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError(info["dtype"])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    assert end == len(data), "trailing bytes"
    return meta, out


def save_f32(path, params):
    write_safetensors(path, {k: ("F32", list(v.shape), f32_bytes(v)) for k, v in params.items()})
    meta, back = read_safetensors(path)
    check(f"{os.path.relpath(path, FIX)}: metadata", meta == {"format": "pt"})
    check(f"{os.path.relpath(path, FIX)}: names", set(back) == set(params))
    for k, v in params.items():
        check(f"{os.path.relpath(path, FIX)}: {k} round trip", torch.equal(back[k], v))


# ----------------------------------------------------------------------------------------------
# LoRA (PEFT semantics)
# ----------------------------------------------------------------------------------------------


class Lora:
    """module path (as in the HF model, e.g. 'model.layers.0.self_attn.q_proj') -> (A [r,in], B [out,r])."""

    def __init__(self, r, alpha, use_rslora, ab):
        self.r = r
        self.alpha = alpha
        self.use_rslora = use_rslora
        self.scale = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.ab = ab

    def keys(self):
        out = {}
        for path, (A, B) in self.ab.items():
            out[f"base_model.model.{path}.lora_A.weight"] = A
            out[f"base_model.model.{path}.lora_B.weight"] = B
        return out

    def with_tensors(self, tensors):
        """A copy whose A/B come from a {peft key: tensor} dict (used to differentiate)."""
        ab = {
            p: (tensors[f"base_model.model.{p}.lora_A.weight"], tensors[f"base_model.model.{p}.lora_B.weight"])
            for p in self.ab
        }
        return Lora(self.r, self.alpha, self.use_rslora, ab)

    def zero_b(self):
        return Lora(self.r, self.alpha, self.use_rslora, {p: (A, torch.zeros_like(B)) for p, (A, B) in self.ab.items()})


def make_lora(g, modules, in_out, r, alpha, use_rslora):
    """modules: list of module paths; in_out(path) -> (in_features, out_features)."""
    ab = {}
    for p in modules:
        i, o = in_out(p)
        ab[p] = (randn(g, [r, i], 0.2), randn(g, [o, r], 0.1))
    return Lora(r, alpha, use_rslora, ab)


def matches(path, targets):
    """PEFT's list form of target_modules: exact name or suffix after a dot."""
    return any(path == t or path.endswith("." + t) for t in targets)


def adapter_config(r, alpha, targets, use_rslora, fan_in_fan_out, base):
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "peft_version": "0.99.0",
        "r": r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": use_rslora,
        "x_unknown_future_option": {"nested": [1, 2, 3], "enabled": False},
    }


def proj(x, P, key, path, lora, conv1d=False, bias=True):
    """HF Linear (weight [out, in], y = x W^T + b) or GPT-2 Conv1D (weight [in, out], y = x W + b),
    plus the PEFT LoRA delta scale * (x A^T) B^T when `path` is adapted."""
    W = P[key + ".weight"]
    y = x @ W if conv1d else x @ W.transpose(0, 1)
    if bias and (key + ".bias") in P:
        y = y + P[key + ".bias"]
    if lora is not None and path in lora.ab:
        A, B = lora.ab[path]
        y = y + lora.scale * ((x @ A.transpose(0, 1)) @ B.transpose(0, 1))
    return y


def next_token_loss(logits, ids):
    V = logits.shape[-1]
    return ref_cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


# ----------------------------------------------------------------------------------------------
# GPT-2
# ----------------------------------------------------------------------------------------------

GPT2_CFG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 0,
    "embd_pdrop": 0.1,
    "eos_token_id": 0,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 32,
    "n_embd": 24,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 2,
    "n_positions": 32,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.1,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "transformers_version": "4.40.0",
    "use_cache": True,
    "vocab_size": 67,
}


def gpt2_params(g, cfg, prefix="transformer."):
    E, V, L, NP = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"], cfg["n_positions"]
    inner = cfg["n_inner"] or 4 * E
    P = {}
    P[prefix + "wte.weight"] = randn(g, [V, E], 0.3)
    P[prefix + "wpe.weight"] = randn(g, [NP, E], 0.1)
    for i in range(L):
        p = f"{prefix}h.{i}."
        P[p + "ln_1.weight"] = randn(g, [E], 0.1, 1.0)
        P[p + "ln_1.bias"] = randn(g, [E], 0.1)
        P[p + "attn.c_attn.weight"] = randn(g, [E, 3 * E], 0.2)  # Conv1D: [in, out]
        P[p + "attn.c_attn.bias"] = randn(g, [3 * E], 0.05)
        P[p + "attn.c_proj.weight"] = randn(g, [E, E], 0.15)
        P[p + "attn.c_proj.bias"] = randn(g, [E], 0.05)
        P[p + "ln_2.weight"] = randn(g, [E], 0.1, 1.0)
        P[p + "ln_2.bias"] = randn(g, [E], 0.1)
        P[p + "mlp.c_fc.weight"] = randn(g, [E, inner], 0.2)
        P[p + "mlp.c_fc.bias"] = randn(g, [inner], 0.05)
        P[p + "mlp.c_proj.weight"] = randn(g, [inner, E], 0.1)
        P[p + "mlp.c_proj.bias"] = randn(g, [E], 0.05)
    P[prefix + "ln_f.weight"] = randn(g, [E], 0.1, 1.0)
    P[prefix + "ln_f.bias"] = randn(g, [E], 0.1)
    return P


def gpt2_forward(P, cfg, ids, lora=None, prefix="transformer."):
    E, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    eps = cfg["layer_norm_epsilon"]
    hd = E // H
    B, T = ids.shape
    h = P[prefix + "wte.weight"][ids] + P[prefix + "wpe.weight"][torch.arange(T)][None]
    for i in range(L):
        p = f"{prefix}h.{i}."
        a = ref_layer_norm(h, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        qkv = proj(a, P, p + "attn.c_attn", p + "attn.c_attn", lora, conv1d=True)
        q, k, v = qkv.split(E, dim=-1)
        o = ref_attention(q.reshape(B, T, H, hd), k.reshape(B, T, H, hd), v.reshape(B, T, H, hd))
        h = h + proj(o.reshape(B, T, E), P, p + "attn.c_proj", p + "attn.c_proj", lora, conv1d=True)
        m = ref_layer_norm(h, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        m = ref_gelu_tanh(proj(m, P, p + "mlp.c_fc", p + "mlp.c_fc", lora, conv1d=True))
        h = h + proj(m, P, p + "mlp.c_proj", p + "mlp.c_proj", lora, conv1d=True)
    h = ref_layer_norm(h, P[prefix + "ln_f.weight"], P[prefix + "ln_f.bias"], eps)
    return h @ P[prefix + "wte.weight"].transpose(0, 1)  # tied head


def gpt2_causal_mask_buffers(cfg, prefix):
    n = cfg["n_positions"]
    m = torch.tril(torch.ones(n, n, dtype=torch.float64)).reshape(1, 1, n, n)
    return {f"{prefix}h.{i}.attn.bias": m for i in range(cfg["n_layer"])}


# ----------------------------------------------------------------------------------------------
# Llama / Qwen2
# ----------------------------------------------------------------------------------------------


def llama_cfg(
    model_type,
    vocab,
    hidden=32,
    inter=48,
    layers=2,
    heads=4,
    kv=2,
    head_dim=None,
    theta=10000.0,
    tie=True,
    dtype="float32",
):
    c = {
        "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2" else "LlamaForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": 64,
        "model_type": model_type,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": theta,
        "tie_word_embeddings": tie,
        "torch_dtype": dtype,
        "transformers_version": "4.45.0",
        "use_cache": True,
        "vocab_size": vocab,
    }
    if model_type == "qwen2":
        c.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2})
    else:
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    if head_dim is not None:
        c["head_dim"] = head_dim
    return dict(sorted(c.items()))


def llama_dims(cfg):
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    return H, KV, D


def llama_params(g, cfg, qkv_bias=False):
    E, I, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H, KV, D = llama_dims(cfg)
    P = {"model.embed_tokens.weight": randn(g, [V, E], 0.3)}
    for i in range(L):
        p = f"model.layers.{i}."
        P[p + "input_layernorm.weight"] = randn(g, [E], 0.1, 1.0)
        P[p + "self_attn.q_proj.weight"] = randn(g, [H * D, E], 0.15)
        P[p + "self_attn.k_proj.weight"] = randn(g, [KV * D, E], 0.15)
        P[p + "self_attn.v_proj.weight"] = randn(g, [KV * D, E], 0.15)
        if qkv_bias:
            P[p + "self_attn.q_proj.bias"] = randn(g, [H * D], 0.1)
            P[p + "self_attn.k_proj.bias"] = randn(g, [KV * D], 0.1)
            P[p + "self_attn.v_proj.bias"] = randn(g, [KV * D], 0.1)
        P[p + "self_attn.o_proj.weight"] = randn(g, [E, H * D], 0.15)
        P[p + "post_attention_layernorm.weight"] = randn(g, [E], 0.1, 1.0)
        P[p + "mlp.gate_proj.weight"] = randn(g, [I, E], 0.15)
        P[p + "mlp.up_proj.weight"] = randn(g, [I, E], 0.15)
        P[p + "mlp.down_proj.weight"] = randn(g, [E, I], 0.12)
    P["model.norm.weight"] = randn(g, [E], 0.1, 1.0)
    if not cfg["tie_word_embeddings"]:
        P["lm_head.weight"] = randn(g, [V, E], 0.3)
    return P


def llama_forward(P, cfg, ids, lora=None):
    """HF LlamaForCausalLM / Qwen2ForCausalLM (biases used when present in P)."""
    E, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, KV, D = llama_dims(cfg)
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    B, T = ids.shape
    h = P["model.embed_tokens.weight"][ids]
    for i in range(L):
        p = f"model.layers.{i}."
        x = ref_rms_norm(h, P[p + "input_layernorm.weight"], eps)
        q = proj(x, P, p + "self_attn.q_proj", p + "self_attn.q_proj", lora).reshape(B, T, H, D)
        k = proj(x, P, p + "self_attn.k_proj", p + "self_attn.k_proj", lora).reshape(B, T, KV, D)
        v = proj(x, P, p + "self_attn.v_proj", p + "self_attn.v_proj", lora).reshape(B, T, KV, D)
        q = ref_rope(q, theta, 0)
        k = ref_rope(k, theta, 0)
        o = ref_attention(q, k, v).reshape(B, T, H * D)
        h = h + proj(o, P, p + "self_attn.o_proj", p + "self_attn.o_proj", lora)
        x = ref_rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        gate = proj(x, P, p + "mlp.gate_proj", p + "mlp.gate_proj", lora)
        up = proj(x, P, p + "mlp.up_proj", p + "mlp.up_proj", lora)
        h = h + proj(ref_silu(gate) * up, P, p + "mlp.down_proj", p + "mlp.down_proj", lora)
    h = ref_rms_norm(h, P["model.norm.weight"], eps)
    head = P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]
    return h @ head.transpose(0, 1)


# ----------------------------------------------------------------------------------------------
# 2. Model fixtures
# ----------------------------------------------------------------------------------------------

SUMMARY = []


def model_expected(name, P, forward, ids, lora=None):
    exp = {"input_ids": ids.tolist()}
    with torch.no_grad():
        lb = forward(P, ids, None)
    exp["logits_base"] = tens(lb)
    exp["loss_base"] = f32_scalar(next_token_loss(lb, ids).item())
    with torch.no_grad():
        lb32 = forward({k: v.float() for k, v in P.items()}, ids, None)
    f32_sim(f"models/{name}: logits_base", lb32, lb)
    f32_sim(f"models/{name}: loss_base", next_token_loss(lb32, ids), next_token_loss(lb, ids))
    info = {"logits_base_absmax": lb.abs().max().item(), "loss_base": exp["loss_base"]}
    if lora is not None:
        keys = lora.keys()
        leaves = {k: v.clone().requires_grad_(True) for k, v in keys.items()}
        la = forward(P, ids, lora.with_tensors(leaves))
        loss = next_token_loss(la, ids)
        names = sorted(leaves)
        grads = torch.autograd.grad(loss, [leaves[k] for k in names])
        exp["lora_scale"] = lora.scale
        exp["logits_adapter"] = tens(la)
        exp["loss_adapter"] = f32_scalar(loss.item())
        exp["grads_adapter"] = {k: tens(gr) for k, gr in zip(names, grads)}
        info.update(
            {
                "loss_adapter": exp["loss_adapter"],
                "adapter_logit_change": (la - lb).abs().max().item(),
                "grad_absmax": max(gr.abs().max().item() for gr in grads),
            }
        )

        # float32 recomputation (what the TypeScript side does) vs the float64 reference
        P32 = {k: v.float() for k, v in P.items()}
        l32 = {k: v.float().requires_grad_(True) for k, v in keys.items()}
        la32 = forward(P32, ids, lora.with_tensors(l32))
        loss32 = next_token_loss(la32, ids)
        g32 = torch.autograd.grad(loss32, [l32[k] for k in names])
        f32_sim(f"models/{name}: logits_adapter", la32, la)
        f32_sim(f"models/{name}: loss_adapter", loss32, loss)
        for k, a, b in zip(names, g32, grads):
            f32_sim(f"models/{name}: grad {k}", a, b)

        # self-check 1: B = 0 reproduces the base model exactly
        with torch.no_grad():
            l0 = forward(P, ids, lora.zero_b())
        check(f"models/{name}: B=0 adapter equals base", torch.equal(l0, lb))

        # self-check 2: finite differences of loss_adapter for a few entries of every tensor
        def loss_with(key, idx, delta):
            t = {k: v.detach().clone() for k, v in keys.items()}
            t[key].view(-1)[idx] += delta
            with torch.no_grad():
                return next_token_loss(forward(P, ids, lora.with_tensors(t)), ids).item()

        gfd = gen("fd/" + name)
        worst = 0.0
        for key, gr in zip(names, grads):
            n = gr.numel()
            picks = sorted({int(gr.abs().reshape(-1).argmax())} | set(randint(gfd, 0, n, [2]).tolist()))
            for idx in picks:
                eps = 1e-5
                fd = (loss_with(key, idx, eps) - loss_with(key, idx, -eps)) / (2 * eps)
                an = gr.reshape(-1)[idx].item()
                worst = max(worst, abs(fd - an) / max(1e-3, abs(an)))
        check(f"models/{name}: LoRA grads vs finite differences (rel)", worst < 1e-6, worst)

        # self-check 3: merging W' = W + scale * B A (transposed for Conv1D) gives the same logits
        Pm = dict(P)
        conv1d = "gpt2" in name
        for path, (A, Bm) in lora.ab.items():
            d = lora.scale * (Bm @ A)  # [out, in]
            Pm[path + ".weight"] = P[path + ".weight"] + (d.transpose(0, 1) if conv1d else d)
        with torch.no_grad():
            lm = forward(Pm, ids, None)
        close_check(f"models/{name}: merged weights equal unmerged adapter", lm, la, 1e-12)
    SUMMARY.append((name, info))
    return exp


def save_model(name, cfg, P, extra_tensors=None, bf16=False):
    d = os.path.join(MODELS_DIR, name)
    write_json_pretty(os.path.join(d, "config.json"), cfg)
    path = os.path.join(d, "model.safetensors")
    if bf16:
        write_safetensors(path, {k: ("BF16", list(v.shape), bf16_round(v)[1]) for k, v in P.items()})
        meta, back = read_safetensors(path)
        check(f"models/{name}: metadata", meta == {"format": "pt"})
        for k, v in P.items():
            check(f"models/{name}: {k} bf16 round trip", torch.equal(back[k], bf16_round(v)[0]))
    else:
        allp = dict(P)
        allp.update(extra_tensors or {})
        save_f32(path, allp)


def save_adapter(name, lora, targets, fan_in_fan_out, base):
    d = os.path.join(MODELS_DIR, name, "adapter")
    write_json_pretty(
        os.path.join(d, "adapter_config.json"),
        adapter_config(lora.r, lora.alpha, targets, lora.use_rslora, fan_in_fan_out, base),
    )
    save_f32(os.path.join(d, "adapter_model.safetensors"), lora.keys())


def make_models():
    # GPT-2 --------------------------------------------------------------------------------
    cfg = GPT2_CFG
    g = gen("models/gpt2")
    P = gpt2_params(g, cfg)
    ids = randint(g, 0, cfg["vocab_size"], [2, 9])
    E, L = cfg["n_embd"], cfg["n_layer"]
    targets = ["c_attn", "c_proj"]
    paths = []
    for i in range(L):
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            path = f"transformer.h.{i}.{m}"
            if matches(path, targets):
                paths.append(path)
    assert len(paths) == 3 * L

    def conv1d_in_out(path):
        W = P[path + ".weight"]
        return W.shape[0], W.shape[1]  # Conv1D weight is [in, out]

    lora = make_lora(g, paths, conv1d_in_out, r=4, alpha=8, use_rslora=False)
    fwd = lambda P_, ids_, lo: gpt2_forward(P_, cfg, ids_, lo, "transformer.")  # noqa: E731
    exp = model_expected("gpt2", P, fwd, ids, lora)
    save_model("gpt2", cfg, P, gpt2_causal_mask_buffers(cfg, "transformer."))
    save_adapter("gpt2", lora, targets, True, "test/fixtures/models/gpt2")
    write_json(os.path.join(MODELS_DIR, "gpt2", "expected.json"), exp)

    # GPT-2 without the transformer. prefix (same weights, same ids) -----------------------
    Pn = {k[len("transformer.") :]: v for k, v in P.items()}
    fwdn = lambda P_, ids_, lo: gpt2_forward(P_, cfg, ids_, lo, "")  # noqa: E731
    expn = model_expected("gpt2_noprefix", Pn, fwdn, ids, None)
    check("models/gpt2_noprefix: logits equal gpt2 base", expn["logits_base"] == exp["logits_base"])
    save_model("gpt2_noprefix", cfg, Pn, gpt2_causal_mask_buffers(cfg, ""))
    write_json(os.path.join(MODELS_DIR, "gpt2_noprefix", "expected.json"), expn)

    # Llama helpers ------------------------------------------------------------------------
    def llama_paths(cfg_, targets_):
        out = []
        for i in range(cfg_["num_hidden_layers"]):
            for m in (
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ):
                path = f"model.layers.{i}.{m}"
                if matches(path, targets_):
                    out.append(path)
        return out

    def linear_in_out(P_):
        return lambda path: (P_[path + ".weight"].shape[1], P_[path + ".weight"].shape[0])  # [out, in]

    def build_llama(name, cfg_, targets_, r, alpha, rslora, qkv_bias=False):
        g_ = gen("models/" + name)
        P_ = llama_params(g_, cfg_, qkv_bias)
        ids_ = randint(g_, 0, cfg_["vocab_size"], [2, 9])
        lora_ = make_lora(g_, llama_paths(cfg_, targets_), linear_in_out(P_), r, alpha, rslora)
        f_ = lambda PP, ii, lo: llama_forward(PP, cfg_, ii, lo)  # noqa: E731
        exp_ = model_expected(name, P_, f_, ids_, lora_)
        save_model(name, cfg_, P_)
        save_adapter(name, lora_, targets_, False, f"test/fixtures/models/{name}")
        write_json(os.path.join(MODELS_DIR, name, "expected.json"), exp_)
        return P_, ids_, f_

    cfg_t = llama_cfg("llama", 71, heads=4, kv=2, theta=10000.0, tie=True)
    Pt, ids_t, ft = build_llama("llama_gqa_tied", cfg_t, ["q_proj", "v_proj"], 4, 8, False)

    cfg_u = llama_cfg("llama", 89, heads=4, kv=4, head_dim=6, theta=500000.0, tie=False)
    build_llama(
        "llama_untied",
        cfg_u,
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        2,
        6,
        True,
    )

    cfg_q = llama_cfg("qwen2", 101, heads=4, kv=2, theta=1000000.0, tie=False)
    build_llama("qwen2", cfg_q, ["q_proj", "k_proj", "v_proj", "o_proj"], 4, 16, False, qkv_bias=True)

    # Llama bf16: llama_gqa_tied weights rounded to bf16 ------------------------------------
    cfg_b = dict(cfg_t)
    cfg_b["torch_dtype"] = "bfloat16"
    Pb = {k: bf16_round(v)[0] for k, v in Pt.items()}
    expb = model_expected("llama_bf16", Pb, ft, ids_t, None)
    save_model("llama_bf16", cfg_b, Pt, bf16=True)
    write_json(os.path.join(MODELS_DIR, "llama_bf16", "expected.json"), expb)

    # self-check: GQA Llama forward equals one that expands k/v weights to MHA
    cfg_m = dict(cfg_t)
    cfg_m["num_key_value_heads"] = cfg_t["num_attention_heads"]
    _, KV, D = llama_dims(cfg_t)
    rep = cfg_t["num_attention_heads"] // KV
    Pm = dict(Pt)
    for i in range(cfg_t["num_hidden_layers"]):
        for m in ("k_proj", "v_proj"):
            k = f"model.layers.{i}.self_attn.{m}.weight"
            W = Pt[k].reshape(KV, D, -1)
            Pm[k] = W.repeat_interleave(rep, dim=0).reshape(KV * rep * D, -1)
    with torch.no_grad():
        close_check(
            "models/llama_gqa_tied: GQA equals MHA with repeated kv weights",
            llama_forward(Pm, cfg_m, ids_t),
            ft(Pt, ids_t, None),
            1e-12,
        )


# ----------------------------------------------------------------------------------------------


def main():
    os.makedirs(OPS_DIR, exist_ok=True)
    os.makedirs(MODELS_DIR, exist_ok=True)
    make_ops()
    make_models()

    print(f"torch {torch.__version__}, numpy {np.__version__}")
    print(f"\n{len(CHECKS)} self-checks passed; largest reported errors:")
    plain = [c for c in CHECKS if "float32 recomputation" not in c[0]]
    for label, err in sorted(plain, key=lambda c: -c[1])[:8]:
        print(f"  {err:.3e}  {label}")
    print("\nfloat32 recomputation vs fixtures, worst |err| / (1e-5 + 1e-4*|want|) (must be <= 1):")
    for label, ratio in sorted(F32_SIM, key=lambda c: -c[1])[:8]:
        print(f"  {ratio:.3f}  {label}")
    print(f"\nops.json: {len(OPS)} cases: {', '.join(OPS)}")
    print("\nmodels:")
    for name, info in SUMMARY:
        print("  " + name + ": " + ", ".join(f"{k}={v:.6g}" for k, v in info.items()))
    print("\nfiles:")
    total = 0
    for dirpath, _dirs, files in sorted(os.walk(FIX)):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            sz = os.path.getsize(p)
            total += sz
            print(f"  {sz:9d}  {os.path.relpath(p, ROOT)}")
    print(f"  {total:9d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
