"""Loads the PiSSA / OLoRA adapters that scripts/write-init-adapters.ts wrote (as `lora train` writes them)
into the real PEFT on the llama_untied fixture and prints PEFT's logits beside ours (issue #15).

    /work/venv/bin/python scripts/check_peft_init_load.py OUT_DIR

PEFT's form (init_lora_weights "pissa" / "olora") makes PEFT recompute the residual at load, so it
matches; pissa_niter_N's residual comes from torch's random draw, so only its converted form matches.
"""

import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

out = sys.argv[1]
model_dir = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "models", "llama_untied")
ours = json.load(open(os.path.join(out, "ours.json")))
ids = torch.tensor([ours["input_ids"]])
for kind, want in ours["logits"].items():
    want = torch.tensor(want).reshape(ids.shape[1], -1)
    for sub in ["adapter", "converted"]:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        model = PeftModel.from_pretrained(base, os.path.join(out, kind, sub)).eval()
        with torch.no_grad():
            got = model(ids).logits[0]
        print(f"{kind:14s} {sub:9s} max |PEFT - ours| = {(got - want).abs().max().item():.2e}")
