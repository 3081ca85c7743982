/**
 * GGUF LoRA adapter files on disk: export a PEFT adapter folder to one, read one back as PEFT's config
 * and tensors, and find the base model's config (a model folder's config.json, or a GGUF model's metadata).
 */
import fs from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { modelFamily } from "../../models/index.js";
import {
  type GGUFAdapterExport,
  type GGUFAdapterOuttype,
  type GGUFAdapterRead,
  ggufAdapterFromPeft,
  readGGUFAdapter,
} from "../gguf-adapter.js";
import { ggufModelConfig } from "../gguf-model.js";
import { readAdapterConfig } from "./adapter-folder.js";
import { isGGUFFile, readGGUFHeader } from "./gguf-file.js";
import { readJson } from "./json-file.js";
import { readAt, withFile } from "./read-file.js";
import { readSafetensorsFile, writeFileAtomic } from "./safetensors-file.js";

const isDir = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

/** A model's config.json object: a folder's file, or built from a GGUF model's metadata. */
function modelConfigAt(path: string): { config: Record<string, unknown>; path: string } {
  if (isGGUFFile(path)) return { config: ggufModelConfig(readGGUFHeader(path), path), path };
  const file = isDir(path) ? join(path, "config.json") : path;
  return { config: readJson(file)!, path: file };
}

/** Reads the GGUF LoRA file `path` as the PEFT adapter it computes on the model of `modelConfig`. */
export function readGGUFAdapterFile(path: string, modelConfig: Record<string, unknown>): GGUFAdapterRead {
  return withFile(path, (fd, size) =>
    readGGUFAdapter({ size, read: (offset, length) => readAt(fd, offset, length) }, path, modelConfig),
  );
}

/**
 * The base model's config.json for an adapter: `--model` (a folder or a GGUF model file) when given, else
 * the adapter config's `base_model_name_or_path` when it is a local folder holding config.json or a GGUF
 * file (relative paths are tried from the current folder, then from the adapter's). Throws saying what
 * to pass when neither is there.
 */
export function baseModelConfig(
  adapterDir: string,
  model?: string,
): { config: Record<string, unknown>; path: string } {
  if (model !== undefined) {
    if (!fs.existsSync(isDir(model) ? join(model, "config.json") : model))
      throw new Error(
        `--model ${model}: no config.json there; pass the base model's Hugging Face folder or GGUF file`,
      );
    return modelConfigAt(model);
  }
  const json = readJson(join(adapterDir, "adapter_config.json"))!;
  const base = json.base_model_name_or_path;
  const tries =
    typeof base === "string" && base !== ""
      ? isAbsolute(base)
        ? [base]
        : [resolve(base), resolve(adapterDir, base)]
      : [];
  const found = tries.find((d) => fs.existsSync(join(d, "config.json")) || isGGUFFile(d));
  if (found) return modelConfigAt(found);
  const named =
    typeof base === "string" && base !== ""
      ? `names the base model "${base}", which is not a model folder here`
      : "does not name its base model (base_model_name_or_path)";
  throw new Error(
    `${join(adapterDir, "adapter_config.json")} ${named}; pass --model DIR, the base model's folder or GGUF file (only its config is read: the architecture and head counts)`,
  );
}

/**
 * Reads the PEFT adapter folder `adapterDir`, converts it for the base model whose config is found by
 * `baseModelConfig`, and writes the GGUF LoRA file `out` atomically. Returns what was written.
 */
export function exportGGUFAdapter(
  adapterDir: string,
  out: string,
  opts: { model?: string; outtype?: GGUFAdapterOuttype } = {},
): GGUFAdapterExport & { modelConfigPath: string } {
  const base = baseModelConfig(adapterDir, opts.model);
  const config = readAdapterConfig(adapterDir, modelFamily(base.config, base.path).defaultTargets);
  const weights = join(adapterDir, "adapter_model.safetensors");
  if (!fs.existsSync(weights))
    throw new Error(
      `${weights}: not found; an adapter folder needs adapter_config.json and adapter_model.safetensors`,
    );
  const result = ggufAdapterFromPeft(config, readSafetensorsFile(weights).tensors, base.config, {
    outtype: opts.outtype,
    source: adapterDir,
    modelSource: base.path,
  });
  writeFileAtomic(out, result.bytes);
  return { ...result, modelConfigPath: base.path };
}
