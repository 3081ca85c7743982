/**
 * Held-out loss with the frozen base weights in f32, bf16 and f16 (`--base-dtype`), before and after a
 * short LoRA run, on the embedded model (assets/task valid split) and, when ../shared/data is present,
 * stories260K (TinyStories validation text). The README's "16-bit base weights" table comes from here.
 * Not a test: `npx tsc -p . && node dist/scripts/base-dtype-loss.js [--steps 30]`.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  applyLoRA,
  type BaseDType,
  Batcher,
  backend,
  createOptimizer,
  evaluate,
  loadModelFolder,
  loadTokenizer,
  parameterReport,
  Rng,
  readDataset,
  type TokenizedRow,
  tokenizeRow,
  train,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const { values: args } = parseArgs({ options: { steps: { type: "string", default: "30" } } });
const steps = Number(args.steps);

interface Task {
  name: string;
  model: string;
  train: TokenizedRow[];
  heldOut: TokenizedRow[];
}

function embeddedTask(): Task {
  const model = join(root, "assets/base-model");
  const tok = loadTokenizer(model);
  const splits = readDataset(join(root, "assets/task"));
  const rows = (r: typeof splits.train) =>
    r.map((x) => tokenizeRow(x, tok, { maskPrompt: false })).filter((x) => x.ids.length > 1);
  return {
    name: "embedded (assets/base-model, assets/task valid)",
    model,
    train: rows(splits.train),
    heldOut: rows(splits.valid!),
  };
}

function storiesTask(): Task | null {
  const model = resolve(root, "../shared/data/stories260K-hf");
  const text = resolve(root, "../shared/data/tinystories-val-sample/tinystories_val.txt");
  let raw: string;
  try {
    raw = readFileSync(text, "utf8");
  } catch {
    return null;
  }
  const tok = loadTokenizer(model);
  const docs = raw.split(/\n\s*\n/).filter((d) => d.trim().length > 0);
  const rows = docs.map((d) => {
    const ids = tok.encode(d.trim()).slice(0, 256);
    return { ids, mask: ids.map(() => 1) };
  });
  return {
    name: "stories260K (TinyStories val sample)",
    model,
    train: rows.slice(0, 400),
    heldOut: rows.slice(-100),
  };
}

export async function measure(task: Task, dtype: BaseDType, nSteps: number) {
  const { model } = loadModelFolder(task.model, { baseDtype: dtype });
  const bytes = model.parameters().reduce((s, p) => s + p.byteLength, 0);
  const before = evaluate(model, task.heldOut).loss;
  applyLoRA(
    model,
    {
      r: 8,
      lora_alpha: 16,
      lora_dropout: 0,
      target_modules: "all-linear",
      use_rslora: false,
      init_lora_weights: true,
    },
    { rng: new Rng(0) },
  );
  const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 3e-3, weightDecay: 0 });
  const t0 = performance.now();
  await train(model, {
    optimizer,
    data: new Batcher(task.train, { batchSize: 8, shuffle: true, seed: 0, padId: 0 }),
    steps: nSteps,
    schedule: { kind: "cosine", warmup: Math.min(3, nSteps - 1) },
    maxGradNorm: 1,
  });
  const seconds = (performance.now() - t0) / 1000;
  const after = evaluate(model, task.heldOut).loss;
  return { before, after, bytes, seconds, trainable: parameterReport(model).trainable };
}

console.log(
  `backend ${backend().name}; LoRA r=8 alpha=16 all-linear, ${steps} AdamW steps of 8 rows, lr 3e-3`,
);
for (const task of [embeddedTask(), storiesTask()]) {
  if (!task) {
    console.log("stories260K: skipped (../shared/data is absent)");
    continue;
  }
  console.log(`\n${task.name}: ${task.heldOut.length} held-out rows`);
  console.log(
    "| base dtype | weight bytes | held-out loss before | vs f32 | after LoRA | vs f32 | train s |",
  );
  console.log("|---|---:|---:|---:|---:|---:|---:|");
  let ref: { before: number; after: number } | null = null;
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    const r = await measure(task, dtype, steps);
    ref ??= r;
    const rel = (x: number, y: number) => `${(((x - y) / y) * 100).toFixed(3)}%`;
    console.log(
      `| ${dtype} | ${r.bytes.toLocaleString("en-US")} | ${r.before.toFixed(4)} | ${rel(r.before, ref.before)} | ${r.after.toFixed(4)} | ${rel(r.after, ref.after)} | ${r.seconds.toFixed(1)} |`,
    );
  }
}
