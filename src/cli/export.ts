/**
 * `lora export`: writes an adapter (any format `--adapter` reads) in another tool's format. The adapter
 * is fitted to its base model's module tree (config.json only; no weights are read), then each format's
 * writer in io/ takes the LoRA layers: mlx (an mlx-lm adapter folder).
 */
import fs from "node:fs";
import { join, resolve } from "node:path";
import { readAdapter } from "../io/node/adapter-folder.js";
import { readJson } from "../io/node/json-file.js";
import { saveMlxAdapter } from "../io/node/mlx-folder.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { attachAdapter } from "../io/peft.js";
import { loraLayers } from "../lora/inject.js";
import type { CausalLM } from "../models/index.js";
import { modelFamily } from "../models/index.js";
import { skeletonModel } from "../models/summary.js";
import { type Command, required, str, UsageError, type Values } from "./command.js";

interface ExportFormat {
  /** What --out is, for help and errors. */
  out: string;
  /** The file that marks --out as already written (refused without --overwrite). */
  marker: string;
  /** Writes the model's LoRA layers to `out`; returns notes on what the conversion had to do. */
  write(model: CausalLM, out: string, opts: { baseModel: string; dropout: number }): string[];
}

const FORMATS: Record<string, ExportFormat> = {
  mlx: {
    out: "an mlx-lm adapter folder (adapters.safetensors + adapter_config.json)",
    marker: "adapters.safetensors",
    write: (model, out, opts) => saveMlxAdapter(model, out, opts),
  },
};

/** The base model folder: --model, else the adapter's base_model_name_or_path when that is a local folder. */
function baseFolder(v: Values, named: string | null): string {
  const given = str(v, "model");
  if (given) return given;
  if (named && fs.existsSync(join(named, "config.json"))) return named;
  throw new UsageError(
    `pass --model DIR, the base model folder (only its config.json is read)${named ? `; the adapter names "${named}", which is not a local folder` : ""}`,
  );
}

export const exportCommand: Command = {
  name: "export",
  summary: "Write an adapter in another tool's format: an mlx-lm adapter folder (--format mlx).",
  usage: "lora export --adapter PATH --format mlx --out DIR [--model DIR] [--overwrite]",
  flags: {
    adapter: {
      type: "string",
      valueName: "PATH",
      description: "the adapter: a PEFT or mlx-lm folder, or a GGUF LoRA file (the format is detected)",
    },
    format: {
      type: "string",
      valueName: "FORMAT",
      description: `what to write: ${Object.keys(FORMATS).join(", ")}`,
    },
    out: { type: "string", valueName: "PATH", description: "where to write it (a new folder for mlx)" },
    model: {
      type: "string",
      valueName: "DIR",
      description:
        "the base model folder (default: the adapter's base_model_name_or_path); only config.json is read",
    },
    overwrite: { type: "boolean", description: "replace an export already in --out" },
  },
  examples: ["lora export --adapter ./run --format mlx --out ./run-mlx"],
  run(v: Values) {
    const adapter = required(v, "adapter", "export");
    const name = required(v, "format", "export");
    const out = required(v, "out", "export");
    const format = FORMATS[name];
    if (!format)
      throw new UsageError(`--format must be one of ${Object.keys(FORMATS).join(", ")}, got "${name}"`);
    // never write where it reads: an mlx-lm folder's own files would be replaced mid-read
    checkOutSeparate(out, { adapter }, "lora export");
    if (fs.existsSync(join(out, format.marker)) && !v.overwrite)
      throw new UsageError(`--out ${out} already holds ${format.marker}; pass --overwrite to replace it`);
    // without --model the adapter names its base; it is then read again knowing the model (PEFT's
    // default targets for its family, the block count an mlx-lm adapter is checked against)
    const dir = baseFolder(v, str(v, "model") ? null : readAdapter(adapter).baseModel);
    const configPath = join(dir, "config.json");
    const config = readJson(configPath)!;
    const family = modelFamily(config, configPath);
    const model = skeletonModel(config, configPath);
    const read = readAdapter(adapter, { defaultTargets: family.defaultTargets, numBlocks: model.numLayers });
    console.error(`adapter: ${read.description}`);
    attachAdapter(model, read.config, read.tensors, read.weights);
    const notes = format.write(model, out, {
      baseModel: read.baseModel ?? resolve(dir),
      dropout: read.config.lora_dropout,
    });
    for (const n of notes) console.error(`note: ${n}`);
    console.log(`wrote ${out}: ${format.out}, ${loraLayers(model).length} LoRA layer(s) of ${adapter}`);
  },
};
