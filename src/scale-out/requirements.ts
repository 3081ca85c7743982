/**
 * requirements.txt of a scale-out folder: the Python packages train.py needs, pinned to the versions it
 * was tested with (the opt-in `npm run test:scale-out` runs it with them). Pure.
 */
import type { Strategy } from "./mapping.js";

/** The versions the generated train.py was tested with. */
export const TESTED_WITH = {
  torch: "2.13.0",
  transformers: "5.18.0",
  peft: "0.21.0",
  trl: "1.13.0",
  accelerate: "1.15.0",
  datasets: "5.0.1",
  safetensors: "0.8.0",
} as const;

export function requirementsTxt(strategy: Strategy): string {
  const lines = Object.entries(TESTED_WITH).map(([name, v]) => `${name}==${v}`);
  // DeepSpeed is not installed on the machine these were tested on: unpinned, and the README says so
  if (strategy.startsWith("deepspeed"))
    lines.push("deepspeed  # not tested by lora-ts: pick the version for your CUDA");
  return `# Written by lora scale-out: the versions train.py was tested with.\n${lines.join("\n")}\n`;
}
