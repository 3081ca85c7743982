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
  /** Our side's configurations: a backend (LORA_BACKEND) and the frozen weights' dtype, f32 ones first. */
  variants: Variant[];
  out: string;
}

/** One configuration of our side: `native/bf16` is the native backend with a bf16 frozen base. */
export interface Variant {
  backend: string;
  baseDtype: BaseDtype;
}
export type BaseDtype = "f32" | "bf16" | "f16";

export const variantName = (v: Variant) => `${v.backend}/${v.baseDtype}`;

export const USAGE = `usage: npm run bench -- [options]

  --models a,b     a: GPT-2-small shape (gpt2, B=1), b: small Llama (B=8); also "tiny" (default a,b)
  --threads 1,2    thread counts (LORA_THREADS for ours, torch.set_num_threads for torch) (default 1,2)
  --steps N        timed training steps; the reported step time is their median (default 5, --quick 2)
  --warmup N       untimed steps first (default 2, --quick 1; at least 1)
  --quick          short run to check the harness: seq 64 (a) / 32 (b), 16 generated tokens, one call per GEMM shape
  --no-torch       skip the PyTorch side
  --variants LIST  our side's configurations as backend/base-dtype (default: native/f32,native/bf16,wasm/f32,
                   without native when its addon is not built); base dtype f32|bf16|f16 = frozen weights' storage
  --backend NAME   shorthand for --variants NAME/f32
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

function parseVariants(s: string): Variant[] {
  const out = list(s, "variants").map((item) => {
    const [backend, baseDtype = "f32", extra] = item.split("/");
    if (!backend || extra !== undefined || !["f32", "bf16", "f16"].includes(baseDtype)) {
      throw new Error(
        `--variants: "${item}" is not backend/dtype with dtype f32, bf16 or f16 (e.g. native/bf16)`,
      );
    }
    return { backend, baseDtype: baseDtype as BaseDtype };
  });
  // f32 first: the first configuration writes the f32 weights the torch side loads
  return out.sort((a, b) => Number(a.baseDtype !== "f32") - Number(b.baseDtype !== "f32"));
}

/** Parses argv; returns null when help was asked for. `defaultVariants` is what runs without --variants. */
export function parseBenchArgs(
  argv: string[],
  defaultOut: string,
  defaultVariants = "wasm/f32",
): BenchOptions | null {
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
      variants: { type: "string" },
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
    variants: parseVariants(values.variants ?? (values.backend ? `${values.backend}/f32` : defaultVariants)),
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
