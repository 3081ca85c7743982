/** Loads and saves Hugging Face model folders (config.json + safetensors weights + tokenizer files). */
import { existsSync, mkdirSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import type { CausalLM } from "../../models/index.js";
import type { DType } from "../../tensor/dtype.js";
import { checkModelTensors, type LoadOptions, loadModelFromTensors } from "../model-loader.js";
import { modelTensors } from "../model-saver.js";
import { serializeSafetensors } from "../safetensors.js";
import { readJson } from "./json-file.js";
import { readFileBytes } from "./read-file.js";
import { readModelWeightData, readModelWeightHeaders, writeFileAtomic } from "./safetensors-file.js";

export interface ModelFolder {
  dir: string;
  config: Record<string, unknown>;
  model: CausalLM;
  unused: string[];
  /** The dtype of every checkpoint tensor, by its name in the files. */
  dtypes: Map<string, { dtype: DType }>;
}

/**
 * Loads a model folder; `opts.baseDtype` stores the frozen weights in 16 bits (see castBaseWeights).
 * config.json and the weights' headers are checked against each other, and the memory the weights need
 * against this machine's, before any tensor data is read.
 */
export function loadModelFolder(dir: string, opts: LoadOptions = {}): ModelFolder {
  const config = readJson(join(dir, "config.json"))!;
  const headers = readModelWeightHeaders(dir);
  const checked = { memoryLimit: totalmem(), ...opts };
  checkModelTensors(config, headers.tensors, dir, checked);
  const { tensors } = readModelWeightData(headers);
  const { model, unused } = loadModelFromTensors(config, tensors, dir, checked);
  const dtypes = new Map([...tensors].map(([name, t]) => [name, { dtype: t.dtype }]));
  return { dir, config, model, unused, dtypes };
}

/** Files of a model folder that are not weights, copied along when a model is saved anew. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "added_tokens.json",
  "chat_template.jinja",
  "generation_config.json",
];

/**
 * Writes `model` as a complete folder: config.json, model.safetensors (names, layouts and dtypes as
 * the source checkpoint had them) and the tokenizer files of `from.dir`. Each file is written atomically.
 */
export function saveModelFolder(
  model: CausalLM,
  dir: string,
  from: Pick<ModelFolder, "config" | "dtypes"> & { dir?: string },
): string[] {
  mkdirSync(dir, { recursive: true });
  const tensors = modelTensors(model, from.config, from.dtypes);
  writeFileAtomic(join(dir, "model.safetensors"), serializeSafetensors(tensors, { format: "pt" }));
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(from.config, null, 2)}\n`);
  const copied = from.dir ? copyTokenizerFiles(from.dir, dir) : [];
  return ["config.json", "model.safetensors", ...copied];
}

/** Copies the tokenizer files (TOKENIZER_FILES) that `from` holds into `dir`; returns their names. */
export function copyTokenizerFiles(from: string, dir: string): string[] {
  const copied = TOKENIZER_FILES.filter((f) => existsSync(join(from, f)));
  for (const f of copied) writeFileAtomic(join(dir, f), readFileBytes(join(from, f)));
  return copied;
}
