"""PiSSA and OLoRA initialisations, and PEFT's conversion back to a plain LoRA, made by the real PEFT (issue #15).

Run with the venv of the README:  /work/venv/bin/python scripts/make_init_fixtures.py
(torch 2.13, peft 0.21). Writes test/fixtures/init/:

  layers.safetensors   two bias-free Linear weights W0 with distinct singular values (a decaying
                       spectrum, so torch.svd_lowrank's 4 subspace iterations converge):
                       "wide" [12, 20] (out < in) and "tall" [20, 12] (out > in).
  <kind>.safetensors   for kind in pissa, pissa_niter_4, olora: what PEFT's LoraLayer.update_layer computes
                       with r=4, lora_alpha=8 (scaling 2, so PEFT's division of S by the scaling shows):
                       "<layer>.lora_A" [4, in], "<layer>.lora_B" [out, 4], "<layer>.residual" (the base
                       weight PEFT leaves in the layer: W0 - scaling·B·A).
  llama-<kind>/        for kind in pissa, olora: PEFT on test/fixtures/models/llama_untied (q_proj, v_proj,
                       r=2, lora_alpha=4), A and B then moved off their initial values (a stand-in for
                       training: A += 0.05·N(0,1), B += 0.05·N(0,1), seeded), saved by save_pretrained:
      adapter/         the adapter as PEFT saves it (init_lora_weights "<kind>": PEFT re-runs the
                       initialisation on the base at load);
      converted/       save_pretrained(..., path_initial_model_for_weight_conversion=...): the plain LoRA
                       of the original W0, rank 2r, init_lora_weights true;
      expected.json    input_ids and PEFT's logits of the trained model (on its residual base), and the
                       logits of PeftModel.from_pretrained(original base, adapter/) and of (original base,
                       converted/), which PEFT computes the same.

Everything runs in float32, as PEFT computes these initialisations (it casts the weight to float32).
"""

import json
import os
import shutil
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")
OUT = os.path.join(ROOT, "init")


def spectrum_matrix(out_f: int, in_f: int, seed: int) -> torch.Tensor:
    """U·diag(s)·Vᵀ with orthonormal U, V from a seeded QR and singular values 4, 3.2, 2.56, ... (ratio 0.8)."""
    g = torch.Generator().manual_seed(seed)
    k = min(out_f, in_f)
    u, _ = torch.linalg.qr(torch.randn(out_f, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_f, k, generator=g, dtype=torch.float64))
    s = 4.0 * 0.8 ** torch.arange(k, dtype=torch.float64)
    return (u @ torch.diag(s) @ v.T).to(torch.float32)


class Two(torch.nn.Module):
    def __init__(self, wide: torch.Tensor, tall: torch.Tensor):
        super().__init__()
        self.wide = torch.nn.Linear(20, 12, bias=False)
        self.tall = torch.nn.Linear(12, 20, bias=False)
        with torch.no_grad():
            self.wide.weight.copy_(wide)
            self.tall.weight.copy_(tall)

    def forward(self, x):
        return self.tall(self.wide(x))


def layer_inits(wide, tall):
    os.makedirs(OUT, exist_ok=True)
    save_file({"wide": wide.contiguous(), "tall": tall.contiguous()}, os.path.join(OUT, "layers.safetensors"))
    for kind in ["pissa", "pissa_niter_4", "olora"]:
        torch.manual_seed(0)  # svd_lowrank draws its test matrix from torch's global generator
        model = get_peft_model(
            Two(wide, tall),
            LoraConfig(r=4, lora_alpha=8, target_modules=["wide", "tall"], init_lora_weights=kind),
        )
        tensors = {}
        for name in ["wide", "tall"]:
            layer = getattr(model.base_model.model, name)
            tensors[f"{name}.lora_A"] = layer.lora_A["default"].weight.detach().clone().contiguous()
            tensors[f"{name}.lora_B"] = layer.lora_B["default"].weight.detach().clone().contiguous()
            tensors[f"{name}.residual"] = layer.base_layer.weight.detach().clone().contiguous()
            ba = tensors[f"{name}.lora_B"] @ tensors[f"{name}.lora_A"]
            err = (tensors[f"{name}.residual"] + 2 * ba - getattr(Two(wide, tall), name).weight).abs().max()
            print(f"{kind} {name}: |residual + s·B·A - W0|max = {err:.2e}")
        save_file(tensors, os.path.join(OUT, f"{kind}.safetensors"))


def llama(kind: str):
    src = os.path.join(ROOT, "models", "llama_untied")
    dst = os.path.join(OUT, f"llama-{kind}")
    shutil.rmtree(dst, ignore_errors=True)
    ids = torch.tensor([[1, 5, 17, 33, 2, 64, 8, 40, 11, 3]])
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=kind, task_type="CAUSAL_LM"
    )
    model = get_peft_model(base, config)
    with tempfile.TemporaryDirectory() as tmp:
        initial = os.path.join(tmp, "initial")
        # PEFT's recipe: save the initial adapter with init_lora_weights=True before training
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(initial)
        model.peft_config["default"].init_lora_weights = kind
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.eval()
        with torch.no_grad():
            trained = model(ids).logits[0]
        model.save_pretrained(os.path.join(dst, "adapter"))
        model.save_pretrained(os.path.join(dst, "converted"), path_initial_model_for_weight_conversion=initial)
    fresh = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    loaded = PeftModel.from_pretrained(fresh, os.path.join(dst, "adapter")).eval()
    with torch.no_grad():
        reloaded = loaded(ids).logits[0]
    fresh = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    conv = PeftModel.from_pretrained(fresh, os.path.join(dst, "converted")).eval()
    with torch.no_grad():
        converted = conv(ids).logits[0]
    print(
        f"llama {kind}: |reloaded - trained|max = {(reloaded - trained).abs().max():.2e}, "
        f"|converted - trained|max = {(converted - trained).abs().max():.2e}"
    )
    for sub in ["adapter", "converted"]:
        readme = os.path.join(dst, sub, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        cfg_path = os.path.join(dst, sub, "adapter_config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["base_model_name_or_path"] = "test/fixtures/models/llama_untied"  # not this machine's path
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(os.path.join(dst, "expected.json"), "w") as f:
        json.dump(
            {
                "input_ids": ids[0].tolist(),
                "trained_logits": [[float(x) for x in row] for row in trained.tolist()],
                "reloaded_logits": [[float(x) for x in row] for row in reloaded.tolist()],
                "converted_logits": [[float(x) for x in row] for row in converted.tolist()],
            },
            f,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    layer_inits(spectrum_matrix(12, 20, 1), spectrum_matrix(20, 12, 2))
    llama("pissa")
    llama("olora")
