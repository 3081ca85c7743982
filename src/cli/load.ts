/** Loading what the commands share: a model folder, its tokenizer, an optional adapter, and data rows. */
import { extname } from "node:path";
import { loadAdapter } from "../io/node/adapter-folder.js";
import { readDataset } from "../io/node/dataset-file.js";
import { loadModelFolder, type ModelFolder } from "../io/node/model-folder.js";
import { loadTokenizer } from "../io/node/tokenizer-file.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { modelFamily } from "../models/index.js";
import { type DataRow, type TokenizedRow, tokenizeRow } from "../train/data.js";

export interface Loaded extends ModelFolder {
  tokenizer: Tokenizer | null;
  adapterPaths: string[];
}

/** The model (plus an adapter when given) and its tokenizer (null when the folder has none). */
export function loadModel(dir: string, adapter?: string, opts: { needTokenizer?: boolean } = {}): Loaded {
  const folder = loadModelFolder(dir);
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
    if ("input_ids" in row) t = { ids: row.input_ids, mask: row.input_ids.map(() => 1) };
    else if (!tokenizer)
      throw new Error(
        `${opts.source}: text rows need a tokenizer, but the model folder has no tokenizer.json`,
      );
    else t = tokenizeRow(row, tokenizer, { maskPrompt: opts.maskPrompt });
    if (t.ids.length > opts.maxLen) {
      truncated++;
      t = { ids: t.ids.slice(0, opts.maxLen), mask: t.mask.slice(0, opts.maxLen) };
    }
    return t;
  });
  return { rows: out, truncated };
}

/** The rows of a data file (.txt or .jsonl) or folder (train.jsonl, ...): the split asked for. */
export function readRows(path: string, split: "train" | "valid" | "test" = "train"): DataRow[] {
  const splits = readDataset(path);
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
