/**
 * The README of a scale-out folder: how to install and launch it, what it runs, what comes back, and
 * every setting the engine cannot express identically. Pure.
 */
import type { Difference } from "./differences.js";
import type { EnginePlan } from "./mapping.js";
import { settingsMarkdown } from "./settings-table.js";

export const LAUNCH = "accelerate launch --config_file accelerate_config.yaml train.py";

export function readme(plan: EnginePlan, diffs: readonly Difference[], flags: string): string {
  const w = plan.world;
  const m = plan.model;
  const lines = [
    "# A `lora train` run for Hugging Face accelerate + TRL",
    "",
    `Written by \`lora scale-out\` from: \`${flags}\``,
    "",
    `${w.num_processes} process(es), strategy ${w.strategy}, device ${w.device}, mixed precision ${w.mixed_precision}; model \`${plan.model}\`; data: ${plan.data.format} rows in \`${plan.data.train}\`${plan.data.valid ? ` and \`${plan.data.valid}\`` : ""}.`,
    "",
    "## Run it",
    "",
    "From inside this folder:",
    "",
    "```sh",
    "python -m venv .venv && . .venv/bin/activate",
    "pip install -r requirements.txt",
    LAUNCH,
    "```",
    "",
    "No further arguments: everything is in `train.py` (its `PLAN`) and `accelerate_config.yaml`.",
    `It prints each process's rank and the world size, and writes \`world.json\`, \`metrics.jsonl\` (loss, grad_norm, learning_rate per step), Trainer checkpoints in \`checkpoints/\` and the PEFT adapter in \`${plan.adapter_out}/\`.`,
    "`python train.py --dump-config FILE` writes the SFTConfig, LoraConfig and optimizer as TRL and PEFT resolve them, without training.",
    "",
    "## Bring the adapter back",
    "",
    "```sh",
    `lora eval --model ${m} --adapter ${plan.adapter_out} --data DATA`,
    `lora generate --model ${m} --adapter ${plan.adapter_out} --prompt "..."`,
    `lora merge --model ${m} --adapter ${plan.adapter_out} --out MERGED`,
    `lora export --model ${m} --adapter ${plan.adapter_out} --format gguf --out adapter.gguf`,
    "```",
    "",
    "## What the engine does not do identically",
    "",
    ...(diffs.length
      ? diffs.map((d) => `- \`--${d.setting}\`: ${d.what}`)
      : ["Nothing: every setting maps exactly."]),
    "",
    "## How each setting is mapped",
    "",
    settingsMarkdown(),
    "",
  ];
  return lines.join("\n");
}
