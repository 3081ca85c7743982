/**
 * Adapters on disk: which format a path holds (a table of formats, each detected from its file names,
 * config fields or first bytes), reading it as PEFT's config and tensors, loading it onto a model, and
 * writing PEFT adapter folders (adapter_config.json + adapter_model.safetensors).
 */
import fs from "node:fs";
import { join } from "node:path";
import type { LoraConfig } from "../../lora/config.js";
import type { Module } from "../../nn/module.js";
import { checkMemory } from "../memory.js";
import { MLX_CHECKPOINT, MLX_CONFIG, MLX_WEIGHTS } from "../mlx.js";
import { type AdapterInput, adapterFiles, attachAdapter, parseAdapterConfig } from "../peft.js";
import type { SafetensorsTensor } from "../safetensors.js";
import { readGGUFAdapterFile } from "./gguf-adapter-file.js";
import { isGGUFFile } from "./gguf-file.js";
import { readJson } from "./json-file.js";
import { memoryAvailable } from "./memory.js";
import { mlxCheckpoints, readMlxAdapter } from "./mlx-folder.js";
import { readSafetensorsData, readSafetensorsHeader, writeFileAtomic } from "./safetensors-file.js";

/** An adapter of any format, read as PEFT's config and tensors (PEFT's names and layouts). */
export interface AdapterRead {
  format: "peft" | "mlx" | "gguf";
  /** What was found, in words, for the one line the commands print ("mlx-lm folder DIR (...)"). */
  description: string;
  config: LoraConfig;
  tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** The weights file read. */
  weights: string;
  /** The base model the adapter names, or null. */
  baseModel: string | null;
}

export interface ReadAdapterOptions {
  /** PEFT's default targets for the model family, when adapter_config.json has no target_modules. */
  defaultTargets?: string[];
  /** The model's block count (checks an mlx-lm adapter's tensors against its num_layers). */
  numBlocks?: number;
  /** The base model's config.json: a GGUF adapter needs its architecture and head counts (q/k rows). */
  modelConfig?: Record<string, unknown>;
}

interface AdapterFormat {
  format: AdapterRead["format"];
  /** What a path of this format holds, for the error that lists what was expected. */
  expects: string;
  /** Whether `path` is of this format, from names, config fields and first bytes only. */
  detect(path: string, isDir: boolean): boolean;
  read(path: string, opts: ReadAdapterOptions): AdapterRead;
}

const has = (dir: string, name: string) => fs.existsSync(join(dir, name));
const configOf = (dir: string) =>
  has(dir, "adapter_config.json") ? readJson(join(dir, "adapter_config.json")) : null;

const peft: AdapterFormat = {
  format: "peft",
  expects: "a PEFT folder (adapter_config.json + adapter_model.safetensors)",
  detect(path, isDir) {
    if (!isDir) return false;
    if (has(path, "adapter_model.safetensors") || has(path, "adapter_model.bin")) return true;
    const c = configOf(path);
    return c !== null && c.lora_parameters === undefined && (c.peft_type !== undefined || c.r !== undefined);
  },
  read(dir, opts) {
    const config = readAdapterConfig(dir, opts.defaultTargets ?? []);
    const weights = join(dir, "adapter_model.safetensors");
    if (!fs.existsSync(weights)) {
      throw new Error(
        has(dir, "adapter_model.bin")
          ? `${dir}: only adapter_model.bin (a pickle) is present; pickles are never executed here. Re-save it with PEFT's save_pretrained(..., safe_serialization=True)`
          : `${weights}: not found; an adapter folder needs adapter_config.json and adapter_model.safetensors`,
      );
    }
    const json = readJson(join(dir, "adapter_config.json"))!;
    const base = json.base_model_name_or_path;
    return {
      format: "peft",
      description: `PEFT folder ${dir} (adapter_model.safetensors, r ${config.r}, lora_alpha ${config.lora_alpha}${config.use_rslora ? ", rsLoRA" : ""}${config.use_dora ? ", DoRA" : ""})`,
      config,
      tensors: readAdapterWeights(weights),
      weights,
      baseModel: typeof base === "string" ? base : null,
    };
  },
};

const mlx: AdapterFormat = {
  format: "mlx",
  expects: `an mlx-lm folder (${MLX_CONFIG} with lora_parameters + ${MLX_WEIGHTS}, or a numbered 0000100_${MLX_WEIGHTS} in one)`,
  detect(path, isDir) {
    const name = path.split(/[\\/]/).pop() ?? "";
    if (!isDir) return name === MLX_WEIGHTS || MLX_CHECKPOINT.test(name);
    if (has(path, MLX_WEIGHTS) || mlxCheckpoints(path).length > 0) return true;
    const c = configOf(path);
    return c !== null && (c.lora_parameters !== undefined || c.fine_tune_type !== undefined);
  },
  read: (path, opts) => readMlxAdapter(path, opts.numBlocks),
};

const gguf: AdapterFormat = {
  format: "gguf",
  expects: "a GGUF LoRA file (.gguf with general.type = adapter)",
  detect: (path, isDir) => !isDir && isGGUFFile(path),
  read(path, opts) {
    if (!opts.modelConfig)
      throw new Error(
        `${path}: a GGUF LoRA file is read against its base model; pass --model (its folder or GGUF file)`,
      );
    const r = readGGUFAdapterFile(path, opts.modelConfig);
    return {
      format: "gguf",
      description: `GGUF LoRA file ${path} (architecture ${r.arch}, adapter.lora.alpha ${r.alpha})`,
      config: r.config,
      tensors: r.tensors,
      weights: path,
      baseModel: null,
    };
  },
};

/** An adapter's tensors, its header checked first, and its size against the memory a load may use. */
function readAdapterWeights(path: string): ReadonlyMap<string, SafetensorsTensor> {
  const header = readSafetensorsHeader(path);
  checkMemory(
    header.dataUsed,
    memoryAvailable(),
    path,
    "its tensors",
    "use a smaller adapter, or raise --max-memory",
  );
  return readSafetensorsData(header).tensors;
}

/** Every adapter format, in the order they are tried; exactly one must match a path. */
export const ADAPTER_FORMATS: readonly AdapterFormat[] = [peft, mlx, gguf];

/** Which format `path` holds; throws saying what was expected when it is none, or what clashes. */
export function detectAdapter(path: string): AdapterFormat {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    throw new Error(`${path}: not found; --adapter takes an adapter folder or file: check the path`);
  }
  const isDir = stat.isDirectory();
  const found = ADAPTER_FORMATS.filter((f) => f.detect(path, isDir));
  if (found.length === 1) return found[0]!;
  if (found.length > 1)
    throw new Error(
      `${path}: holds adapters of ${found.length} formats (${found.map((f) => f.expects).join("; ")}); keep one per folder, or pass the mlx-lm weights file itself`,
    );
  const model = isDir && (has(path, "model.safetensors") || has(path, "model.safetensors.index.json"));
  throw new Error(
    `${path}: not an adapter${model ? " (it is a model folder: pass it as --model)" : ""}; expected ${ADAPTER_FORMATS.map((f) => f.expects).join(", or ")}`,
  );
}

/** Reads the adapter at `path`, whatever its format, as PEFT's config and tensors. */
export function readAdapter(path: string, opts: ReadAdapterOptions = {}): AdapterRead {
  return detectAdapter(path).read(path, opts);
}

/** readAdapter's result as the library's jobs and adapter sets take it. */
export function readAdapterInput(path: string, opts: ReadAdapterOptions = {}): AdapterInput {
  const read = readAdapter(path, opts);
  return { config: read.config, tensors: read.tensors, source: read.weights };
}

export function readAdapterConfig(dir: string, defaultTargets: string[]): LoraConfig {
  const path = join(dir, "adapter_config.json");
  return parseAdapterConfig(readJson(path)!, path, defaultTargets);
}

/**
 * Loads the adapter at `path` (a PEFT folder, an mlx-lm folder or weights file, or a GGUF LoRA file) onto
 * `model`, wrapping its layers. Returns the config (as PEFT's), the wrapped paths and what was found.
 */
export function loadAdapter(
  model: Module & { headName?: string; numLayers?: number; adapterScope?: string },
  path: string,
  defaultTargets: string[],
  modelConfig?: Record<string, unknown>,
): { config: LoraConfig; paths: string[]; format: AdapterRead["format"]; description: string } {
  const read = readAdapter(path, { defaultTargets, numBlocks: model.numLayers, modelConfig });
  const paths = attachAdapter(model, read.config, read.tensors, read.weights);
  return { config: read.config, paths, format: read.format, description: read.description };
}

/** Writes the model's LoRA weights and config in PEFT's format, each file atomically. */
export function saveAdapter(model: Module, dir: string, config: LoraConfig, baseModel: string): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(adapterFiles(model, config, baseModel)))
    writeFileAtomic(join(dir, name), data);
}
