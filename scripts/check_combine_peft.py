"""Loads adapters that `lora merge --method` wrote into the real PEFT and compares PEFT's logits with
PEFT's own logits of the inputs stacked (test/fixtures/combine/logits.json: adapters a and c active):
what we write loads in PEFT and means there what it means here. Run from the repository root:

    npx lora merge --adapter test/fixtures/combine/a --adapter test/fixtures/combine/c --method cat --out /tmp/cc
    /work/venv/bin/python scripts/check_combine_peft.py /tmp/cc [MORE ...]
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

ref = json.load(open("test/fixtures/combine/logits.json"))
for d in sys.argv[1:]:
    base = AutoModelForCausalLM.from_pretrained("test/fixtures/models/llama_gqa_tied", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, d).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ref["ids"]])).logits[0].flatten()
    diff = (logits - torch.tensor(ref["a+c"])).abs().max().item()
    print(f"{d}: max |PEFT logits - PEFT's with a and c active| = {diff:.3g}")
