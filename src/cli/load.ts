/** Loading what the commands share: a model folder, its tokenizer, an optional adapter, and data rows. */
import { extname } from "node:path";
import { loadAdapter } from "../io/node/adapter-folder.js";
import { readDataset } from "../io/node/dataset-file.js";
import { loadModelFolder, type ModelFolder } from "../io/node/model-folder.js";
import { loadTokenizer } from "../io/node/tokenizer-file.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { modelFamily } from "../models/index.js";
import { BASE_DTYPES, type BaseDType, isBaseDtypeSetting, resolveBaseDtype } from "../nn/base-dtype.js";
import { type DataRow, type TokenizedRow, tokenizeRow } from "../train/data.js";
import { type Flag, str, UsageError, type Values } from "./command.js";

export interface Loaded extends ModelFolder {
  tokenizer: Tokenizer | null;
  adapterPaths: string[];
}

export const BASE_DTYPE_HELP =
  "store the frozen base weights in f32, or bf16/f16 for half the memory (LoRA weights stay f32); auto: bf16 where the backend multiplies it faster, else f32";

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

/** The model (plus an adapter when given) and its tokenizer (null when the folder has none). */
export function loadModel(
  dir: string,
  adapter?: string,
  opts: { needTokenizer?: boolean; baseDtype?: BaseDType } = {},
): Loaded {
  const folder = loadModelFolder(dir, { baseDtype: opts.baseDtype ?? "f32" });
  for (const name of folder.unused)
    console.error(`warning: ${dir}: checkpoint tensor "${name}" is not used by the model`);
  let tokenizer: Tokenizer | null = null;
  try {
    tokenizer = loadTokenizer(dir);
  } catch (e) {
    if (opts.needTokenizer) throw e;
  }
  const adapterPaths = adapter
    ? loadAdapter(folder.model, adapter, modelFamily(folder.config).defaultTargets).paths
    : [];
  folder.model.eval();
  return { ...folder, tokenizer, adapterPaths };
}

/** Tokenizes rows; text rows need the tokenizer, pre-tokenised rows do not. Long rows are cut to maxLen. */
export function tokenizeRows(
  rows: readonly DataRow[],
  tokenizer: Tokenizer | null,
  opts: { maskPrompt: boolean; maxLen: number; source: string },
): { rows: TokenizedRow[]; truncated: number } {
  let truncated = 0;
  const out = rows.map((row) => {
    let t: TokenizedRow;
    try {
      t = tokenizeRow(row, tokenizer, { maskPrompt: opts.maskPrompt });
    } catch (e) {
      throw new Error(`${opts.source}: ${(e as Error).message}`);
    }
    if (t.ids.length > opts.maxLen) {
      truncated++;
      t = { ids: t.ids.slice(0, opts.maxLen), mask: t.mask.slice(0, opts.maxLen) };
    }
    return t;
  });
  return { rows: out, truncated };
}

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

/** The longest sequence the model accepts (GPT-2 n_positions, Llama max_position_embeddings). */
export function contextLength(config: Record<string, unknown>): number {
  const n = config.n_positions ?? config.max_position_embeddings;
  return typeof n === "number" && n > 0 ? n : 2048;
}
