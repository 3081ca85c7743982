/**
 * `lora merge`: folds an adapter into its base model, W' = W0 + scale·B·A, and writes a model folder;
 * several (each PATH:W weighted) fold in as their exact sum. With --method, combines the adapters into
 * a new adapter instead (merge-adapters.ts).
 */
import fs from "node:fs";
import { resolve } from "node:path";
import { loadModelFolder, saveModelFolder } from "../io/node/model-folder.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { fuseLoRA, loraLayers, mergeLoRA } from "../lora/inject.js";
import { modelFamily } from "../models/index.js";
import { adapterSpecs, showSpec } from "./adapters.js";
import { type Command, required, str, UsageError, type Values } from "./command.js";
import { adapterOnto } from "./load.js";
import { COMBINE_FLAGS, writeCombinedAdapter } from "./merge-adapters.js";

export const mergeCommand: Command = {
  name: "merge",
  summary:
    "Merge LoRA adapters into their base model and write a complete Hugging Face model folder, or (--method) combine adapters into a new adapter.",
  usage:
    "lora merge --model DIR --adapter PATH[:W]... --out DIR [--overwrite]\n       lora merge --adapter PATH[:W] --adapter PATH[:W]... --method M [--rank K] [--density D] [--majority-sign-method total|frequency] [--seed S] --out DIR",
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description:
        "base model folder, or a GGUF model file: the merged model is then written as a Hugging Face folder (f32 weights; tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from the GGUF metadata)",
    },
    adapter: {
      type: "string",
      valueName: "PATH[:W]",
      multiple: true,
      description:
        "adapter: a PEFT or mlx-lm folder, or a GGUF LoRA file (the format is detected); PATH:W weights its update by W; several add",
    },
    out: {
      type: "string",
      valueName: "DIR",
      description: "folder for the merged model (with --method: for the new adapter)",
    },
    overwrite: { type: "boolean", description: "replace a model (or adapter) already in --out" },
    ...COMBINE_FLAGS,
  },
  examples: [
    "lora merge --model ./my-model --adapter ./run --out ./my-model-merged",
    "lora merge --model ./my-model --adapter ./a --adapter ./b:0.5 --out ./merged",
    "lora merge --adapter ./a:0.7 --adapter ./b:0.3 --method cat --out ./a-plus-b",
  ],
  run(v: Values) {
    const specs = adapterSpecs(v);
    if (specs.length === 0)
      throw new UsageError("missing --adapter for 'lora merge'; see 'lora merge --help'");
    const method = str(v, "method");
    if (method !== undefined && str(v, "model") !== undefined)
      throw new UsageError(
        "--model and --method together: --method writes a new adapter from the adapters alone, so drop --model; or drop --method to merge the adapters into the model",
      );
    for (const flag of ["rank", "density", "majority-sign-method", "seed"])
      if (method === undefined && str(v, flag) !== undefined)
        throw new UsageError(`--${flag} is an option of --method; add --method, or drop --${flag}`);
    if (method !== undefined) return writeCombinedAdapter(v, specs, required(v, "out", "merge"));
    const dir = required(v, "model", "merge");
    const out = required(v, "out", "merge");
    const adapter = specs.map(showSpec).join(" + ");
    if (resolve(out) === resolve(dir))
      throw new UsageError("--out is the base model folder; merging must not overwrite the base model");
    // nor write into the adapter it reads (an adapter folder may hold its own tokenizer files)
    for (const s of specs) checkOutSeparate(out, { model: dir, adapter: s.path }, "lora merge");
    if (fs.existsSync(resolve(out, "model.safetensors")) && !v.overwrite)
      throw new UsageError(`--out ${out} already holds a model; pass --overwrite to replace it`);
    const folder = loadModelFolder(dir, { keepTowers: true }); // a multimodal folder's vision tower too
    // each adapter in turn (PATH:W: its B times W), merged and fused before the next: W0 + Σ w·ΔW
    const targets = modelFamily(folder.config).defaultTargets;
    let n = 0;
    const untied: string[] = [];
    for (const s of specs) {
      adapterOnto(folder.model, s.path, targets, folder.config);
      const layers = loraLayers(folder.model);
      if (s.weight !== null)
        for (const [, l] of layers) l.lora_B.data.forEach((x, i, b) => (b[i] = x * s.weight!));
      n += layers.length;
      untied.push(...mergeLoRA(folder.model)); // refuses non-finite results
      fuseLoRA(folder.model);
    }
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
