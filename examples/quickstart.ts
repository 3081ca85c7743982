/**
 * `npm start`: the whole LoRA story on the embedded base model, offline, in a few minutes.
 *
 * The base model (assets/base-model) was pretrained by this toolkit on State of the Union
 * addresses; the task (assets/task) is 1960s fiction from the Brown Corpus, a register the base
 * has never seen. LoRA adapts it: held-out loss and samples before and after, the adapter saved in
 * PEFT's format, merged into a model folder, and the merged model checked against base + adapter.
 *
 *   node dist/examples/quickstart.js [--steps N] [--out DIR]
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Progress, peakMiB } from "../src/cli/progress.js";
import {
  applyLoRA,
  Batcher,
  backend,
  createOptimizer,
  type EvalResult,
  evaluate,
  fuseLoRA,
  generate,
  type LoraConfig,
  loadAdapter,
  loadModelFolder,
  loadTokenizer,
  mergeLoRA,
  parameterReport,
  Rng,
  readDataset,
  resolveBaseDtype,
  saveAdapter,
  saveModelFolder,
  tokenizeRow,
  train,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "120" },
    out: { type: "string", default: join(root, "runs/quickstart") },
    model: { type: "string", default: join(root, "assets/base-model") },
    data: { type: "string", default: join(root, "assets/task") },
  },
});
const t0 = performance.now();
const seconds = () => (performance.now() - t0) / 1000;
const out = args.out!;
const title = (s: string) => console.log(`\n== ${s} ${"=".repeat(Math.max(0, 70 - s.length))}`);

// 1. The model, the task, and LoRA's share of the parameters.
title("1. Base model and LoRA");
// frozen base weights in bf16 where the backend multiplies bf16 faster, else f32 (`--base-dtype auto`)
const baseDtype = resolveBaseDtype("auto");
const base = loadModelFolder(args.model!, { baseDtype });
const { model, config } = base;
const tokenizer = loadTokenizer(args.model!);
const splits = readDataset(args.data!);
const tokenize = (rows: typeof splits.train) =>
  rows.map((r) => tokenizeRow(r, tokenizer, { maskPrompt: false })).filter((r) => r.ids.length > 1);
// a single file has no held-out split: its last tenth is held out (in file order, so it is repeatable)
const given = splits.valid ?? splits.test;
const all = tokenize(splits.train);
const cut = given ? all.length : all.length - Math.max(1, Math.floor(all.length / 10));
if (cut < 1)
  throw new Error(
    `${args.data}: ${all.length} usable row(s): too few to hold any out; give a folder with train.jsonl and valid.jsonl, or more rows`,
  );
const trainRows = all.slice(0, cut);
const heldOut = given ? tokenize(given) : all.slice(cut);
if (!given) console.log(`${args.data} has no valid/test split: holding out its last ${heldOut.length} rows`);
console.log(
  `model: ${args.model} (${config.model_type}, ${config.num_hidden_layers} layers, width ${config.hidden_size}, vocabulary ${config.vocab_size}); backend ${backend().name}, base weights ${baseDtype}`,
);
console.log(`task: ${args.data}: ${trainRows.length} training rows, ${heldOut.length} held-out rows`);
const lora: LoraConfig = {
  r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  target_modules: "all-linear",
  use_rslora: false,
  init_lora_weights: true,
};
applyLoRA(model, lora, { rng: new Rng(0) });
const report = parameterReport(model);
console.log(`LoRA r=${lora.r}, alpha=${lora.lora_alpha} on every linear layer but the head`);
console.log(report.line);

const prompts = ['"Where have you been?" she asked.', "He opened the door and"];
const sample = () => {
  model.eval();
  for (const p of prompts) {
    const ids = [...generate(model, tokenizer.encode(p), { maxTokens: 40, temperature: 0 })];
    console.log(`  ${p}${tokenizer.decode(ids).replaceAll("\n", " ")}`);
  }
};
const show = (what: string, r: EvalResult) =>
  console.log(
    `${what}: loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)} over ${r.tokens} tokens`,
  );

// 2. Before: held-out loss and greedy samples of the base model.
title("2. Before fine-tuning");
const before = evaluate(model, heldOut);
show("held-out", before);
sample();

// 3. LoRA training: only A and B learn.
title("3. LoRA training");
const steps = Number(args.steps);
const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 3e-3, weightDecay: 0 });
const progress = new Progress(steps, 0);
progress.begin();
const trained = await train(model, {
  optimizer,
  data: new Batcher(trainRows, { batchSize: 8, shuffle: true, seed: 0, padId: tokenizer.padId ?? 0 }),
  steps,
  schedule: { kind: "cosine", warmup: Math.min(10, Math.floor(steps / 10)) },
  maxGradNorm: 1,
  onStep: (i) => progress.step(i),
});
progress.stop();

// 4. After: the same held-out data and prompts.
title("4. After fine-tuning");
const after = evaluate(model, heldOut);
show("held-out", after);
sample();

// 5. Save in PEFT's format, merge into a model folder, and check the merged model.
title("5. Save, merge, check");
saveAdapter(model, join(out, "adapter"), lora, args.model!);
const fresh = loadModelFolder(args.model!);
loadAdapter(fresh.model, join(out, "adapter"), []);
mergeLoRA(fresh.model);
fuseLoRA(fresh.model);
saveModelFolder(fresh.model, join(out, "merged"), base);
const merged = evaluate(loadModelFolder(join(out, "merged"), { baseDtype }).model, heldOut);
show("merged model, held-out", merged);
// a 16-bit base rounds the merged weight once more, so it agrees to the 0.5% bf16 keeps to f32
const [tol, tolText] = baseDtype === "f32" ? [1e-4, "1e-4"] : [5e-3, "0.5%"];
const agree = Math.abs(merged.loss - after.loss) <= tol * after.loss;
console.log(
  agree
    ? `merged model = base + adapter (within ${tolText})`
    : "MISMATCH between merged model and base + adapter",
);

title("Summary");
const rows: [string, string][] = [
  ["held-out loss", `${before.loss.toFixed(4)} -> ${after.loss.toFixed(4)}`],
  ["held-out perplexity", `${before.perplexity.toFixed(2)} -> ${after.perplexity.toFixed(2)}`],
  [
    "trainable parameters",
    `${report.trainable.toLocaleString("en-US")} of ${report.total.toLocaleString("en-US")} (${report.percent.toFixed(2)}%)`,
  ],
  [
    "training",
    `${trained.steps} steps, ${trained.tokens.toLocaleString("en-US")} tokens in ${trained.trainS.toFixed(1)} s (${Math.round(trained.tokens / trained.trainS).toLocaleString("en-US")} tokens/s)`,
  ],
  ["total time", `${seconds().toFixed(1)} s, peak memory ${Math.round(peakMiB())} MiB`],
  ["adapter (PEFT)", join(out, "adapter")],
  ["merged model", join(out, "merged")],
];
for (const [k, v] of rows) console.log(`  ${k.padEnd(22)}${v}`);
if (!agree || !(after.loss < before.loss)) process.exitCode = 1;
