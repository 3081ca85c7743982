/**
 * Quick start: the whole LoRA story in one file, through the library API.
 * Loads a model folder, wraps q_proj/v_proj with LoRA, trains A and B on a few lines of text,
 * shows the loss fall, then merges the adapter and checks the merged model gives the same loss.
 * Runs offline: it uses ../shared/data/stories260K-hf when present, else a tiny committed test model.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  applyLoRA,
  backward,
  clipGradNorm,
  createOptimizer,
  evaluate,
  type LoraConfig,
  languageModelLoss,
  learningRate,
  loadModelFolder,
  loadTokenizer,
  mergeLoRA,
  nextTokenTargets,
  parameterReport,
  Rng,
  type TokenizedRow,
} from "../src/node.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const stories = resolve(root, "../shared/data/stories260K-hf");
const dir = existsSync(stories) ? stories : join(root, "test/fixtures/models/llama_gqa_tied");
console.log(`model: ${dir}`);
const { model } = loadModelFolder(dir);

// Training text: a register the TinyStories model has not seen (pirate talk), or token ids for the tiny model.
const lines = [
  "Arr, the captain sailed the ship to the island and found the gold.",
  "Arr, the parrot sang to the captain and the crew danced on the ship.",
  "Arr, the crew sailed home with the gold and the captain was happy.",
  "Arr, the ship was big and the sea was blue, said the captain.",
];
const tokenizer = existsSync(stories) ? loadTokenizer(dir) : null;
const rows: TokenizedRow[] = tokenizer
  ? lines.map((l) => {
      const ids = tokenizer.encode(l);
      return { ids, mask: ids.map(() => 1) };
    })
  : lines.map((_, i) => {
      const ids = Array.from({ length: 12 }, (_, t) => (7 * i + 3 * t) % 71);
      return { ids, mask: ids.map(() => 1) };
    });

const config: LoraConfig = {
  r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  target_modules: ["q_proj", "v_proj"],
  use_rslora: false,
  init_lora_weights: true,
};
applyLoRA(model, config, { rng: new Rng(0) });
console.log(parameterReport(model).line);

const before = evaluate(model, rows);
const opt = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-2, weightDecay: 0 });
const steps = 40;
const T = Math.min(...rows.map((r) => r.ids.length));
const ids = Int32Array.from(rows.flatMap((r) => r.ids.slice(0, T)));
const targets = nextTokenTargets(ids, rows.length, T);
for (let step = 0; step < steps; step++) {
  opt.lr = learningRate("cosine", { base: 1e-2, step, total: steps, warmup: 4 });
  const loss = languageModelLoss(model, ids, [rows.length, T], targets);
  backward(loss);
  clipGradNorm(opt.params, 1);
  opt.step();
  opt.zeroGrad();
  if (step % 10 === 0 || step === steps - 1)
    console.log(`step ${step + 1}/${steps}  loss ${loss.item().toFixed(4)}`);
}
const after = evaluate(model, rows);
mergeLoRA(model);
const merged = evaluate(model, rows);
console.log(
  `loss before ${before.loss.toFixed(4)} -> after ${after.loss.toFixed(4)}; merged model ${merged.loss.toFixed(4)}`,
);
if (Math.abs(merged.loss - after.loss) > 1e-4 * after.loss)
  throw new Error("merged model disagrees with base + adapter");
