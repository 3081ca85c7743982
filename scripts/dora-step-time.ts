/**
 * DoRA's training step time against LoRA's on the same model, batch and rank (issue #15): the README's
 * DoRA ratio comes from here. Two copies of the model, one with LoRA and one with DoRA (use_dora), take
 * turns, one step each (forward, backward, AdamW), so load on the machine falls on both alike; the
 * median step of each is reported, with the ratio. Not a test:
 *   npx tsc -p . && node dist/scripts/dora-step-time.js [--model DIR] [--steps 20] [--batch 8] [--seq 128]
 *     [--rank 8] [--targets all-linear] [--dropout 0]
 * The default model is the embedded one (assets/base-model, hidden 192, 4 blocks).
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  applyLoRA,
  backend,
  backward,
  createOptimizer,
  getThreads,
  languageModelLoss,
  loadModelFolder,
  modelFamily,
  nextTokenTargets,
  Rng,
  setLoraDropout,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const { values: a } = parseArgs({
  options: {
    model: { type: "string", default: resolve(root, "assets/base-model") },
    steps: { type: "string", default: "20" },
    batch: { type: "string", default: "8" },
    seq: { type: "string", default: "128" },
    rank: { type: "string", default: "8" },
    targets: { type: "string", default: "all-linear" },
    dropout: { type: "string", default: "0" },
  },
});
const [steps, B, T, r, p] = [a.steps, a.batch, a.seq, a.rank, a.dropout].map(Number) as [
  number,
  number,
  number,
  number,
  number,
];

function setup(dora: boolean) {
  const folder = loadModelFolder(a.model!);
  const model = folder.model;
  const targets = a.targets === "default" ? modelFamily(folder.config).defaultTargets : a.targets!;
  const paths = applyLoRA(
    model,
    {
      r,
      lora_alpha: 2 * r,
      lora_dropout: p,
      target_modules: targets,
      use_rslora: false,
      init_lora_weights: true,
      use_dora: dora,
    },
    { rng: new Rng(1) },
  );
  setLoraDropout(model, p, new Rng(2));
  model.train();
  const opt = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-3, weightDecay: 0 });
  return { model, opt, paths, vocab: folder.config.vocab_size as number };
}

const lora = setup(false);
const dora = setup(true);
const rng = new Rng(3);
const ids = Int32Array.from({ length: B * T }, () => Math.floor(rng.uniform() * lora.vocab));
const targets = nextTokenTargets(ids, B, T);
const step = (s: ReturnType<typeof setup>) => {
  const t0 = performance.now();
  s.opt.zeroGrad();
  const loss = languageModelLoss(s.model, ids, [B, T], targets);
  backward(loss);
  s.opt.step();
  return performance.now() - t0;
};
const times = { lora: [] as number[], dora: [] as number[] };
for (let i = 0; i < steps + 2; i++) {
  // alternate which goes first
  let l = 0;
  let d = 0;
  if (i % 2 === 0) {
    l = step(lora);
    d = step(dora);
  } else {
    d = step(dora);
    l = step(lora);
  }
  if (i >= 2) {
    times.lora.push(l);
    times.dora.push(d);
  }
}
const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)]!;
const [ml, md] = [median(times.lora), median(times.dora)];
console.log(
  `${a.model}: ${lora.paths.length} adapted layers (${a.targets}), rank ${r}, batch ${B} × ${T} tokens, dropout ${p}, backend ${backend().name}, ${getThreads()} thread(s)`,
);
console.log(
  `median step over ${steps}: LoRA ${ml.toFixed(1)} ms, DoRA ${md.toFixed(1)} ms, DoRA / LoRA = ${(md / ml).toFixed(3)}`,
);
