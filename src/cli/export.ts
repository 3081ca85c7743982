/** `lora export`: writes an adapter in another tool's format (GGUF for llama.cpp). */
import fs from "node:fs";
import { resolve } from "node:path";
import { GGUF_ADAPTER_OUTTYPES, type GGUFAdapterOuttype } from "../io/gguf-adapter.js";
import { exportGGUFAdapter } from "../io/node/gguf-adapter-file.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { type Command, required, str, UsageError, type Values } from "./command.js";

const FORMATS = ["gguf"];

export const exportCommand: Command = {
  name: "export",
  summary: "Write a PEFT adapter as a GGUF LoRA file for llama.cpp (node-llama-cpp, Ollama, LM Studio).",
  usage:
    "lora export --adapter DIR --format gguf --out FILE.gguf [--outtype f32|f16|bf16] [--model DIR] [--overwrite]",
  flags: {
    adapter: { type: "string", valueName: "DIR", description: "PEFT adapter folder" },
    format: { type: "string", valueName: "FORMAT", description: `output format: ${FORMATS.join(", ")}` },
    out: { type: "string", valueName: "FILE", description: "file to write (.gguf)" },
    outtype: {
      type: "string",
      valueName: "TYPE",
      description: `gguf: tensor type of the LoRA weights, ${GGUF_ADAPTER_OUTTYPES.join(", ")} (default f32, as llama.cpp's converter)`,
    },
    model: {
      type: "string",
      valueName: "DIR",
      description:
        "base model folder, for its architecture and head counts (default: the adapter's base_model_name_or_path, when it is a folder here)",
    },
    overwrite: { type: "boolean", description: "replace an existing --out file" },
  },
  examples: [
    "lora export --adapter ./run --format gguf --out ./run.gguf",
    "llama-cli -m model.gguf --lora ./run.gguf   (or node-llama-cpp: lora: {adapters: [{filePath}]})",
  ],
  run(v: Values) {
    const adapter = required(v, "adapter", "export");
    const format = required(v, "format", "export");
    const out = required(v, "out", "export");
    const model = str(v, "model");
    if (!FORMATS.includes(format))
      throw new UsageError(`--format must be one of ${FORMATS.join(", ")}, got "${format}"`);
    const outtype = str(v, "outtype") ?? "f32";
    if (!(GGUF_ADAPTER_OUTTYPES as readonly string[]).includes(outtype))
      throw new UsageError(`--outtype must be one of ${GGUF_ADAPTER_OUTTYPES.join(", ")}, got "${outtype}"`);
    checkOutSeparate(out, { adapter, model }, "lora export");
    const existing = fs.statSync(out, { throwIfNoEntry: false });
    if (existing?.isDirectory())
      throw new UsageError(`--out ${out} is a folder; give a file name ending in .gguf`);
    if (!out.endsWith(".gguf"))
      throw new UsageError(`--out ${out}: a GGUF adapter is one file; give it a name ending in .gguf`);
    if (model && resolve(out) === resolve(model))
      throw new UsageError(`--out ${out} is the --model file; export must not overwrite the base model`);
    if (existing && !v.overwrite)
      throw new UsageError(`--out ${out} already exists; pass --overwrite to replace it`);
    const r = exportGGUFAdapter(adapter, out, { model, outtype: outtype as GGUFAdapterOuttype });
    const folded = r.modules.filter((m) => m.folded !== 1);
    const permuted = r.modules.filter((m) => m.permutedHeads !== null).length;
    console.log(
      `exported ${r.modules.length} LoRA module(s) of ${adapter} for GGUF architecture ${r.arch} (base config ${r.modelConfigPath}), adapter.lora.alpha ${r.alpha}, ${outtype}`,
    );
    if (permuted > 0)
      console.log(
        `${permuted} q/k module(s): lora_b rows permuted to llama.cpp's RoPE layout, as its converter does`,
      );
    if (folded.length > 0)
      console.log(
        `${folded.length} module(s) with their own rank or alpha (rank_pattern/alpha_pattern): their scale is folded into lora_b, since llama.cpp takes one alpha per file`,
      );
    console.log(`wrote ${out} (${r.bytes.byteLength} bytes); llama.cpp: --lora ${out}`);
  },
};
