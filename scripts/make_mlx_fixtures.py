"""Reference mlx-lm LoRA adapters and what PyTorch computes with them (issue #14).

mlx (and so mlx-lm) cannot be installed here: it is not on the package registries this machine
reaches. So each adapter folder is written by hand exactly as mlx-lm's own code writes one, read at
ml-explore/mlx-lm d78bf58 (2026-08):
  - mlx_lm/lora.py: train_model saves vars(args) with save_config (sorted keys, indent 4) as
    adapter_config.json; CONFIG_DEFAULTS gives the fields and lora_parameters {rank, dropout, scale}.
  - mlx_lm/tuner/trainer.py: mx.save_safetensors(adapter_file, dict(tree_flatten(trainable_parameters)))
    every steps_per_save into adapters.safetensors and {it:07d}_adapters.safetensors (metadata
    {"format": "mlx"}).
  - mlx_lm/tuner/utils.py: linear_to_lora_layers adapts lora_parameters.keys (default: every linear
    layer) in model.layers[-num_layers:]; tuner/lora.py: LoRALinear holds lora_a [in, r] and lora_b
    [r, out] and computes y + scale * (x @ lora_a @ lora_b).
  - models/llama.py: blocks at model.layers.{i}; models/gpt2.py: blocks at model.h.{i} (the HF names
    with transformer. replaced by model.).

Then the loss of each adapter on the fixture model's input ids is computed with transformers (float64),
with a forward hook on each adapted module adding scale * (x @ lora_a @ lora_b): the formula above,
applied independently of the TypeScript code. Also numpy's SVD of each ΔW = scale·B·A (formed in
float64) for `lora inspect`'s ‖ΔW‖_F and singular values.

Run with the venv of the README:  /work/venv/bin/python scripts/make_mlx_fixtures.py
Writes test/fixtures/mlx/<model>/{adapter_config.json, adapters.safetensors,
0000100_adapters.safetensors, expected.json}.
"""

import json
import os

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")

# mlx-lm's saved config is the whole CLI config (lora.py CONFIG_DEFAULTS + the arguments given)
BASE_CONFIG = {
    "adapter_path": "adapters",
    "batch_size": 4,
    "config": None,
    "data": "data",
    "grad_accumulation_steps": 1,
    "grad_checkpoint": False,
    "iters": 200,
    "learning_rate": 1e-05,
    "lr_schedule": None,
    "mask_prompt": False,
    "max_seq_length": 2048,
    "optimizer": "adam",
    "optimizer_config": {"adam": {}, "adamw": {}, "muon": {}, "sgd": {}, "adafactor": {}},
    "project_name": None,
    "report_to": None,
    "resume_adapter_file": None,
    "save_every": 100,
    "seed": 0,
    "steps_per_eval": 200,
    "steps_per_report": 10,
    "test": False,
    "test_batches": 500,
    "train": True,
    "trust_remote_code": False,
    "val_batches": 25,
}

CASES = {
    # the last layer of two, three modules by their in-block paths
    "llama_untied": {
        "num_layers": 1,
        "lora_parameters": {
            "rank": 4,
            "dropout": 0.0,
            "scale": 20.0,
            "keys": ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"],
        },
    },
    # every block, keys absent: mlx-lm adapts every linear layer of each block
    "gpt2": {"num_layers": -1, "lora_parameters": {"rank": 2, "dropout": 0.0, "scale": 10.0}},
}


def linear_paths(model, n_blocks, blocks_attr, keys):
    """mlx-lm's module paths that linear_to_lora_layers adapts, with their (in, out)."""
    out = []
    for i in range(n_blocks):
        block = getattr(model, blocks_attr[0])
        for a in blocks_attr[1:]:
            block = getattr(block, a)
        for rel, m in block[i].named_modules():
            if rel == "":
                continue
            if isinstance(m, torch.nn.Linear):
                dims = (m.in_features, m.out_features)
            elif type(m).__name__ == "Conv1D":  # HF GPT-2: weight [in, out]; mlx-lm's is an nn.Linear
                dims = (m.weight.shape[0], m.weight.shape[1])
            else:
                continue
            if keys is None or rel in keys:
                out.append((i, rel, dims))
    return out


def hf_name(mlx_path):
    return "transformer." + mlx_path[len("model.") :] if mlx_path.startswith("model.h.") else mlx_path


def make(name):
    case = CASES[name]
    model_dir = os.path.join(ROOT, "models", name)
    out_dir = os.path.join(ROOT, "mlx", name)
    os.makedirs(out_dir, exist_ok=True)
    expected_in = json.load(open(os.path.join(model_dir, "expected.json")))
    ids = torch.tensor(expected_in["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    p = case["lora_parameters"]
    rank, scale = p["rank"], p["scale"]
    gpt2 = name.startswith("gpt2")
    blocks_attr = ["transformer", "h"] if gpt2 else ["model", "layers"]
    n_blocks = model.config.num_hidden_layers
    last = n_blocks if case["num_layers"] <= 0 else case["num_layers"]
    paths = [t for t in linear_paths(model, n_blocks, blocks_attr, p.get("keys")) if t[0] >= n_blocks - last]
    prefix = "model.h" if gpt2 else "model.layers"

    rng = np.random.default_rng(14)

    def weights():
        w = {}
        for i, rel, (fin, fout) in paths:
            key = f"{prefix}.{i}.{rel}"
            # LoRALinear's init for lora_a; lora_b as after some training (mlx-lm starts it at zero)
            w[f"{key}.lora_a"] = rng.uniform(-1 / np.sqrt(fin), 1 / np.sqrt(fin), (fin, rank)).astype(np.float32)
            w[f"{key}.lora_b"] = (rng.standard_normal((rank, fout)) * 0.02).astype(np.float32)
        return w

    checkpoint = weights()  # iteration 100
    latest = weights()  # iteration 200: adapters.safetensors is rewritten at each save
    save_file(checkpoint, os.path.join(out_dir, "0000100_adapters.safetensors"), metadata={"format": "mlx"})
    save_file(latest, os.path.join(out_dir, "adapters.safetensors"), metadata={"format": "mlx"})
    config = dict(BASE_CONFIG, model=f"test/fixtures/models/{name}", fine_tune_type="lora", **case)
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(dict(sorted(config.items())), f, indent=4)

    def loss_with(file):
        w = load_file(os.path.join(out_dir, file))
        modules = dict(model.named_modules())
        hooks = []
        for key in {k.rsplit(".", 1)[0] for k in w}:
            a = torch.from_numpy(w[f"{key}.lora_a"]).double()
            b = torch.from_numpy(w[f"{key}.lora_b"]).double()
            hook = lambda m, inp, out, a=a, b=b: out + scale * (inp[0] @ a @ b)  # noqa: E731
            hooks.append(modules[hf_name(key)].register_forward_hook(hook))
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        for h in hooks:
            h.remove()
        return loss

    def deltas(file):
        w = load_file(os.path.join(out_dir, file))
        out = {}
        for key in sorted({k.rsplit(".", 1)[0] for k in w}):
            a = w[f"{key}.lora_a"].astype(np.float64)
            b = w[f"{key}.lora_b"].astype(np.float64)
            dw = scale * (b.T @ a.T)  # [out, in], as PEFT's scale·B·A
            out[hf_name(key)] = {
                "norm": float(np.linalg.norm(dw)),
                "singular": [float(s) for s in np.linalg.svd(dw, compute_uv=False)[:rank]],
            }
        return out

    with torch.no_grad():
        base = model(ids, labels=ids).loss.item()
    expected = {
        "input_ids": expected_in["input_ids"],
        "loss_base": base,
        "loss": loss_with("adapters.safetensors"),
        "loss_checkpoint": loss_with("0000100_adapters.safetensors"),
        "deltas": deltas("adapters.safetensors"),
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"{name}: {len(paths)} modules, loss base {base:.6f}, adapter {expected['loss']:.6f}, "
          f"checkpoint {expected['loss_checkpoint']:.6f}")


def peft_deltas():
    """numpy's ‖ΔW‖_F and singular values for the PEFT llama_untied fixture adapter (rsLoRA)."""
    d = os.path.join(ROOT, "models", "llama_untied", "adapter")
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    w = load_file(os.path.join(d, "adapter_model.safetensors"))
    r = cfg["r"]
    s = cfg["lora_alpha"] / (np.sqrt(r) if cfg["use_rslora"] else r)
    out = {}
    for k in sorted(w):
        if not k.endswith("lora_A.weight"):
            continue
        path = k[len("base_model.model.") : -len(".lora_A.weight")]
        dw = s * (w[k.replace("lora_A", "lora_B")].astype(np.float64) @ w[k].astype(np.float64))
        out[path] = {
            "norm": float(np.linalg.norm(dw)),
            "singular": [float(x) for x in np.linalg.svd(dw, compute_uv=False)[:r]],
        }
    with open(os.path.join(ROOT, "mlx", "peft_llama_untied_deltas.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"peft llama_untied: {len(out)} modules' ΔW spectra")


if __name__ == "__main__":
    for n in CASES:
        make(n)
    peft_deltas()
