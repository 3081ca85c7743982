/**
 * Writes PiSSA, pissa_niter_4 and OLoRA adapters as `lora train` writes them (PEFT's form, and
 * --convert-to-lora's plain rank-2r LoRA) on the llama_untied fixture, with our logits, for
 * scripts/check_peft_init_load.py to load in the real PEFT. Not a test:
 *   npx tsc -p . && node dist/scripts/write-init-adapters.js OUT_DIR
 *   /work/venv/bin/python scripts/check_peft_init_load.py OUT_DIR
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  adapterFiles,
  applyLoRA,
  loadModelFolder,
  loraLayers,
  plainLoraAdapterFiles,
  Rng,
} from "../src/node.js";

const out = process.argv[2];
if (!out) throw new Error("usage: node dist/scripts/write-init-adapters.js OUT_DIR");
const MODEL = resolve(import.meta.dirname, "../../test/fixtures/models/llama_untied");
const ids = [1, 5, 17, 33, 2, 64, 8, 40, 11, 3];
const logits: Record<string, number[]> = {};
for (const kind of ["pissa", "pissa_niter_4", "olora"] as const) {
  const { model } = loadModelFolder(MODEL);
  const config = {
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    target_modules: ["q_proj", "v_proj"],
    use_rslora: false,
    init_lora_weights: kind,
  };
  applyLoRA(model, config);
  const rng = new Rng(9); // a stand-in for training
  for (const [, l] of loraLayers(model)) {
    l.lora_A.assign(l.lora_A.data.map((x) => x + 0.05 * rng.normal()));
    l.lora_B.assign(l.lora_B.data.map((x) => x + 0.05 * rng.normal()));
  }
  logits[kind] = Array.from(model.forward(Int32Array.from(ids), [1, ids.length]).data);
  for (const [sub, files] of [
    ["adapter", adapterFiles(model, config, "llama_untied")],
    ["converted", plainLoraAdapterFiles(model, config, "llama_untied")],
  ] as const) {
    const dir = join(out, kind, sub);
    mkdirSync(dir, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  }
}
writeFileSync(join(out, "ours.json"), JSON.stringify({ input_ids: ids, logits }));
console.log(`wrote ${out}`);
