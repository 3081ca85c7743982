/** Loads and saves Hugging Face model folders (config.json + safetensors weights + tokenizer files). */
import { existsSync, mkdirSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import type { CausalLM } from "../../models/index.js";
import type { DType } from "../../tensor/dtype.js";
import { checkModelTensors, type LoadOptions, loadModelFromTensors } from "../model-loader.js";
import { modelTensors } from "../model-saver.js";
import { serializeSafetensors } from "../safetensors.js";
import type { TokenizerFiles } from "../tokenizer.js";
import { isGGUFFile } from "./gguf-file.js";
import { loadGGUFModelFile } from "./gguf-model-file.js";
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
  /** A GGUF model's tokenizer, rebuilt from its metadata (a folder's tokenizer files are read from `dir`). */
  tokenizerFiles?: TokenizerFiles | null;
  /** Why a GGUF model has no tokenizer. */
  tokenizerError?: Error | null;
}

/**
 * Loads a model folder, or a GGUF model file (told by its magic; see gguf-model-file.ts);
 * `opts.baseDtype` stores the frozen weights in 16 bits (see castBaseWeights).
 * config.json and the weights' headers are checked against each other, and the memory the weights need
 * against this machine's, before any tensor data is read.
 */
export function loadModelFolder(dir: string, opts: LoadOptions = {}): ModelFolder {
  if (isGGUFFile(dir)) return loadGGUFModelFile(dir, opts);
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
 * the source checkpoint had them) and the tokenizer files of `from.dir`, or, for a GGUF model, the
 * tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from its metadata. Each
 * file is written atomically.
 */
export function saveModelFolder(
  model: CausalLM,
  dir: string,
  from: Pick<ModelFolder, "config" | "dtypes" | "tokenizerFiles"> & { dir?: string },
): string[] {
  mkdirSync(dir, { recursive: true });
  const tensors = modelTensors(model, from.config, from.dtypes);
  writeFileAtomic(join(dir, "model.safetensors"), serializeSafetensors(tensors, { format: "pt" }));
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(from.config, null, 2)}\n`);
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  if (from.tokenizerFiles) {
    const t = from.tokenizerFiles;
    const written: Record<string, unknown> = {
      "tokenizer.json": t.tokenizerJson,
      "tokenizer_config.json": t.tokenizerConfig,
      "generation_config.json": t.generationConfig,
    };
    const names = Object.keys(written).filter((f) => written[f]);
    for (const f of names) writeFileAtomic(join(dir, f), json(written[f]));
    return ["config.json", "model.safetensors", ...names];
  }
  const copied = from.dir ? TOKENIZER_FILES.filter((f) => existsSync(join(from.dir!, f))) : [];
  for (const f of copied) writeFileAtomic(join(dir, f), readFileBytes(join(from.dir!, f)));
  return ["config.json", "model.safetensors", ...copied];
}
