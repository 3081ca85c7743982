/** Loads and saves Hugging Face model folders (config.json + safetensors weights + tokenizer files). */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type CausalLM, modelFamily } from "../../models/index.js";
import type { DType } from "../../tensor/dtype.js";
import { checkModelTensors, type LoadOptions, loadModelFromTensors } from "../model-loader.js";
import { modelTensors } from "../model-saver.js";
import { type SerializableDType, type SerializableTensor, serializeSafetensors } from "../safetensors.js";
import type { TokenizerFiles } from "../tokenizer.js";
import { isGGUFFile } from "./gguf-file.js";
import { loadGGUFModelFile } from "./gguf-model-file.js";
import { readJson } from "./json-file.js";
import { memoryAvailable } from "./memory.js";
import { readFileBytes } from "./read-file.js";
import { readModelWeightData, readModelWeightHeaders, writeFileAtomic } from "./safetensors-file.js";

export interface ModelFolder {
  dir: string;
  config: Record<string, unknown>;
  model: CausalLM;
  unused: string[];
  /** The dtype of every checkpoint tensor, by its name in the files. */
  dtypes: Map<string, { dtype: DType }>;
  /** With `keepTowers`: the tensors of the parts a multimodal checkpoint's text model does not build
   *  (the family's checkpoint.towers), as stored, so that a saved folder carries them over unchanged. */
  towers?: SerializableTensor[];
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
export function loadModelFolder(dir: string, opts: LoadOptions & { keepTowers?: boolean } = {}): ModelFolder {
  const { keepTowers, ...load } = opts;
  if (isGGUFFile(dir)) return loadGGUFModelFile(dir, load);
  const config = readJson(join(dir, "config.json"))!;
  const headers = readModelWeightHeaders(dir);
  const checked = { memoryLimit: memoryAvailable(), ...load };
  checkModelTensors(config, headers.tensors, dir, checked);
  const { tensors } = readModelWeightData(headers);
  const { model, unused } = loadModelFromTensors(config, tensors, dir, checked);
  const dtypes = new Map([...tensors].map(([name, t]) => [name, { dtype: t.dtype }]));
  const folder: ModelFolder = { dir, config, model, unused, dtypes };
  const towers = modelFamily(config).checkpoint.towers;
  if (keepTowers && towers) {
    folder.towers = unused
      .filter((name) => towers.some((t) => t.pattern.test(name)))
      .map((name) => {
        const t = tensors.get(name)!;
        if (!SERIALIZABLE.includes(t.dtype))
          throw new Error(
            `${t.file}: tensor "${name}" is stored as ${t.dtype}, which lora-ts cannot write back`,
          );
        return { name, dtype: t.dtype as SerializableDType, shape: [...t.shape], data: t.bytes };
      });
  }
  return folder;
}

const SERIALIZABLE: readonly DType[] = ["F32", "F16", "BF16", "I32", "I64"];

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
 * the source checkpoint had them, plus a multimodal checkpoint's other towers unchanged) and the
 * tokenizer files of `from.dir`, or, for a GGUF model, the tokenizer.json, tokenizer_config.json and
 * generation_config.json rebuilt from its metadata. Each file is written atomically.
 */
export function saveModelFolder(
  model: CausalLM,
  dir: string,
  from: Pick<ModelFolder, "config" | "dtypes" | "towers" | "tokenizerFiles"> & { dir?: string },
): string[] {
  const towers = modelFamily(from.config).checkpoint.towers;
  if (towers && !from.towers)
    throw new Error(
      `${dir}: a ${String(from.config.model_type)} folder also holds its ${towers.map((t) => t.what).join(" and ")}, which were not loaded; load the model with keepTowers to write it back whole`,
    );
  mkdirSync(dir, { recursive: true });
  const tensors = [...modelTensors(model, from.config, from.dtypes), ...(from.towers ?? [])];
  writeFileAtomic(join(dir, "model.safetensors"), serializeSafetensors(tensors, { format: "pt" }));
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(from.config, null, 2)}\n`);
  return ["config.json", "model.safetensors", ...writeTokenizerFiles(from, dir)];
}

/**
 * The tokenizer files of a saved model: those rebuilt from a GGUF model's metadata, or the ones a
 * folder holds (TOKENIZER_FILES), copied. Returns their names.
 */
export function writeTokenizerFiles(
  from: Pick<ModelFolder, "tokenizerFiles"> & { dir?: string },
  dir: string,
  /** Told the names before any is written (a run folder lists them first, to survive a crash midway). */
  before: (names: string[]) => void = () => {},
): string[] {
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  if (from.tokenizerFiles) {
    const t = from.tokenizerFiles;
    const written: Record<string, unknown> = {
      "tokenizer.json": t.tokenizerJson,
      "tokenizer_config.json": t.tokenizerConfig,
      "generation_config.json": t.generationConfig,
    };
    const names = Object.keys(written).filter((f) => written[f]);
    before(names);
    for (const f of names) writeFileAtomic(join(dir, f), json(written[f]));
    return names;
  }
  return from.dir ? copyTokenizerFiles(from.dir, dir, before) : [];
}

/** Copies the tokenizer files (TOKENIZER_FILES) that `from` holds into `dir`; returns their names. */
export function copyTokenizerFiles(
  from: string,
  dir: string,
  before: (names: string[]) => void = () => {},
): string[] {
  const copied = TOKENIZER_FILES.filter((f) => existsSync(join(from, f)));
  before(copied);
  for (const f of copied) writeFileAtomic(join(dir, f), readFileBytes(join(from, f)));
  return copied;
}
