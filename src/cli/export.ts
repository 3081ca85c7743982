/**
 * `lora export`: writes an adapter (any format `--adapter` reads) in another tool's format. The adapter
 * is fitted to its base model's module tree (config.json only; no weights are read), then each format's
 * writer in io/ takes the LoRA layers: gguf (a llama.cpp LoRA file) or mlx (an mlx-lm adapter folder).
 */
import fs from "node:fs";
import { join, resolve } from "node:path";
import { GGUF_ADAPTER_OUTTYPES, type GGUFAdapterOuttype, ggufAdapterFromModel } from "../io/gguf-adapter.js";
import { readAdapter } from "../io/node/adapter-folder.js";
import { baseModelConfig } from "../io/node/gguf-adapter-file.js";
import { saveMlxAdapter } from "../io/node/mlx-folder.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { writeFileAtomic } from "../io/node/safetensors-file.js";
import { attachAdapter } from "../io/peft.js";
import { refuseMutatedAdapter } from "../io/peft-convert.js";
import { adapterExtras } from "../io/peft-extras.js";
import { loraLayers } from "../lora/inject.js";
import type { CausalLM } from "../models/index.js";
import { modelFamily } from "../models/index.js";
import { skeletonModel } from "../models/summary.js";
import { type Command, required, str, UsageError, type Values } from "./command.js";

interface ExportOptions {
  baseModel: string;
  dropout: number;
  modelConfig: Record<string, unknown>;
  outtype: GGUFAdapterOuttype;
}

interface ExportFormat {
  /** What --out is, for help and errors. */
  out: string;
  /** Refuses an --out this format cannot write (a folder for a file, a file that exists...). */
  checkOut(out: string, overwrite: boolean): void;
  /** Writes the model's LoRA layers to `out`; returns notes on what the conversion had to do. */
  write(model: CausalLM, out: string, opts: ExportOptions): string[];
}

const FORMATS: Record<string, ExportFormat> = {
  gguf: {
    out: "a GGUF LoRA file for llama.cpp (llama-cli --lora, node-llama-cpp, Ollama)",
    checkOut(out, overwrite) {
      const existing = fs.statSync(out, { throwIfNoEntry: false });
      if (existing?.isDirectory())
        throw new UsageError(`--out ${out} is a folder; give a file name ending in .gguf`);
      if (!out.endsWith(".gguf"))
        throw new UsageError(`--out ${out}: a GGUF adapter is one file; give it a name ending in .gguf`);
      if (existing && !overwrite)
        throw new UsageError(`--out ${out} already exists; pass --overwrite to replace it`);
    },
    write(model, out, opts) {
      const r = ggufAdapterFromModel(model, opts.modelConfig, { outtype: opts.outtype, source: out });
      writeFileAtomic(out, r.bytes);
      const permuted = r.modules.filter((m) => m.permutedHeads !== null).length;
      const folded = r.modules.filter((m) => m.folded !== 1).length;
      return [
        `GGUF architecture ${r.arch}, adapter.lora.alpha ${r.alpha}, ${opts.outtype}, ${r.bytes.byteLength} bytes`,
        ...(permuted > 0
          ? [
              `${permuted} q/k module(s): lora_b rows permuted to llama.cpp's RoPE layout, as its converter does`,
            ]
          : []),
        ...(folded > 0
          ? [
              `${folded} module(s) with their own rank or alpha: their scale is folded into lora_b, since llama.cpp takes one alpha per file`,
            ]
          : []),
      ];
    },
  },
  mlx: {
    out: "an mlx-lm adapter folder (adapters.safetensors + adapter_config.json)",
    checkOut(out, overwrite) {
      if (fs.existsSync(join(out, "adapters.safetensors")) && !overwrite)
        throw new UsageError(
          `--out ${out} already holds adapters.safetensors; pass --overwrite to replace it`,
        );
    },
    write: (model, out, opts) => saveMlxAdapter(model, out, opts),
  },
};

export const exportCommand: Command = {
  name: "export",
  summary:
    "Write an adapter in another tool's format: a GGUF LoRA file for llama.cpp (--format gguf) or an mlx-lm adapter folder (--format mlx).",
  usage:
    "lora export --adapter PATH --format gguf|mlx --out PATH [--outtype f32|f16|bf16] [--model DIR|FILE.gguf] [--overwrite]",
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
    out: {
      type: "string",
      valueName: "PATH",
      description: "where to write it (FILE.gguf, or a new folder for mlx)",
    },
    outtype: {
      type: "string",
      valueName: "TYPE",
      description: `gguf: tensor type of the LoRA weights, ${GGUF_ADAPTER_OUTTYPES.join(", ")} (default f32, as llama.cpp's converter)`,
    },
    model: {
      type: "string",
      valueName: "PATH",
      description:
        "the base model folder or GGUF file (default: the adapter's base_model_name_or_path, when it is here); only its config is read",
    },
    overwrite: { type: "boolean", description: "replace an export already in --out" },
  },
  examples: [
    "lora export --adapter ./run --format gguf --out ./run.gguf",
    "llama-cli -m model.gguf --lora ./run.gguf   (or node-llama-cpp: lora: {adapters: [{filePath}]})",
    "lora export --adapter ./run --format mlx --out ./run-mlx",
  ],
  run(v: Values) {
    const adapter = required(v, "adapter", "export");
    const name = required(v, "format", "export");
    const out = required(v, "out", "export");
    const model = str(v, "model");
    const format = FORMATS[name];
    if (!format)
      throw new UsageError(`--format must be one of ${Object.keys(FORMATS).join(", ")}, got "${name}"`);
    const outtype = str(v, "outtype") ?? "f32";
    if (!(GGUF_ADAPTER_OUTTYPES as readonly string[]).includes(outtype))
      throw new UsageError(`--outtype must be one of ${GGUF_ADAPTER_OUTTYPES.join(", ")}, got "${outtype}"`);
    // never write where it reads: an adapter folder's own files would be replaced mid-read
    checkOutSeparate(out, { adapter, model: model ?? null }, "lora export");
    if (model && resolve(out) === resolve(model))
      throw new UsageError(`--out ${out} is the --model file; export must not overwrite the base model`);
    format.checkOut(out, v.overwrite === true);
    // without --model the adapter names its base; it is then read again knowing the model (PEFT's
    // default targets for its family, the block count of an mlx-lm adapter, a GGUF adapter's heads)
    const named = model ?? readAdapter(adapter).baseModel;
    if (!named)
      throw new UsageError(
        "pass --model, the base model folder or GGUF file (only its config is read): the adapter does not name a base model here",
      );
    const local =
      fs.existsSync(join(named, "config.json")) ||
      (fs.statSync(named, { throwIfNoEntry: false })?.isFile() ?? false);
    if (!model && !local)
      throw new UsageError(
        `the adapter names the base model "${named}", which is not a model folder here; pass --model DIR (the base model folder or GGUF file; only its config is read)`,
      );
    const base = baseModelConfig(adapter, named);
    const family = modelFamily(base.config, base.path);
    const skeleton = skeletonModel(base.config, base.path);
    const read = readAdapter(adapter, {
      defaultTargets: family.defaultTargets,
      numBlocks: skeleton.numLayers,
      modelConfig: base.config,
    });
    console.error(`adapter: ${read.description}`);
    if (read.config.use_dora)
      throw new UsageError(
        `${adapter} is a DoRA adapter (use_dora: true), which --format ${name} cannot hold (${name === "gguf" ? "llama.cpp's LoRA adapters have no per-row magnitude" : "mlx-lm's DoRA format is not written here"}); merge it into the base model instead: lora merge --model M --adapter ${adapter} --out DIR`,
      );
    const extras = adapterExtras(read.config, read.tensors.keys());
    if (extras.length > 0)
      throw new Error(
        `${adapter} holds ${extras.join(", ")}; lora export --format ${name} writes LoRA on Linear layers only: fold the adapter into the model instead (lora merge --model M --adapter ${adapter} --out DIR)`,
      );
    refuseMutatedAdapter(read.config, read.weights, `the ${name} format`);
    attachAdapter(skeleton, read.config, read.tensors, read.weights);
    const notes = format.write(skeleton, out, {
      baseModel: read.baseModel ?? resolve(named),
      dropout: read.config.lora_dropout,
      modelConfig: base.config,
      outtype: outtype as GGUFAdapterOuttype,
    });
    for (const n of notes) console.error(`note: ${n}`);
    console.log(`wrote ${out}: ${format.out}, ${loraLayers(skeleton).length} LoRA layer(s) of ${adapter}`);
  },
};
