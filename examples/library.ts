/**
 * The library API, step for step what `lora train` + `lora merge` do:
 *   node dist/examples/library.js [MODEL_DIR] [DATA] [OUT_DIR]
 * Defaults: a tiny committed test model and a generated pattern dataset (runs in about a second).
 */
import { join, resolve } from "node:path";
import {
  applyLoRA,
  Batcher,
  createOptimizer,
  evaluate,
  fuseLoRA,
  type LoraConfig,
  loadAdapter,
  loadModelFolder,
  loadTokenizer,
  mergeLoRA,
  parameterReport,
  Rng,
  readDataset,
  saveAdapter,
  saveModelFolder,
  type TokenizedRow,
  tokenizeRow,
  train,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const [modelDir = join(root, "test/fixtures/models/llama_gqa_tied"), dataPath, out = "out/library-example"] =
  process.argv.slice(2);

// 1. A Hugging Face model folder, and data as token rows (text rows need the folder's tokenizer.json).
const { model, config, dtypes } = loadModelFolder(modelDir);
const tokenizer = dataPath ? loadTokenizer(modelDir) : null;
const pattern = (n: number, k: number): TokenizedRow[] =>
  Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 16 }, (_, t) => (5 * (i + k) + 3 * t) % 60);
    return { ids, mask: ids.map(() => 1) };
  });
const splits = dataPath ? readDataset(dataPath) : null;
const tokenize = (rows: NonNullable<typeof splits>["train"]) =>
  rows.map((r) => tokenizeRow(r, tokenizer, { maskPrompt: false }));
const trainRows = splits ? tokenize(splits.train) : pattern(32, 0);
const validRows = splits?.valid ? tokenize(splits.valid) : pattern(8, 100);

// 2. LoRA on q_proj and v_proj: everything else is frozen.
const lora: LoraConfig = {
  r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  target_modules: ["q_proj", "v_proj"],
  use_rslora: false,
  init_lora_weights: true,
};
applyLoRA(model, lora, { rng: new Rng(0) });
console.log(parameterReport(model).line);

// 3. Train: a plain async function with injectable data, loss, evaluation, saving and callbacks.
const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-2, weightDecay: 0 });
const result = await train(model, {
  optimizer,
  data: new Batcher(trainRows, { batchSize: 4, shuffle: true, seed: 0 }),
  steps: 60,
  schedule: { kind: "cosine", warmup: 5 },
  maxGradNorm: 1,
  evaluate: () => evaluate(model, validRows).loss,
  evalEvery: 20,
  onEval: (e) => console.log(`step ${e.step}: validation loss ${e.valLoss.toFixed(4)}`),
});
console.log(`trained ${result.steps} steps, ${result.tokens} tokens in ${result.elapsedS.toFixed(1)} s`);

// 4. Save in PEFT's format, load it back onto a fresh base, merge, and write a model folder.
saveAdapter(model, join(out, "adapter"), lora, modelDir);
const fresh = loadModelFolder(modelDir);
loadAdapter(fresh.model, join(out, "adapter"), ["q_proj", "v_proj"]);
const withAdapter = evaluate(fresh.model, validRows).loss;
mergeLoRA(fresh.model); // W0 += (alpha/r)·B·A; refuses non-finite values and a second merge
fuseLoRA(fresh.model); // plain Linear layers again
saveModelFolder(fresh.model, join(out, "merged"), { config, dtypes, dir: modelDir });
const merged = evaluate(loadModelFolder(join(out, "merged")).model, validRows).loss;
console.log(`validation loss: adapter ${withAdapter.toFixed(6)}, merged folder ${merged.toFixed(6)}`);
