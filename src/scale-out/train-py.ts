/**
 * The text of the generated train.py: TRL's SFTTrainer with a PEFT LoraConfig, every value taken from
 * the EnginePlan embedded in it as JSON. `python train.py --dump-config FILE` writes the SFTConfig,
 * LoraConfig and optimizer it would build (resolved by TRL and PEFT themselves) without training, so
 * the mapping can be checked field by field. Pure.
 */
import type { EnginePlan } from "./mapping.js";

/** JSON that can sit inside a Python r'''…''' literal: a quote is written as the JSON escape \u0027. */
function embeddable(plan: EnginePlan): string {
  return JSON.stringify(plan, null, 2).replaceAll("'", "\\u0027");
}

/** The plan back out of a generated train.py (what the script itself reads). */
export function planOf(trainPy: string): EnginePlan {
  const m = /^PLAN = json\.loads\(r'''\n([\s\S]*?)\n'''\)$/m.exec(trainPy);
  if (!m)
    throw new Error("train.py: no PLAN = json.loads(r'''…''') block; was it written by lora scale-out?");
  return JSON.parse(m[1]!) as EnginePlan;
}

const BODY = String.raw`
HERE = os.path.dirname(os.path.abspath(__file__))


def here(p):
    """A path of the plan, relative to this folder."""
    return p if p is None or os.path.isabs(p) else os.path.join(HERE, p)


def sft_kwargs():
    kw = dict(PLAN["sft_config"])
    kw["output_dir"] = here(kw["output_dir"])
    if PLAN["resolve"]["eval_every"] is not None and kw["eval_strategy"] != "no":
        kw["eval_steps"] = 1  # set from the tokenized data before training (resolve_run)
    return kw


def lora_config():
    if PLAN["lora_config"] is None:
        return None
    from peft import LoraConfig

    return LoraConfig(**PLAN["lora_config"])


def optimizer_cls_and_kwargs():
    import torch

    kwargs = dict(PLAN["optimizer"]["kwargs"])
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return getattr(torch.optim, PLAN["optimizer"]["class"]), kwargs


def context_length():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(PLAN["model"])
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise SystemExit(f"train.py: {PLAN['model']} has no max_position_embeddings; set --seq-len")


def jsonable(x):
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    if hasattr(x, "value"):
        return x.value
    return str(x)


def dump_config(path):
    """The SFTConfig, LoraConfig and optimizer this script builds, as TRL and PEFT resolve them."""
    from trl import SFTConfig

    kw = sft_kwargs()
    if kw["max_length"] is None:
        kw["max_length"] = context_length()
    args = SFTConfig(**kw)
    lc = lora_config()
    cls, kwargs = optimizer_cls_and_kwargs()
    out = {
        "sft_config": {k: getattr(args, k) for k in PLAN["sft_config"]},
        "lora_config": lc.to_dict() if lc is not None else None,
        "optimizer": {"class": f"{cls.__module__}.{cls.__name__}", "kwargs": kwargs},
        "model": PLAN["model"],
        "model_dtype": PLAN["model_dtype"],
        "init_adapter": PLAN["init_adapter"],
    }
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=jsonable)


def resolve_run(trainer):
    """Steps (from --epochs) and the evaluation interval from the tokenized rows, as lora train counts them."""
    r = PLAN["resolve"]
    args = trainer.args
    rows = len(trainer.train_dataset)
    accum = args.gradient_accumulation_steps
    steps = r["steps"]
    if steps is None:
        steps = max(1, math.ceil(r["epochs"] * math.ceil(rows / r["global_batch_size"]) / accum))
    if args.warmup_steps > steps:
        raise SystemExit(f"train.py: --warmup {args.warmup_steps} is more than the run's {steps} steps; lower it or add steps")
    args.max_steps = steps
    every = None
    if trainer.eval_dataset is not None:
        if r["eval_rows"] is not None:
            trainer.eval_dataset = trainer.eval_dataset.select(range(min(r["eval_rows"], len(trainer.eval_dataset))))
        every = r["eval_every"] if r["eval_every"] is not None else max(1, math.floor(steps / 10 + 0.5))
        if every == 0:
            args.eval_strategy = "no"
        else:
            args.eval_steps = every
    return rows, steps, every


def main():
    import torch
    from datasets import load_dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from transformers import set_seed

    # before PEFT draws A: SFTTrainer wraps the model before the Trainer seeds torch
    set_seed(PLAN["sft_config"]["seed"])
    kw = sft_kwargs()
    if kw["max_length"] is None:
        kw["max_length"] = context_length()
    args = SFTConfig(**kw)
    tokenizer = AutoTokenizer.from_pretrained(PLAN["model"])
    model = AutoModelForCausalLM.from_pretrained(PLAN["model"], dtype=getattr(torch, PLAN["model_dtype"]))
    peft_config = lora_config()
    if PLAN["init_adapter"] is not None:
        model = PeftModel.from_pretrained(model, here(PLAN["init_adapter"]), is_trainable=True)
    data = PLAN["data"]
    train = load_dataset("json", data_files=here(data["train"]), split="train")
    valid = load_dataset("json", data_files=here(data["valid"]), split="train") if data["valid"] else None

    class Log(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            world = torch.distributed.get_world_size() if dist else 1
            rank = torch.distributed.get_rank() if dist else 0
            backend = torch.distributed.get_backend() if dist else None
            print(f"scale-out: rank {rank} of world_size {world}, backend {backend}, device {args.device}", flush=True)
            if state.is_world_process_zero:
                with open(here("world.json"), "w") as f:
                    json.dump({"world_size": world, "backend": backend, "device": str(args.device)}, f)
                open(here("metrics.jsonl"), "w").close()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(here("metrics.jsonl"), "a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        peft_config=peft_config,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(),
        callbacks=[Log()],
    )
    rows, steps, every = resolve_run(trainer)
    if trainer.is_world_process_zero():
        print(f"scale-out: {rows} training rows, {steps} steps, global batch {PLAN['resolve']['global_batch_size']}", flush=True)
    trainer.train()
    if trainer.eval_dataset is not None and (every == 0 or steps % every != 0):
        trainer.evaluate()
    out = here(PLAN["adapter_out"])
    trainer.save_model(out)
    if trainer.is_world_process_zero():
        print(f"scale-out: adapter written to {out}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump-config":
        dump_config(sys.argv[2])
    elif len(sys.argv) == 1:
        main()
    else:
        raise SystemExit("usage: accelerate launch --config_file accelerate_config.yaml train.py  (or: python train.py --dump-config FILE)")
`;

/** train.py for the plan: run by `accelerate launch --config_file accelerate_config.yaml train.py`. */
export function trainPy(plan: EnginePlan): string {
  return `#!/usr/bin/env python3
"""
Written by \`lora scale-out\`: the same LoRA run as \`lora train\` with these settings, on Hugging Face's
TRL SFTTrainer + PEFT, launched by accelerate. Run from this folder:

    accelerate launch --config_file accelerate_config.yaml train.py

It writes the PEFT adapter to ${plan.adapter_out}/, metrics.jsonl (one row per logged step) and world.json.
\`python train.py --dump-config FILE\` writes the resolved SFTConfig / LoraConfig / optimizer and exits.
"""
import json
import math
import os
import sys

PLAN = json.loads(r'''
${embeddable(plan)}
''')
${BODY}`;
}
