/** Loads a Hugging Face model folder (config.json + safetensors weights) from disk. */
import { join } from "node:path";
import type { CausalLM } from "../../models/index.js";
import { loadModelFromTensors } from "../model-loader.js";
import { readJson } from "./json-file.js";
import { readModelWeights } from "./safetensors-file.js";

export interface ModelFolder {
  dir: string;
  config: Record<string, unknown>;
  model: CausalLM;
  unused: string[];
}

export function loadModelFolder(dir: string): ModelFolder {
  const config = readJson(join(dir, "config.json"))!;
  const { tensors } = readModelWeights(dir);
  const { model, unused } = loadModelFromTensors(config, tensors, dir);
  return { dir, config, model, unused };
}
