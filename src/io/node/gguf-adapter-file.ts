/** GGUF LoRA adapter files on disk: export a PEFT adapter folder to one, and find the base model's config. */
import fs from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { modelFamily } from "../../models/index.js";
import { type GGUFAdapterExport, type GGUFAdapterOuttype, ggufAdapterFromPeft } from "../gguf-adapter.js";
import { readAdapterConfig } from "./adapter-folder.js";
import { readJson } from "./json-file.js";
import { readSafetensorsFile, writeFileAtomic } from "./safetensors-file.js";

const isDir = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

/**
 * The base model's config.json for an adapter: `--model DIR` when given, else the adapter config's
 * `base_model_name_or_path` when it is a local folder holding config.json (relative paths are tried from
 * the current folder, then from the adapter's). Throws saying what to pass when neither is there.
 */
export function baseModelConfig(
  adapterDir: string,
  model?: string,
): { config: Record<string, unknown>; path: string } {
  if (model !== undefined) {
    const path = isDir(model) ? join(model, "config.json") : model;
    if (!fs.existsSync(path))
      throw new Error(`--model ${model}: no config.json there; pass the base model's Hugging Face folder`);
    return { config: readJson(path)!, path };
  }
  const json = readJson(join(adapterDir, "adapter_config.json"))!;
  const base = json.base_model_name_or_path;
  const tries =
    typeof base === "string" && base !== ""
      ? isAbsolute(base)
        ? [base]
        : [resolve(base), resolve(adapterDir, base)]
      : [];
  const found = tries.find((d) => fs.existsSync(join(d, "config.json")));
  if (found) {
    const path = join(found, "config.json");
    return { config: readJson(path)!, path };
  }
  const named =
    typeof base === "string" && base !== ""
      ? `names the base model "${base}", which is not a model folder here`
      : "does not name its base model (base_model_name_or_path)";
  throw new Error(
    `${join(adapterDir, "adapter_config.json")} ${named}; pass --model DIR, the base model's folder (only its config.json is read: the architecture and head counts)`,
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
