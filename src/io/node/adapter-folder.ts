/** Reads and writes PEFT adapter folders: adapter_config.json + adapter_model.safetensors. */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { LoraConfig } from "../../lora/config.js";
import type { Module } from "../../nn/module.js";
import { type AdapterInput, adapterFiles, attachAdapter, parseAdapterConfig } from "../peft.js";
import { readJson } from "./json-file.js";
import { readSafetensorsFile, writeFileAtomic } from "./safetensors-file.js";

export function readAdapterConfig(dir: string, defaultTargets: string[]): LoraConfig {
  const path = join(dir, "adapter_config.json");
  return parseAdapterConfig(readJson(path)!, path, defaultTargets);
}

/** Reads the adapter in `dir`: its config and tensors, not yet attached to a model. */
export function readAdapter(dir: string, defaultTargets: string[]): AdapterInput {
  const config = readAdapterConfig(dir, defaultTargets);
  const weights = join(dir, "adapter_model.safetensors");
  if (!existsSync(weights)) {
    const bin = existsSync(join(dir, "adapter_model.bin"));
    throw new Error(
      bin
        ? `${dir}: only adapter_model.bin (a pickle) is present; pickles are never executed here. Re-save it with PEFT's save_pretrained(..., safe_serialization=True)`
        : `${weights}: not found; an adapter folder needs adapter_config.json and adapter_model.safetensors`,
    );
  }
  return { config, tensors: readSafetensorsFile(weights).tensors, source: weights };
}

/** Loads the adapter in `dir` onto `model` (wrapping its layers). Returns the config and wrapped paths. */
export function loadAdapter(
  model: Module & { headName?: string; adapterScope?: string },
  dir: string,
  defaultTargets: string[],
): { config: LoraConfig; paths: string[] } {
  const { config, tensors, source } = readAdapter(dir, defaultTargets);
  return { config, paths: attachAdapter(model, config, tensors, source) };
}

/** Writes the model's LoRA weights and config in PEFT's format, each file atomically. */
export function saveAdapter(model: Module, dir: string, config: LoraConfig, baseModel: string): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(adapterFiles(model, config, baseModel)))
    writeFileAtomic(join(dir, name), data);
}
