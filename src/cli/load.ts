/** Loading what the commands share: a model folder, its tokenizer, an optional adapter, and data rows. */
import { extname } from "node:path";
import { loadAdapter } from "../io/node/adapter-folder.js";
import { readDataset } from "../io/node/dataset-file.js";
import { loadModelFolder, type ModelFolder } from "../io/node/model-folder.js";
import { loadTokenizer } from "../io/node/tokenizer-file.js";
import { Tokenizer } from "../io/tokenizer.js";
import { modelFamily } from "../models/index.js";
import { BASE_DTYPES, type BaseDType, isBaseDtypeSetting, resolveBaseDtype } from "../nn/base-dtype.js";
import { contextLength, type DataRow } from "../train/data.js";
import { BASE_DTYPE_HELP } from "../train/settings.js";
import { type AdapterSpec, stackAdapters } from "./adapters.js";
import { type Flag, str, UsageError, type Values } from "./command.js";

export interface Loaded extends ModelFolder {
  tokenizer: Tokenizer | null;
  adapterPaths: string[];
}

/** --base-dtype of `lora eval` and `lora generate` (`lora train` has it in its settings table). */
export const BASE_DTYPE_FLAG: Flag = {
  type: "string",
  valueName: "DTYPE",
  description: `${BASE_DTYPE_HELP} (default auto): ${BASE_DTYPES.join(", ")}`,
};

/** The --base-dtype value, checked, with "auto" resolved for the active backend. */
export function baseDtypeOf(v: Values): BaseDType {
  const raw = str(v, "base-dtype") ?? "auto";
  if (!isBaseDtypeSetting(raw))
    throw new UsageError(`--base-dtype must be one of ${BASE_DTYPES.join(", ")}, got "${raw}"`);
  return resolveBaseDtype(raw);
}

/**
 * Loads the adapter at `path` (PEFT folder, mlx-lm folder or weights file, GGUF LoRA file) onto the model
 * and says on stderr which format it found.
 */
export function adapterOnto(
  model: Parameters<typeof loadAdapter>[0],
  path: string,
  defaultTargets: string[],
  modelConfig?: Record<string, unknown>,
): ReturnType<typeof loadAdapter> {
  const loaded = loadAdapter(model, path, defaultTargets, modelConfig);
  console.error(`adapter: ${loaded.description}`);
  return loaded;
}

/**
 * The model (a folder or a GGUF file, plus an adapter when given) and its tokenizer (null when it has
 * none). Several adapters, or one with a weight, are stacked on the model (cli/adapters.ts).
 */
export function loadModel(
  dir: string,
  adapter?: string | readonly AdapterSpec[],
  opts: { needTokenizer?: boolean; baseDtype?: BaseDType } = {},
): Loaded {
  const folder = loadModelFolder(dir, { baseDtype: opts.baseDtype ?? "f32" });
  for (const line of unusedWarnings(folder.unused, modelFamily(folder.config).checkpoint.towers ?? []))
    console.error(`warning: ${dir}: ${line}`);
  let tokenizer: Tokenizer | null = null;
  try {
    // a GGUF model carries its tokenizer in its metadata
    if (folder.tokenizerFiles) tokenizer = Tokenizer.fromJSON(folder.tokenizerFiles, folder.dir);
    else if (folder.tokenizerError) throw folder.tokenizerError;
    else tokenizer = loadTokenizer(dir);
  } catch (e) {
    if (opts.needTokenizer) throw e;
  }
  const specs = typeof adapter === "string" ? [{ path: adapter, weight: null }] : (adapter ?? []);
  const targets = modelFamily(folder.config).defaultTargets;
  const adapterPaths =
    specs.length === 1 && specs[0]!.weight === null
      ? adapterOnto(folder.model, specs[0]!.path, targets, folder.config).paths
      : specs.length > 0
        ? stackAdapters(folder.model, specs, targets, folder.config)
        : [];
  folder.model.eval();
  return { ...folder, tokenizer, adapterPaths };
}

/** One line per tower the text model leaves out (a multimodal folder's vision tower), one per other tensor. */
export function unusedWarnings(
  unused: readonly string[],
  towers: readonly { pattern: RegExp; what: string }[],
): string[] {
  const lines: string[] = [];
  let rest = unused;
  for (const { pattern, what } of towers) {
    const mine = rest.filter((n) => pattern.test(n));
    rest = rest.filter((n) => !pattern.test(n));
    if (mine.length > 0)
      lines.push(
        `the ${what}'s ${mine.length} tensor(s) are not used: lora-ts trains and runs the text model only`,
      );
  }
  return [...lines, ...rest.map((name) => `checkpoint tensor "${name}" is not used by the model`)];
}

/** Moved into the library (train/data.ts) so the web page tokenizes as the CLI does. */
export { contextLength, tokenizeRows } from "../train/data.js";

export type Split = "train" | "valid" | "test";

/**
 * The rows of a data file (.txt or .jsonl: all rows) or folder (train.jsonl, ...): the split asked
 * for, or else the first of `prefer` that exists.
 */
export function readRows(path: string, split: Split | undefined, prefer: Split[] = ["train"]): DataRow[] {
  const splits = readDataset(path);
  if (!split) split = prefer.find((s) => splits[s]) ?? "train";
  const rows = splits[split];
  if (!rows) {
    const kind = extname(path) ? "file" : "folder";
    throw new Error(`${path}: this ${kind} has no ${split} split (a folder needs ${split}.jsonl)`);
  }
  return rows;
}

/**
 * The date a chat template shows (Llama 3.1+'s "Today Date"), as date_string: today for a new run, as
 * transformers' strftime_now("%d %b %Y") gives it, and the run's own date on a resume, so the
 * rendered data (and its fingerprint) stays the same on another day.
 */
export function templateDate(now = new Date()): string {
  const month = now.toLocaleString("en-US", { month: "short", timeZone: "UTC" });
  return `${String(now.getUTCDate()).padStart(2, "0")} ${month} ${now.getUTCFullYear()}`;
}

/**
 * Refuses a sequence length past a learned-position model's context (GPT-2: no position exists there)
 * and warns past a RoPE model's, as transformers does: those positions were never trained.
 */
export function checkSeqLen(len: number, config: Record<string, unknown>, what: string): void {
  const ctx = contextLength(config);
  if (len <= ctx) return;
  if (modelFamily(config).learnedPositions)
    throw new UsageError(
      `${what} ${len} is longer than the model's context of ${ctx} positions (n_positions); its learned positions end there: use ${ctx} or less`,
    );
  console.error(
    `warning: ${what} ${len} is longer than the model's context of ${ctx} tokens (max_position_embeddings): positions past it were never trained, and results degrade`,
  );
}
