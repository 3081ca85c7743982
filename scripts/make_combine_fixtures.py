"""Fixtures for combining adapters (test/lora/combine.test.ts, test/cli/combine.test.ts).

Four PEFT adapters on test/fixtures/models/llama_gqa_tied (random non-zero B), and what PEFT's own
add_weighted_adapter makes of them, each saved as PEFT saves an adapter:
  a: r 4, lora_alpha 8,  q_proj v_proj
  b: r 4, lora_alpha 16, q_proj k_proj
  c: r 2, lora_alpha 4,  v_proj o_proj
  d: r 2, lora_alpha 4,  q_proj, use_rslora (PEFT's cat then keeps use_rslora with lora_alpha = r)
(peft_cat_da, d first)
plus logits.json: PEFT's logits with adapters a and c active at once (set_adapter(["a", "c"])), and
with the base alone. Run from the repository root:
  /work/venv/bin/python scripts/make_combine_fixtures.py
"""

import json
import shutil
import tempfile
from pathlib import Path

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

BASE = "test/fixtures/models/llama_gqa_tied"
OUT = Path("test/fixtures/combine")
IDS = [1, 5, 9, 14, 3, 27, 40, 2]

ADAPTERS = {
    "a": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "b": dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj"]),
    "c": dict(r=2, lora_alpha=4, target_modules=["v_proj", "o_proj"]),
    "d": dict(r=2, lora_alpha=4, target_modules=["q_proj"], use_rslora=True),
}

# name -> (adapters, weights, add_weighted_adapter keyword arguments)
COMBINED = {
    "peft_cat_ac": (["a", "c"], [0.7, -0.4], dict(combination_type="cat")),
    "peft_svd_ac": (["a", "c"], [0.7, -0.4], dict(combination_type="svd")),
    "peft_svd_ac_r3": (["a", "c"], [0.7, -0.4], dict(combination_type="svd", svd_rank=3)),
    "peft_linear_ab": (["a", "b"], [0.6, -0.3], dict(combination_type="linear")),
    "peft_ties_ab_total": (["a", "b"], [0.6, -0.3], dict(combination_type="ties", density=0.5)),
    "peft_ties_ab_frequency": (
        ["a", "b"],
        [0.6, 0.9],
        dict(combination_type="ties", density=0.4, majority_sign_method="frequency"),
    ),
    "peft_magnitude_prune_ab": (["a", "b"], [0.6, -0.3], dict(combination_type="magnitude_prune", density=0.3)),
    "peft_cat_da": (["d", "a"], [1.0, 1.0], dict(combination_type="cat")),
}


def base():
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


def save(model, name, dest: Path):
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, selected_adapters=[name])
        src = Path(tmp) / name if name != "default" else Path(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = None
    for name, kw in ADAPTERS.items():
        config = LoraConfig(lora_dropout=0.0, **kw)
        if model is None:
            model = get_peft_model(base(), config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        for n, p in model.named_parameters():
            if f"lora_B.{name}." in n:
                with torch.no_grad():
                    p.copy_(0.3 * torch.randn_like(p))
        save(model, name, OUT / name)
    model.eval()
    for out, (names, weights, kw) in COMBINED.items():
        model.add_weighted_adapter(names, weights, out, **kw)
        save(model, out, OUT / out)
    # set_adapter with several names: their deltas add
    ids = torch.tensor([IDS])
    with torch.no_grad():
        model.base_model.set_adapter(["a", "c"])
        both = model(ids).logits[0].flatten().tolist()
        with model.disable_adapter():
            alone = model(ids).logits[0].flatten().tolist()
    (OUT / "logits.json").write_text(
        json.dumps({"ids": IDS, "a+c": both, "base": alone, "peft": peft.__version__}) + "\n"
    )
    # sanity: PEFT loads what it wrote
    PeftModel.from_pretrained(base(), OUT / "a")


if __name__ == "__main__":
    main()
