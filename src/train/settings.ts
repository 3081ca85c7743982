/**
 * The settings of a fine-tuning job: one table gives each its type, default, bounds and help. The
 * same names are `lora train`'s flags, the keys of its --config files, and the keys of the run record
 * a checkpoint stores; the CLI, the web page and tests all build a job from this table.
 */
import { BASE_DTYPES } from "../nn/base-dtype.js";
import { OPTIMIZERS } from "./optim.js";
import { SCHEDULES } from "./schedule.js";

/** A setting that is missing, malformed or out of range; the message names it as a flag (--rank). */
export class SettingsError extends Error {
  override name = "SettingsError";
}

export const BASE_DTYPE_HELP =
  "store the frozen base weights in f32, or bf16/f16 for half the memory (LoRA weights stay f32); auto: bf16 where the backend multiplies it faster, else f32";

type Kind = "string" | "int" | "number" | "boolean";
export interface Spec {
  kind: Kind;
  description: string;
  valueName?: string;
  def?: string | number | boolean;
  min?: number;
  /** min itself is not allowed (epochs > 0). */
  exclusiveMin?: boolean;
  max?: number;
  choices?: readonly string[];
  /** May differ on --resume: it does not change what is trained (a path whose content is checked). */
  free?: boolean;
  /** May differ on --resume, and changes how training continues: printed and recorded in the run. */
  tunable?: boolean;
  /** A path: stored resolved, so a resume works from any directory. */
  path?: boolean;
}

export const SETTINGS = {
  model: {
    kind: "string",
    valueName: "DIR",
    free: true,
    path: true,
    description:
      "Hugging Face model folder, or a GGUF model file (llama, qwen2, qwen3, gpt2; dequantised on load)",
  },
  data: {
    kind: "string",
    valueName: "PATH",
    free: true,
    path: true,
    description: "training data: .txt, .jsonl (text | prompt+completion | messages | input_ids) or a folder",
  },
  out: {
    kind: "string",
    valueName: "DIR",
    free: true,
    path: true,
    description: "output folder (adapter, checkpoints); a new folder, never the model's",
  },
  "val-data": {
    kind: "string",
    valueName: "PATH",
    free: true,
    path: true,
    description: "held-out data (default: valid.jsonl of a --data folder)",
  },
  "val-batches": {
    kind: "int",
    def: 25,
    min: 0,
    free: true,
    valueName: "N",
    description: "held-out loss on the first N × --batch-size validation rows (0: all of them)",
  },
  rank: { kind: "int", def: 8, min: 1, valueName: "R", description: "LoRA rank r" },
  alpha: { kind: "number", def: 16, min: 0, valueName: "A", description: "LoRA alpha (scale alpha/r)" },
  dropout: { kind: "number", def: 0, min: 0, max: 0.99, valueName: "P", description: "LoRA dropout" },
  targets: {
    kind: "string",
    valueName: "LIST",
    description: "modules to adapt: names (q_proj,v_proj), a regex, or all-linear (default: the model's)",
  },
  layers: { kind: "string", valueName: "LIST", description: "blocks to adapt, e.g. 0,1,4-7 (default: all)" },
  "modules-to-save": {
    kind: "string",
    valueName: "LIST",
    description:
      "modules trained in full and saved whole in the adapter (PEFT's modules_to_save, matched by name suffix), e.g. lm_head,norm",
  },
  "trainable-tokens": {
    kind: "string",
    valueName: "IDS",
    description:
      "train only these rows of the input embedding (PEFT's trainable_token_indices), e.g. 3,5,100-104; a tied head follows them",
  },
  "save-embedding-layers": {
    kind: "boolean",
    description:
      "also write the whole table of each LoRA-adapted embedding into the adapter (PEFT's save_embedding_layers; as large as the embedding)",
  },
  rslora: { kind: "boolean", description: "rank-stabilised scale alpha/sqrt(r)" },
  dora: {
    kind: "boolean",
    description: "DoRA (PEFT's use_dora): also train a magnitude per output row of each adapted layer",
  },
  init: {
    kind: "string",
    def: "kaiming",
    choices: ["kaiming", "gaussian", "pissa", "pissa_niter_N", "olora"],
    valueName: "KIND",
    description:
      "init of A and B, as PEFT's init_lora_weights (pissa, pissa_niter_N, olora: from W0's SVD or QR, training on the residual W0)",
  },
  "convert-to-lora": {
    kind: "boolean",
    free: true,
    description:
      "with --init pissa/pissa_niter_N/olora: write the adapter as a plain LoRA (rank 2r) of the original base model",
  },
  optimizer: {
    kind: "string",
    def: "adamw",
    choices: OPTIMIZERS,
    valueName: "NAME",
    description: "optimizer",
  },
  lr: {
    kind: "number",
    def: 2e-4,
    min: 0,
    tunable: true,
    valueName: "LR",
    description: "peak learning rate",
  },
  "weight-decay": {
    kind: "number",
    def: 0,
    min: 0,
    tunable: true,
    valueName: "WD",
    description: "weight decay",
  },
  schedule: {
    kind: "string",
    def: "linear",
    tunable: true,
    choices: SCHEDULES,
    valueName: "KIND",
    description: "learning-rate schedule",
  },
  warmup: { kind: "int", def: 0, min: 0, tunable: true, valueName: "N", description: "warmup steps" },
  steps: {
    kind: "int",
    min: 1,
    tunable: true,
    valueName: "N",
    description: "optimizer steps (default: from --epochs); a resume may extend a run",
  },
  epochs: {
    kind: "number",
    min: 0,
    exclusiveMin: true,
    tunable: true,
    valueName: "E",
    description: "passes over the data (default 1)",
  },
  "batch-size": { kind: "int", def: 4, min: 1, valueName: "N", description: "rows per micro-batch" },
  "grad-accum": { kind: "int", def: 1, min: 1, valueName: "N", description: "micro-batches per step" },
  "seq-len": {
    kind: "int",
    min: 2,
    valueName: "N",
    description: "truncate rows to N tokens (default: context)",
  },
  "max-grad-norm": {
    kind: "number",
    def: 1,
    min: 0,
    tunable: true,
    valueName: "X",
    description: "clip the gradient norm (0: off)",
  },
  seed: { kind: "int", def: 0, min: 0, valueName: "N", description: "seed of A's init, data order, dropout" },
  "no-shuffle": { kind: "boolean", description: "keep the data in file order" },
  "mask-prompt": { kind: "boolean", description: "loss only on completions and assistant turns" },
  pack: {
    kind: "boolean",
    description: "join the training rows and cut them into --seq-len chunks (pretraining)",
  },
  "eval-every": {
    kind: "int",
    min: 0,
    free: true,
    valueName: "N",
    description: "held-out loss every N steps (default: 10 times a run; 0: start and end only)",
  },
  "save-every": {
    kind: "int",
    def: 100,
    min: 1,
    free: true,
    valueName: "N",
    description: "checkpoint every N steps (and at the end)",
  },
  keep: { kind: "int", def: 3, min: 0, free: true, valueName: "N", description: "checkpoints kept (0: all)" },
  adapter: {
    kind: "string",
    valueName: "DIR",
    free: true,
    path: true,
    description:
      "start from this adapter (a PEFT or mlx-lm folder, or a GGUF LoRA file; the format is detected)",
  },
  full: { kind: "boolean", description: "full fine-tuning: every weight trainable (the paper's baseline)" },
  "base-dtype": {
    kind: "string",
    def: "auto",
    choices: BASE_DTYPES,
    valueName: "DTYPE",
    description: `${BASE_DTYPE_HELP}; --full needs f32`,
  },
} satisfies Record<string, Spec>;

export type SettingName = keyof typeof SETTINGS;
export type Settings = { [K in SettingName]: string | number | boolean | null };

/** Raw values by setting name, as flags or a --config file give them (strings, or true for a switch). */
export type SettingValues = Record<string, string | number | boolean | readonly unknown[] | undefined>;

/** The bounds of a numeric value: an integer or not, min (exclusive where said) and max. */
export interface NumberBounds {
  int?: boolean;
  min?: number;
  exclusiveMin?: boolean;
  max?: number;
}

/**
 * A numeric flag or setting parsed and checked against its bounds, or a SettingsError naming them
 * (`--rank must be an integer >= 1, got "0"`). The CLI's other numeric flags use it too.
 */
export function checkedNumber(name: string, raw: string, b: NumberBounds): number {
  const n = Number(raw);
  const { min, max } = b;
  const ok =
    raw.trim() !== "" &&
    Number.isFinite(n) &&
    (!b.int || Number.isSafeInteger(n)) &&
    (min === undefined || (b.exclusiveMin ? n > min : n >= min)) &&
    (max === undefined || n <= max);
  if (ok) return n === 0 ? 0 : n; // -0 reads as 0
  const range = [
    min !== undefined ? `${b.exclusiveMin ? ">" : ">="} ${min}` : "",
    max !== undefined ? `<= ${max}` : "",
  ]
    .filter(Boolean)
    .join(" and ");
  throw new SettingsError(
    `--${name} must be ${b.int ? "an integer" : "a number"}${range ? ` ${range}` : ""}, got "${raw}"`,
  );
}

/** A choice spelled NAME_N stands for NAME_ followed by a whole number (pissa_niter_N: pissa_niter_4). */
const isChoice = (choice: string, raw: string) =>
  choice === raw ||
  (choice.endsWith("_N") &&
    raw.startsWith(choice.slice(0, -1)) &&
    /^\d+$/.test(raw.slice(choice.length - 1)));

/** Typed settings from flag-style values; unset optional ones are null. */
export function settingsFrom(v: SettingValues): Settings {
  const out: Record<string, string | number | boolean | null> = {};
  for (const [name, s] of Object.entries(SETTINGS as Record<string, Spec>)) {
    const raw = v[name];
    if (s.kind === "boolean") out[name] = raw === true;
    else if (raw === undefined) out[name] = s.def ?? null;
    else if (s.kind === "string") {
      if (s.choices && !s.choices.some((c) => isChoice(c, raw as string)))
        throw new SettingsError(`--${name} must be one of ${s.choices.join(", ")}, got "${raw}"`);
      out[name] = raw as string;
    } else out[name] = checkedNumber(name, String(raw), { ...s, int: s.kind === "int" });
  }
  return out as Settings;
}

/** Settings back to flag-style values (for merging a stored run with new flags). */
export function settingsToValues(s: Partial<Settings>): Record<string, string | boolean> {
  const v: Record<string, string | boolean> = {};
  for (const [k, x] of Object.entries(s)) {
    if (x === null || x === false || !(k in SETTINGS)) continue;
    v[k] = typeof x === "boolean" ? x : String(x);
  }
  return v;
}

const specs = Object.entries(SETTINGS as Record<string, Spec>) as [SettingName, Spec][];

/** The settings that differ between a stored run and a new one, except those a resume may change. */
export function settingDiffs(stored: Settings, now: Settings): string[] {
  return specs
    .filter(([k, s]) => !s.free && !s.tunable && stored[k] !== now[k])
    .map(([k]) => `--${k}: ${JSON.stringify(stored[k])} in the checkpoint, ${JSON.stringify(now[k])} now`);
}

/** The tunable settings (learning rate, steps, ...) a resume changes: name -> [stored, now]. */
export function tunedSettings(stored: Settings, now: Settings): Record<string, [unknown, unknown]> {
  return Object.fromEntries(
    specs.filter(([k, s]) => s.tunable && stored[k] !== now[k]).map(([k]) => [k, [stored[k], now[k]]]),
  );
}

/** --targets: "all-linear", a regex (when it has regex syntax), or a comma-separated list of names. */
export function parseTargets(s: string): string[] | string {
  if (s === "all-linear" || /[\\^$*+?()[\]{}|]/.test(s)) return s;
  const names = s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);
  if (names.length === 0)
    throw new SettingsError(
      `--targets is empty; give module names (q_proj,v_proj), a regex, or all-linear, or drop the flag for the model's default`,
    );
  return names;
}

/**
 * The LoRA targets of a run: --targets when given, else PEFT's default for the model type; a type that
 * PEFT has no default for (smollm3, phi3) needs --targets, as PEFT needs target_modules.
 */
export function loraTargets(
  flag: string | null | undefined,
  defaults: string[],
  modelType: unknown,
): string[] | string {
  if (flag !== null && flag !== undefined) return parseTargets(flag);
  if (defaults.length === 0)
    throw new SettingsError(
      `PEFT has no default target_modules for model_type ${JSON.stringify(modelType)}; pass --targets (module names such as q_proj,v_proj, a regex, or all-linear)`,
    );
  return defaults;
}

/** --layers: "0,2,5-7" -> [0, 2, 5, 6, 7] (the same grammar for --trainable-tokens). */
export function parseLayers(s: string, flag = "--layers"): number[] {
  const out: number[] = [];
  for (const part of s.split(",").map((x) => x.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1])))
      throw new SettingsError(`${flag} must look like 0,1,4-7, got "${s}"`);
    for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) out.push(i);
  }
  return out;
}

/** --modules-to-save: "lm_head,norm" -> ["lm_head", "norm"] (none: null). */
export function parseModuleNames(s: string | null | undefined): string[] | null {
  if (s === null || s === undefined) return null;
  const names = s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);
  if (names.length === 0)
    throw new SettingsError(`--modules-to-save is empty; give module names (lm_head,norm)`);
  return names;
}
