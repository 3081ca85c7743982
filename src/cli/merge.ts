/** `lora merge`: folds an adapter into its base model, W' = W0 + scale·B·A, and writes a model folder. */
import fs from "node:fs";
import { resolve } from "node:path";
import { loadModelFolder, saveModelFolder } from "../io/node/model-folder.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { fuseLoRA, loraLayers, mergeLoRA } from "../lora/inject.js";
import { modelFamily } from "../models/index.js";
import { type Command, required, UsageError, type Values } from "./command.js";
import { adapterOnto } from "./load.js";

export const mergeCommand: Command = {
  name: "merge",
  summary: "Merge a LoRA adapter into its base model and write a complete Hugging Face model folder.",
  usage: "lora merge --model DIR --adapter PATH --out DIR [--overwrite]",
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description:
        "base model folder, or a GGUF model file: the merged model is then written as a Hugging Face folder (f32 weights; tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from the GGUF metadata)",
    },
    adapter: {
      type: "string",
      valueName: "PATH",
      description: "adapter: a PEFT or mlx-lm folder, or a GGUF LoRA file (the format is detected)",
    },
    out: { type: "string", valueName: "DIR", description: "folder for the merged model" },
    overwrite: { type: "boolean", description: "replace a model already in --out" },
  },
  examples: ["lora merge --model ./my-model --adapter ./run --out ./my-model-merged"],
  run(v: Values) {
    const dir = required(v, "model", "merge");
    const adapter = required(v, "adapter", "merge");
    const out = required(v, "out", "merge");
    if (resolve(out) === resolve(dir))
      throw new UsageError("--out is the base model folder; merging must not overwrite the base model");
    // nor write into the adapter it reads (an adapter folder may hold its own tokenizer files)
    checkOutSeparate(out, { model: dir, adapter }, "lora merge");
    if (fs.existsSync(resolve(out, "model.safetensors")) && !v.overwrite)
      throw new UsageError(`--out ${out} already holds a model; pass --overwrite to replace it`);
    const folder = loadModelFolder(dir, { keepTowers: true }); // a multimodal folder's vision tower too
    adapterOnto(folder.model, adapter, modelFamily(folder.config).defaultTargets, folder.config);
    const n = loraLayers(folder.model).length;
    const untied = mergeLoRA(folder.model); // refuses non-finite results
    fuseLoRA(folder.model);
    // an adapted head that was tied to the embedding now has a weight of its own
    const config = untied.length > 0 ? { ...folder.config, tie_word_embeddings: false } : folder.config;
    const files = saveModelFolder(folder.model, out, { ...folder, config });
    const dtypes = [...new Set([...folder.dtypes.values()].map((d) => d.dtype))].join("/");
    console.log(
      `merged ${n} LoRA layer(s) of ${adapter} with the base model ${dir} (${dtypes}), which is unchanged`,
    );
    if (untied.length > 0)
      console.log(
        `${untied.join(", ")} shared the embedding's weight (tie_word_embeddings); the merged model stores its own copy and has tie_word_embeddings: false, so the embedding keeps its trained values`,
      );
    if (folder.towers?.length)
      console.log(
        `the ${modelFamily(folder.config)
          .checkpoint.towers!.map((t) => t.what)
          .join(" and ")} (${folder.towers.length} tensors) are copied over unchanged`,
      );
    console.log(`wrote ${out}: ${files.join(", ")}`);
  },
};
