/**
 * Where a batched decode step's adapter time goes (issue #17): the serve engine's batched step
 * (Engine.stepBatched) on bench:serve's model and adapters (stories260K, else the tiny serve fixture;
 * three random rank-8 adapters on every linear layer), in process, 16 rows mixed (3 adapters + base,
 * as bench:serve's mixed clients) against 16 rows all on the base, taking turns step by step so load
 * on the machine falls on both alike. Reports the median of each: the decode step alone (every row
 * prefilled) and the step that also prefills every row (a wave of 16 new requests), and the time
 * inside each backend kernel per decode step. Not a test:
 *   npx tsc -p . && node dist/scripts/serve-step-profile.js [--rounds 12] [--steps 40] [--rows 16] [--width W]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  BENCH_ADAPTERS as ADAPTERS,
  benchModelDir,
  widenedModel,
  writeBenchAdapters,
} from "../bench/serve-adapters.js";
import {
  addAdapter,
  backend,
  Engine,
  getThreads,
  loadModelFolder,
  loadTokenizer,
  readAdapterInput,
  resolveBaseDtype,
  type Sequence,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const { values: a } = parseArgs({
  options: {
    rounds: { type: "string", default: "12" },
    steps: { type: "string", default: "40" },
    rows: { type: "string", default: "16" },
    width: { type: "string" },
  },
});
const ROUNDS = Number(a.rounds);
const STEPS = Number(a.steps);
const ROWS = Number(a.rows);
const tmp = mkdtempSync(join(tmpdir(), "serve-profile-"));
// bench:serve's --width: stories260K widened to this hidden size (random weights)
const modelDir = a.width ? widenedModel(benchModelDir(root), Number(a.width), tmp) : benchModelDir(root);

// the base dtype `lora serve` defaults to (bf16 where its products are faster)
const { model } = loadModelFolder(modelDir, { baseDtype: resolveBaseDtype("auto") });
const tokenizer = loadTokenizer(modelDir);
const engine = new Engine({ model, tokenizer, baseName: "base", contextLength: 512 });
writeBenchAdapters(modelDir, tmp);
for (const name of ADAPTERS) addAdapter(engine.adapters, name, readAdapterInput(join(tmp, name)));
rmSync(tmp, { recursive: true, force: true });

// time inside each backend kernel (its JS wrapper and the call), summed per step
const k = backend() as unknown as Record<string, unknown>;
const kernelMs = new Map<string, number>();
for (const name of Object.keys(k)) {
  const fn = k[name];
  if (typeof fn !== "function" || name === "invariantRows") continue;
  const inner = fn.bind(k) as (...args: unknown[]) => unknown;
  k[name] = (...args: unknown[]) => {
    const t0 = performance.now();
    try {
      return inner(...args);
    } finally {
      kernelMs.set(name, (kernelMs.get(name) ?? 0) + performance.now() - t0);
    }
  };
}

const prompt = tokenizer.encode("Once upon a time");
const step = engine.stepBatched();
type S = ReturnType<typeof step.start>;
function sequences(mixed: boolean): Sequence<S>[] {
  return Array.from({ length: ROWS }, (_, i) => {
    const spec = {
      adapter: mixed ? ([null, ...ADAPTERS][i % 4] ?? null) : null,
      prompt,
      sampling: { maxTokens: STEPS + 1, temperature: 0 },
      onToken: () => true,
      onEnd: () => {},
    };
    return { spec, state: step.start(spec) };
  });
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;
const times = { mixed: { decode: [] as number[], prefill: [] as number[] } };
const base = { decode: [] as number[], prefill: [] as number[] };
// per kernel, its time in each decode step, mixed and base
const kernels = { mixed: new Map<string, number[]>(), base: new Map<string, number[]>() };
for (let round = 0; round < ROUNDS; round++) {
  const runs = { mixed: sequences(true), base: sequences(false) };
  for (let s = 0; s <= STEPS; s++)
    for (const which of round % 2 ? (["base", "mixed"] as const) : (["mixed", "base"] as const)) {
      kernelMs.clear();
      const t0 = performance.now();
      step.step(runs[which]);
      const ms = performance.now() - t0;
      const into = which === "mixed" ? times.mixed : base;
      if (s === 0) into.prefill.push(ms);
      else if (round > 0) into.decode.push(ms); // round 0 warms up
      if (s > 0 && round > 0)
        for (const [name, t] of kernelMs) {
          const ts = kernels[which].get(name) ?? [];
          ts.push(t);
          kernels[which].set(name, ts);
        }
    }
  // the sequences leave, as the scheduler lets them: their caches go back to the engine's pool
  for (const seq of [...runs.mixed, ...runs.base]) step.end?.(seq.state);
}

const f = (x: number) => x.toFixed(2);
const dm = median(times.mixed.decode);
const db = median(base.decode);
const pm = median(times.mixed.prefill);
const pb = median(base.prefill);
console.log(
  `backend ${backend().name}, ${getThreads?.() ?? "?"} threads, model ${modelDir}, ${ROWS} rows, ${ROUNDS - 1}x${STEPS} steps`,
);
console.log("| step | mixed ms | base ms | mixed / base |");
console.log("|---|---:|---:|---:|");
console.log(`| decode (all rows prefilled) | ${f(dm)} | ${f(db)} | ${f(dm / db)} |`);
console.log(`| prefill of ${ROWS} new rows | ${f(pm)} | ${f(pb)} | ${f(pm / pb)} |`);
console.log("\n| kernel, per decode step | mixed ms | base ms |\n|---|---:|---:|");
const perStep = (ts: number[] | undefined) => (ts ?? []).reduce((x, y) => x + y, 0) / (ROUNDS - 1) / STEPS;
for (const name of [...kernels.mixed.keys()].sort(
  (p, q) => perStep(kernels.mixed.get(q)) - perStep(kernels.mixed.get(p)),
))
  console.log(`| ${name} | ${f(perStep(kernels.mixed.get(name)))} | ${f(perStep(kernels.base.get(name)))} |`);
