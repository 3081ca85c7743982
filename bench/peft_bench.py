#!/usr/bin/env python3
"""The second peer of the LoRA benchmark: the step a Python user would write with the real stack,
transformers + PEFT on pip's torch (issue #12's "transformers + PEFT" peer).

`AutoModelForCausalLM.from_config` on the bench model's config.json (transformers' default attention;
no dropout, as the other sides),
the base weights the Node side wrote (weights.safetensors; our Linear layout [out, in], transposed into
GPT-2's Conv1D [in, out]), `get_peft_model(LoraConfig(r, lora_alpha, target_modules))` with PEFT's
lora_A / lora_B set to the file's initial A and B, cross-entropy over the bench's targets, backward,
torch.optim.AdamW over the trainable (LoRA) parameters. Then greedy `generate` with its KV cache.
Prints one JSON line in torch_bench.py's format (bench/spec.ts ChildResult), side "peft".

  PY bench/peft_bench.py --probe
  PY bench/peft_bench.py --spec '<StepSpec JSON>' --weights DIR --threads N

PY is a python with torch, transformers and peft (bench.ts takes it from LORA_BENCH_PEFT_PYTHON;
`python3 -m venv V && V/bin/pip install torch transformers peft`). Set OMP_NUM_THREADS=N and
OMP_WAIT_POLICY=PASSIVE in the environment (bench.ts does).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch_bench import child_result, cli, load_safetensors, train_record  # noqa: E402

CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # GPT-2's [in, out] weights


def versions():
    import peft
    import transformers

    return f"transformers {transformers.__version__} + peft {peft.__version__} on torch {torch.__version__}"


def build(spec, P):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(spec["config"])
    gpt2 = cfg["model_type"] == "gpt2"
    # no dropout, as on the other two sides (GPT2Config's defaults are 0.1, applied in train mode)
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
        cfg.setdefault(key, 0.0)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    state = {}
    for name, t in P.items():
        if name.startswith("bench.") or ".lora_" in name:
            continue
        hf = name.replace(".base_layer.", ".")
        if gpt2 and t.ndim == 2 and any(f".{m}." in hf for m in CONV1D):
            t = t.t()
        state[hf] = t
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise SystemExit(f"peft_bench: weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    lora = LoraConfig(
        r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0, fan_in_fan_out=gpt2
    )
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                path = name.removeprefix("base_model.model.")
                module.lora_A["default"].weight.copy_(P[path + ".lora_A"])
                module.lora_B["default"].weight.copy_(P[path + ".lora_B"])
    return model


def run(spec, weights_dir, threads):
    torch.set_num_threads(threads)
    P = load_safetensors(os.path.join(weights_dir, "weights.safetensors"))
    model = build(spec, P)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    train = train_record(spec, P, params, lambda ids: model(input_ids=ids).logits)

    gen = None
    if spec["genTokens"] > 0:
        model.eval()
        prompt = P["bench.prompt"].long()[None, :]
        n = spec["genTokens"]
        with torch.no_grad():
            t0 = time.perf_counter()
            model(input_ids=prompt)  # the prompt's forward alone: the prefill's share of generate
            prefill_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0
            )
            ms = (time.perf_counter() - t0) * 1000
        new = out[0, prompt.shape[1] :].tolist()
        gen = {
            "promptTokens": spec["genPrompt"],
            "newTokens": len(new),
            "ms": ms,
            "prefillMs": prefill_ms,
            "tokPerSec": len(new) * 1000 / ms,
            "tokens": new,
        }

    return child_result("peft", threads, versions(), train, gen)


if __name__ == "__main__":
    cli(run, versions, __doc__.split("\n")[0])
