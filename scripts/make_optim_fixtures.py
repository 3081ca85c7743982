#!/usr/bin/env python3
"""PyTorch reference for the optimizer tests (test/train/optim.test.ts).

Writes
  test/fixtures/optim/optim.json   three steps of torch.optim.SGD (plain and with momentum +
                                   weight decay), torch.optim.Adam (L2 weight decay) and
                                   torch.optim.AdamW (decoupled weight decay) on two parameters

Every initial parameter and gradient is drawn in float32 (so it is exact in float32); the
optimizers then run on float64 copies. Stored numbers are the float64 results rounded to
float32, written with the shortest repr that gives back that float32. The learning rate changes
between steps (as a schedule would change it), and one gradient element is exactly zero.

Self-checks (the script fails if one does not hold):
  - torch's float64 results match a hand-written float64 version of each update rule;
  - torch run in float32 stays within the consumer's f32 tolerance (rtol 1e-4, atol 1e-5) of the
    stored values, with a 2x margin.

Run from anywhere:  /usr/bin/python3 scripts/make_optim_fixtures.py
Needs only torch (1.13+) and numpy. The output is deterministic for a given torch build.
"""

import json
import os
import zlib

import numpy as np
import torch

torch.set_num_threads(1)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "optim", "optim.json")

F32_RTOL, F32_ATOL = 1e-4, 1e-5  # test/helpers.ts TOL.f32

SHAPES = {"a": [3, 4], "b": [5]}
STEPS = 3
LR_SCALE = [1.0, 0.5, 0.25]  # lr of step k = base lr * LR_SCALE[k]

CASES = {
    "sgd_plain": {"kind": "sgd", "lr": 0.1, "momentum": 0.0, "weightDecay": 0.0},
    "sgd_momentum": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weightDecay": 0.01},
    "adam": {"kind": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weightDecay": 0.1},
    "adamw": {"kind": "adamw", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weightDecay": 0.1},
}


def gen(name):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode("utf-8")))
    return g


def randn32(name, shape, std):
    return torch.randn(shape, generator=gen(name), dtype=torch.float32) * std


def f32_list(t):
    a = t.detach().to(torch.float64).reshape(-1).numpy().astype(np.float32)
    return [float(str(x)) for x in a]


def stored(t):
    """What the test reads back: the float64 value rounded to float32."""
    return torch.tensor(np.array(f32_list(t), dtype=np.float32).astype(np.float64)).reshape(t.shape)


def check(label, ok, detail):
    if not ok:
        raise AssertionError(f"self-check failed: {label} ({detail})")


# Inputs (float32-representable).
INIT = {n: randn32(f"optim.init.{n}", s, 1.0) for n, s in SHAPES.items()}
GRADS = [{n: randn32(f"optim.grad{k}.{n}", s, 0.1) for n, s in SHAPES.items()} for k in range(STEPS)]
GRADS[0]["b"][2] = 0.0  # an exact zero gradient on the first step


def make_torch_opt(case, params):
    kind = case["kind"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=case["lr"], momentum=case["momentum"], weight_decay=case["weightDecay"])
    betas = (case["beta1"], case["beta2"])
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=case["lr"], betas=betas, eps=case["eps"], weight_decay=case["weightDecay"])


def run_torch(case, dtype):
    params = {n: INIT[n].clone().to(dtype).requires_grad_(True) for n in SHAPES}
    opt = make_torch_opt(case, list(params.values()))
    after = []
    for k in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = case["lr"] * LR_SCALE[k]
        for n, p in params.items():
            p.grad = GRADS[k][n].clone().to(dtype)
        opt.step()
        after.append({n: p.detach().clone() for n, p in params.items()})
    state = {}
    for n, p in params.items():
        st = opt.state[p]
        if case["kind"] == "sgd":
            state[n] = {"momentum": st["momentum_buffer"].clone()} if case["momentum"] > 0 else {}
        else:
            state[n] = {"m": st["exp_avg"].clone(), "v": st["exp_avg_sq"].clone()}
    return after, state


def run_hand(case):
    """The update rules written out in float64, apart from torch."""
    kind = case["kind"]
    p = {n: INIT[n].double().clone() for n in SHAPES}
    buf = {n: None for n in SHAPES}
    m = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
    v = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
    after = []
    for k in range(STEPS):
        lr = case["lr"] * LR_SCALE[k]
        t = k + 1
        for n in SHAPES:
            g = GRADS[k][n].double()
            wd = case["weightDecay"]
            if kind == "sgd":
                g = g + wd * p[n]
                if case["momentum"] > 0:
                    buf[n] = g.clone() if buf[n] is None else case["momentum"] * buf[n] + g
                    g = buf[n]
                p[n] = p[n] - lr * g
                continue
            b1, b2, eps = case["beta1"], case["beta2"], case["eps"]
            if kind == "adam":
                g = g + wd * p[n]
            else:
                p[n] = p[n] * (1 - lr * wd)
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            mhat = m[n] / (1 - b1**t)
            vhat = v[n] / (1 - b2**t)
            p[n] = p[n] - lr * mhat / (vhat.sqrt() + eps)
        after.append({n: p[n].clone() for n in SHAPES})
    return after


def main():
    out = {
        "_comment": "made by scripts/make_optim_fixtures.py; lr of step k = opts.lr * lrScale[k]",
        "shapes": SHAPES,
        "lrScale": LR_SCALE,
        "init": {n: f32_list(t) for n, t in INIT.items()},
        "grads": [{n: f32_list(t) for n, t in g.items()} for g in GRADS],
        "cases": {},
    }
    worst = 0.0
    for name, case in CASES.items():
        after64, state64 = run_torch(case, torch.float64)
        hand = run_hand(case)
        for k in range(STEPS):
            for n in SHAPES:
                err = (after64[k][n] - hand[k][n]).abs().max().item()
                check(f"{name} step {k + 1} {n}: torch vs hand float64", err <= 1e-12, err)
        after32, _ = run_torch(case, torch.float32)
        for k in range(STEPS):
            for n in SHAPES:
                w = stored(after64[k][n])
                ratio = ((after32[k][n].double() - w).abs() / (F32_ATOL + F32_RTOL * w.abs())).max().item()
                worst = max(worst, ratio)
                check(f"{name} step {k + 1} {n}: float32 run within f32 tolerance", ratio <= 0.5, ratio)
        opts = {key: val for key, val in case.items() if key != "kind"}
        out["cases"][name] = {
            "kind": case["kind"],
            "opts": opts,
            "after": [{n: f32_list(t) for n, t in a.items()} for a in after64],
            "state": {n: {b: f32_list(t) for b, t in bufs.items()} for n, bufs in state64.items()},
        }
        print(f"{name}: ok")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"float32 runs use at most {worst:.3f} of the f32 tolerance")
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
