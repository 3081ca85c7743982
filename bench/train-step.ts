/**
 * The Node side of one benchmark configuration, run in its own process so that LORA_BACKEND and
 * LORA_THREADS apply and maxRSS is its own. Imports the Node entry (which enables the thread pool).
 *
 *   node dist/bench/train-step.js '<StepSpec JSON>'   ->  one ChildResult JSON line on stdout
 *
 * Order: build + LoRA, warm-up steps (the first one records the matmul shapes), timed steps, peak
 * RSS, greedy generation, the GEMM table, then (if asked) the weights file for the torch side.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import {
  applyLoRA,
  type Backend,
  backend,
  backward,
  buildModel,
  castBaseWeights,
  createOptimizer,
  generate,
  languageModelLoss,
  nextTokenTargets,
  type ParamFactory,
  parameterReport,
  Rng,
  randomParams,
} from "../src/node.js";
import { gemmTable, median, recordMatmuls } from "./gemm.js";
import type { ChildResult, GenResult, StepSpec } from "./spec.js";
import { type BenchBatch, writeBenchWeights } from "./weights.js";

const MiB = (kib: number) => kib / 1024;
const rssMiB = () => MiB(process.resourceUsage().maxRSS);

/** Random token ids (seeded); targets are the next tokens, the last position ignored. */
export function benchBatch(spec: StepSpec, vocab: number): BenchBatch {
  const rng = new Rng(spec.seed + 1);
  const { batch: B, seq: T } = spec;
  const ids = Int32Array.from({ length: B * T }, () => rng.nextU32() % vocab);
  const prompt = Int32Array.from({ length: spec.genPrompt }, () => rng.nextU32() % vocab);
  return { ids, targets: nextTokenTargets(ids, B, T), prompt, shape: [B, T] };
}

/** Scalar data fields of the backend object (own and inherited), e.g. threads or a relaxed-SIMD flag. */
function backendInfo(k: Backend): Record<string, unknown> {
  const info: Record<string, unknown> = {};
  for (let o: object | null = k; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === "name" || key === "constructor" || key in info) continue;
      const v = (k as unknown as Record<string, unknown>)[key];
      if (["string", "number", "boolean"].includes(typeof v)) info[key] = v;
    }
  }
  return info;
}

export function runStep(spec: StepSpec): ChildResult {
  const dtype = spec.baseDtype ?? "f32";
  // a 16-bit base is rounded as each weight is made, so the f32 model never exists whole (peak memory is
  // what a 16-bit checkpoint loaded in its own dtype costs); castBaseWeights below then has nothing to do
  const random = randomParams(spec.seed);
  const params: ParamFactory =
    dtype === "f32"
      ? random
      : (name, shape, kind) => {
          const t = random(name, shape, kind);
          return kind === "weight" || kind === "embedding" ? t.toHalf(dtype) : t;
        };
  const model = buildModel(spec.config, params);
  applyLoRA(
    model,
    {
      r: spec.r,
      lora_alpha: spec.alpha,
      lora_dropout: 0,
      target_modules: spec.targets,
      use_rslora: false,
      init_lora_weights: true,
    },
    { rng: new Rng(spec.seed + 2) },
  );
  castBaseWeights(model, dtype); // --base-dtype: the frozen weights' storage
  const trainable = model.trainableParameters();
  const initial = new Map(trainable.map(([name, t]) => [name, t.data.slice()]));
  const data = benchBatch(spec, model.vocabSize);
  const opt = createOptimizer("adamw", trainable, { lr: spec.lr });

  const losses: number[] = [];
  const step = () => {
    const t0 = performance.now();
    const loss = languageModelLoss(model, data.ids, data.shape, data.targets);
    losses.push(loss.data[0]!);
    backward(loss);
    opt.step();
    opt.zeroGrad();
    return performance.now() - t0;
  };
  const shapes = spec.gemm ? recordMatmuls(step) : null;
  for (let i = shapes ? 1 : 0; i < spec.warmup; i++) step();
  const stepMs = Array.from({ length: spec.steps }, step);
  const medianMs = median(stepMs);
  const tokensPerStep = spec.batch * spec.seq;
  const report = parameterReport(model);
  const train = {
    tokensPerStep,
    stepMs,
    medianMs,
    tokPerSec: (tokensPerStep * 1000) / medianMs,
    losses,
    peakRssMiB: rssMiB(),
    trainableParams: report.trainable,
    totalParams: report.total,
  };

  let gen: GenResult | null = null;
  if (spec.genTokens > 0) {
    const tokens: number[] = [];
    const t0 = performance.now();
    let prefillMs = 0;
    for (const id of generate(model, [...data.prompt], { maxTokens: spec.genTokens, temperature: 0 })) {
      if (tokens.length === 0) prefillMs = performance.now() - t0;
      tokens.push(id);
    }
    const ms = performance.now() - t0;
    gen = {
      promptTokens: spec.genPrompt,
      newTokens: tokens.length,
      ms,
      prefillMs,
      tokPerSec: (tokens.length * 1000) / ms,
      tokens,
    };
  }

  const gemm = shapes ? gemmTable(shapes, spec.gemmMinMs) : undefined;
  if (spec.weightsOut) writeBenchWeights(spec.weightsOut, model.namedParameters(), initial, data);
  const k = backend();
  return {
    side: "ours",
    threads: Number(process.env.LORA_THREADS ?? 1),
    backend: k.name,
    backendInfo: backendInfo(k),
    version: `node ${process.version}`,
    train,
    gen,
    ...(gemm ? { gemm } : {}),
    finalRssMiB: rssMiB(),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const arg = process.argv[2];
  if (!arg) {
    console.error("usage: node dist/bench/train-step.js '<StepSpec JSON>'");
    process.exit(2);
  }
  // Exit explicitly: a backend's worker threads must not keep the child alive.
  process.stdout.write(`${JSON.stringify(runStep(JSON.parse(arg) as StepSpec))}\n`, () => process.exit(0));
}
