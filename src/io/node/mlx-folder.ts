/**
 * Reads and writes mlx-lm adapter folders (adapter_config.json + adapters.safetensors, and the numbered
 * checkpoints 0000100_adapters.safetensors that training leaves beside them). The conversion is io/mlx.ts.
 */
import fs from "node:fs";
import { basename, dirname, join } from "node:path";
import type { CausalLM } from "../../models/index.js";
import { MLX_CHECKPOINT, MLX_CONFIG, MLX_WEIGHTS, mlxAdapterFiles, parseMlxAdapter } from "../mlx.js";
import type { AdapterRead } from "./adapter-folder.js";
import { readJson } from "./json-file.js";
import { readSafetensorsFile, writeFileAtomic } from "./safetensors-file.js";

/** The numbered checkpoints in an mlx-lm adapter folder, by iteration. */
export function mlxCheckpoints(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => MLX_CHECKPOINT.test(n))
    .sort((a, b) => Number(MLX_CHECKPOINT.exec(a)![1]) - Number(MLX_CHECKPOINT.exec(b)![1]));
}

/**
 * An mlx-lm adapter, converted to PEFT's names and layouts. `path` is the folder (its adapters.safetensors
 * is read: mlx-lm rewrites it at every save, so it is the latest) or one weights file in it (a numbered
 * checkpoint). `numBlocks` (the model's) lets the tensors be checked against num_layers.
 */
export function readMlxAdapter(path: string, numBlocks?: number): AdapterRead {
  const isFile = fs.statSync(path).isFile();
  const dir = isFile ? dirname(path) : path;
  const weights = isFile ? path : join(dir, MLX_WEIGHTS);
  const configPath = join(dir, MLX_CONFIG);
  const others = mlxCheckpoints(dir);
  if (!fs.existsSync(weights)) {
    const hint =
      others.length > 0
        ? `; it holds numbered checkpoints (${others.join(", ")}): pass one as --adapter ${join(dir, others.at(-1)!)}`
        : "";
    throw new Error(
      `${weights}: not found; an mlx-lm adapter folder needs ${MLX_CONFIG} and ${MLX_WEIGHTS}${hint}`,
    );
  }
  const json = readJson(configPath)!;
  const file = readSafetensorsFile(weights);
  const a = parseMlxAdapter(json, file.tensors, { config: configPath, weights }, numBlocks);
  const unread = others.filter((n) => n !== basename(weights));
  const note =
    unread.length > 0
      ? `; ${unread.length} numbered checkpoint(s) beside it not read (${unread[0]}${unread.length > 1 ? ` .. ${unread.at(-1)}` : ""}): pass one as --adapter to read it`
      : "";
  return {
    format: "mlx",
    description: `mlx-lm folder ${dir} (${basename(weights)}, rank ${a.config.r}, scale ${a.scale}${note})`,
    config: a.config,
    tensors: a.tensors,
    weights,
    baseModel: a.baseModel,
  };
}

/** Writes the model's LoRA layers as an mlx-lm adapter folder, each file atomically; returns the notes. */
export function saveMlxAdapter(
  model: CausalLM,
  dir: string,
  opts: { baseModel: string; dropout: number },
): string[] {
  const { files, notes } = mlxAdapterFiles(model, opts);
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) writeFileAtomic(join(dir, name), data);
  return notes;
}
