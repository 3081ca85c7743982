/** The command line of `npm run bench` (node:util parseArgs), and the per-model StepSpec it implies. */
import { parseArgs } from "node:util";
import type { ModelPreset } from "./models.js";
import type { StepSpec } from "./spec.js";

export interface BenchOptions {
  models: string[];
  threads: number[];
  steps: number;
  warmup: number;
  quick: boolean;
  torch: boolean;
  /** LORA_BACKEND for the children; undefined lets the library pick the fastest. */
  backend: string | undefined;
  out: string;
}

export const USAGE = `usage: npm run bench -- [options]

  --models a,b     a: GPT-2-small shape (gpt2, B=1), b: small Llama (B=8); also "tiny" (default a,b)
  --threads 1,2    thread counts (LORA_THREADS for ours, torch.set_num_threads for torch) (default 1,2)
  --steps N        timed training steps; the reported step time is their median (default 5, --quick 2)
  --warmup N       untimed steps first (default 2, --quick 1; at least 1)
  --quick          short run to check the harness: seq 64 (a) / 32 (b), 16 generated tokens, one call per GEMM shape
  --no-torch       skip the PyTorch side
  --backend NAME   LORA_BACKEND for our side (default: the fastest available)
  --out FILE       JSON results (default bench/results/latest.json)
  -h, --help`;

const list = (s: string, what: string) =>
  s.split(",").map((x) => {
    const v = x.trim();
    if (!v) throw new Error(`--${what}: empty item in "${s}"`);
    return v;
  });

function count(s: string | undefined, flag: string, fallback: number, min: number): number {
  if (s === undefined) return fallback;
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${flag} must be an integer >= ${min}, got "${s}"`);
  return n;
}

/** Parses argv; returns null when help was asked for. */
export function parseBenchArgs(argv: string[], defaultOut: string): BenchOptions | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      models: { type: "string", default: "a,b" },
      threads: { type: "string", default: "1,2" },
      steps: { type: "string" },
      warmup: { type: "string" },
      quick: { type: "boolean", default: false },
      "no-torch": { type: "boolean", default: false },
      backend: { type: "string" },
      out: { type: "string", default: defaultOut },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) return null;
  const quick = values.quick!;
  return {
    models: list(values.models!, "models"),
    threads: list(values.threads!, "threads").map((t) => count(t, "threads", 1, 1)),
    steps: count(values.steps, "steps", quick ? 2 : 5, 1),
    warmup: count(values.warmup, "warmup", quick ? 1 : 2, 1),
    quick,
    torch: !values["no-torch"],
    backend: values.backend,
    out: values.out!,
  };
}

/** The work one configuration does: the same for ours and torch, and for every thread count. */
export function stepSpec(p: ModelPreset, o: BenchOptions): StepSpec {
  return {
    model: p.id,
    config: p.config,
    targets: p.targets,
    r: 8,
    alpha: 16,
    lr: 1e-3,
    batch: p.batch,
    seq: o.quick ? p.quickSeq : p.seq,
    warmup: o.warmup,
    steps: o.steps,
    seed: 0,
    genPrompt: 16,
    genTokens: o.quick ? 16 : 64,
    gemm: true,
    gemmMinMs: o.quick ? 0 : 300,
  };
}
