/** Loading what the commands share: a model folder, its tokenizer, an optional adapter, and data rows. */
import { extname } from "node:path";
import { loadAdapter } from "../io/node/adapter-folder.js";
import { readDataset } from "../io/node/dataset-file.js";
import { loadModelFolder, type ModelFolder } from "../io/node/model-folder.js";
import { loadTokenizer } from "../io/node/tokenizer-file.js";
import { Tokenizer } from "../io/tokenizer.js";
import { modelFamily } from "../models/index.js";
import { BASE_DTYPES, type BaseDType, isBaseDtypeSetting, resolveBaseDtype } from "../nn/base-dtype.js";
import { type DataRow, type TokenizedRow, type TokenizedSource, tokenizeRow } from "../train/data.js";
import { BASE_DTYPE_HELP } from "../train/settings.js";
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

/** The model (a folder or a GGUF file, plus an adapter when given) and its tokenizer (null when it has none). */
export function loadModel(
  dir: string,
  adapter?: string,
  opts: { needTokenizer?: boolean; baseDtype?: BaseDType } = {},
): Loaded {
  const folder = loadModelFolder(dir, { baseDtype: opts.baseDtype ?? "f32" });
  for (const line of unusedWarnings(folder.unused, modelFamily(folder.config).checkpoint.towers ?? []))
    console.error(`warning: ${dir}: ${line}`);
  let tokenizer: Tokenizer | null = null;
  try {
    // a GGUF model carries its tokenizer in its metadata
    if (folder.tokenizerFiles) tokenizer = Tokenizer.fromJSON(folder.tokenizerFiles);
    else if (folder.tokenizerError) throw folder.tokenizerError;
    else tokenizer = loadTokenizer(dir);
  } catch (e) {
    if (opts.needTokenizer) throw e;
  }
  const adapterPaths = adapter
    ? adapterOnto(folder.model, adapter, modelFamily(folder.config).defaultTargets, folder.config).paths
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

/**
 * Tokenizes rows; text rows need the tokenizer, pre-tokenised rows do not. A row longer than maxLen
 * is cut at its end, except a prompt/completion row whose completion fits: it loses the start of its
 * prompt instead (after a leading BOS), so what it teaches stays whole. Ids must lie in the vocabulary.
 */
export function tokenizeRows(
  rows: readonly DataRow[],
  tokenizer: Tokenizer | null,
  opts: {
    maskPrompt: boolean;
    maxLen: number;
    source: string;
    vocabSize?: number;
    /** Chat-template variables (a run's date_string, so that a resume renders the same text). */
    templateVars?: Record<string, unknown>;
  },
): { rows: TokenizedRow[]; truncated: number; promptCut: number } {
  let truncated = 0;
  let promptCut = 0;
  const out = rows.map((row, i) => {
    let t: TokenizedSource;
    try {
      t = tokenizeRow(row, tokenizer, { maskPrompt: opts.maskPrompt, templateVars: opts.templateVars });
    } catch (e) {
      throw new Error(`${opts.source}: row ${i + 1}: ${(e as Error).message}`);
    }
    const { vocabSize } = opts;
    if (vocabSize !== undefined) {
      const bad = t.ids.find((id) => id >= vocabSize);
      if (bad !== undefined)
        throw new UsageError(
          `${opts.source}: row ${i + 1} has token id ${bad}, outside the model's vocabulary of ${vocabSize} (ids 0-${vocabSize - 1}); this data was tokenized for another model`,
        );
    }
    const over = t.ids.length - opts.maxLen;
    if (over <= 0) return { ids: t.ids, mask: t.mask };
    const head = tokenizer?.bosId != null && t.ids[0] === tokenizer.bosId ? 1 : 0;
    if (t.promptTokens !== undefined && t.promptTokens - head > over) {
      promptCut++;
      const cut = <A>(a: A[]) => [...a.slice(0, head), ...a.slice(head + over)];
      return { ids: cut(t.ids), mask: cut(t.mask) };
    }
    truncated++;
    return { ids: t.ids.slice(0, opts.maxLen), mask: t.mask.slice(0, opts.maxLen) };
  });
  return { rows: out, truncated, promptCut };
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

/**
 * The date a chat template shows (Llama 3.1+'s "Today Date"), as date_string: today for a new run, as
 * transformers' strftime_now("%d %b %Y") gives it, and the run's own date on a resume, so the
 * rendered data (and its fingerprint) stays the same on another day.
 */
export function templateDate(now = new Date()): string {
  const month = now.toLocaleString("en-US", { month: "short", timeZone: "UTC" });
  return `${String(now.getUTCDate()).padStart(2, "0")} ${month} ${now.getUTCFullYear()}`;
}

/** The longest sequence the model accepts (GPT-2 n_positions, Llama max_position_embeddings). */
export function contextLength(config: Record<string, unknown>): number {
  // a multimodal folder's text model has its own config (gemma3's text_config)
  const text = (config.text_config ?? {}) as Record<string, unknown>;
  const n = config.n_positions ?? config.max_position_embeddings ?? text.max_position_embeddings;
  return typeof n === "number" && n > 0 ? n : 2048;
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
