"""Loads adapters that `lora train` wrote into the real PEFT, on the fixture models, and compares PEFT's
loss with ours: the adapters travel (issue #13: "PEFT adapters that PEFT would accept").

    V/bin/python scripts/check_peft_load.py RUNS_DIR MODEL [MODEL ...]

For each MODEL it expects RUNS_DIR/run-MODEL (a `lora train` output folder on
test/fixtures/models/MODEL), RUNS_DIR/MODEL.jsonl (input_ids rows) and RUNS_DIR/MODEL.ours.json
(`lora eval --json` of the same adapter and rows), and prints PEFT's loss beside ours.
"""

import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

runs, models = sys.argv[1], sys.argv[2:]
fixtures = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "models")
worst = 0.0
for name in models:
    base = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, name), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(runs, f"run-{name}")).eval()
    rows = [json.loads(line)["input_ids"] for line in open(os.path.join(runs, f"{name}.jsonl"))]
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in rows:
            x = torch.tensor([ids])
            logits = model(x).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            count += len(ids) - 1
    theirs = total / count
    ours = json.load(open(os.path.join(runs, f"{name}.ours.json")))["loss"]
    rel = abs(theirs - ours) / abs(theirs)
    worst = max(worst, rel)
    print(f"{name}: PEFT loss {theirs:.6f}, ours {ours:.6f}, relative difference {rel:.1e}")
print(f"worst relative difference {worst:.1e}")
sys.exit(0 if worst <= 1e-4 else 1)
