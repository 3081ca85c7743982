/**
 * The training loop, a plain function (mlx-lm style): batching, loss, evaluation and saving are
 * injected, and callbacks see every step. Pure and browser-safe: saving to disk is a callback.
 *
 * One optimizer step = `gradAccum` micro-batches. Each micro-batch's summed token loss is divided
 * by the step's total target count, so the gradient is that of the mean loss over every target
 * token of the step, however it is split into micro-batches.
 */

import { scale } from "../autograd/ops.js";
import { backward } from "../autograd/tape.js";
import type { CausalLM } from "../models/index.js";
import type { Rng, RngState } from "../tensor/random.js";
import type { Tensor } from "../tensor/tensor.js";
import type { Batch, DataPosition } from "./batches.js";
import { languageModelLoss } from "./loss.js";
import { clipGradNorm, type Optimizer, type OptimizerState } from "./optim.js";
import { learningRate, type ScheduleKind } from "./schedule.js";

/** Summed (not mean) loss over the batch's target tokens, as a scalar tensor. */
export type LossFn = (model: CausalLM, batch: Batch) => Tensor;

export const tokenLossSum: LossFn = (model, batch) =>
  languageModelLoss(model, batch.ids, batch.shape, batch.targets, "sum");

/** What a checkpoint must hold, besides the weights, to continue a run bit for bit. */
export interface TrainProgress {
  /** Optimizer steps done. */
  step: number;
  /** Target tokens trained on so far. */
  tokens: number;
  /** Seconds of training so far (loading excluded). */
  elapsedS: number;
  /** Where the next batch starts. */
  data: DataPosition;
  /** State of the random stream that draws dropout masks, if any. */
  rng: { s: RngState; spare: number | null } | null;
}

export interface Snapshot extends TrainProgress {
  optimizer: OptimizerState;
}

export interface StepInfo {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  /** Target tokens this step and trained so far. */
  stepTokens: number;
  tokens: number;
  gradNorm: number;
  elapsedS: number;
  /** Seconds spent in training steps alone (evaluation and saving excluded): for rates and ETAs. */
  trainS: number;
}

export interface EvalInfo {
  step: number;
  valLoss: number;
  elapsedS: number;
}

export interface TrainOptions {
  optimizer: Optimizer;
  /** Yields micro-batches and reports where it stands (a Batcher). */
  data: { next(): Batch; readonly position: DataPosition };
  steps: number;
  gradAccum?: number;
  schedule?: { kind: ScheduleKind; warmup: number; minLr?: number };
  /** Peak learning rate (default: the optimizer's lr). */
  lr?: number;
  /** Clip the global gradient norm to this (0 = off). */
  maxGradNorm?: number;
  loss?: LossFn;
  /** Held-out loss, run in eval mode every `evalEvery` steps, before the first step and at the end. */
  evaluate?: () => number;
  evalEvery?: number;
  /** Called every `saveEvery` steps and after the last one; may be async. */
  save?: (s: Snapshot) => void | Promise<void>;
  saveEvery?: number;
  /** The random stream of the model's dropout masks, saved in snapshots. */
  rng?: Rng;
  /** Continue from a checkpoint's progress (the weights and optimizer state must be loaded already). */
  resume?: TrainProgress;
  /** Called after each step and each evaluation; may be async (a metrics write), and is awaited. */
  onStep?: (info: StepInfo) => void | Promise<void>;
  onEval?: (info: EvalInfo) => void | Promise<void>;
  /**
   * Asked after each step once the page or terminal has had its turn (so a stop request that arrived
   * during the step counts): true ends the run there, with a checkpoint of that step (`save`), and no
   * final evaluation. A resume from it continues exactly where the run stopped.
   */
  shouldStop?: () => boolean;
  /** Clock in seconds (injectable for tests). */
  now?: () => number;
}

export interface TrainResult {
  steps: number;
  tokens: number;
  elapsedS: number;
  /** Loss of the last step, and the last held-out loss (null without evaluate). */
  loss: number;
  valLoss: number | null;
  /** Seconds of this call spent in training steps (evaluation and saving excluded). */
  trainS: number;
  /** True when `shouldStop` ended the run before its last step. */
  stopped?: boolean;
}

/**
 * A loss, gradient, weight or optimizer moment that is no longer finite: training stops, and nothing
 * of that step is saved (a loss or gradient is caught before the weights change).
 */
export class DivergedError extends Error {
  override name = "DivergedError";
  constructor(
    readonly step: number,
    what: string,
    when = "stopped before updating the weights",
  ) {
    super(`${what} at step ${step}; ${when}`);
  }
}

/** The name of the first tensor (or buffer) holding a NaN or an infinity, or null. */
function firstNonFinite(named: Iterable<[string, ArrayLike<number>]>): string | null {
  for (const [name, data] of named) {
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return name;
  }
  return null;
}

const clock = () => performance.now() / 1000;
const nextTick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

export async function train(model: CausalLM, opts: TrainOptions): Promise<TrainResult> {
  const { optimizer, data, steps } = opts;
  const accum = opts.gradAccum ?? 1;
  const lossFn = opts.loss ?? tokenLossSum;
  const baseLr = opts.lr ?? optimizer.lr;
  const schedule = opts.schedule ?? { kind: "constant", warmup: 0 };
  const now = opts.now ?? clock;
  if (!Number.isInteger(steps) || steps < 1)
    throw new Error(`steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(accum) || accum < 1)
    throw new Error(`gradAccum must be a positive integer, got ${accum}`);

  const start = opts.resume ?? { step: 0, tokens: 0, elapsedS: 0, data: data.position, rng: null };
  if (opts.resume?.rng && opts.rng) opts.rng.setState(opts.resume.rng);
  let { step, tokens } = start;
  const t0 = now() - start.elapsedS;
  const elapsed = () => now() - t0;
  const params = optimizer.params;
  let loss = Number.NaN;
  let valLoss: number | null = null;
  let trainS = 0; // this call's time in steps

  const evaluate = async () => {
    if (!opts.evaluate) return;
    model.eval();
    valLoss = opts.evaluate();
    model.train();
    await opts.onEval?.({ step, valLoss, elapsedS: elapsed() });
  };
  // weights are checked at every snapshot, so nothing non-finite is saved; after every step too when
  // that is cheap (LoRA's few matrices), so a bad update stops the run where it happened
  const checkWeights = () => {
    const bad = firstNonFinite(params.map(([name, t]) => [name, t.data] as [string, Float32Array]));
    if (bad)
      throw new DivergedError(
        step,
        `the update made ${bad} non-finite (the learning rate ${optimizer.lr} is too high for this step)`,
        "this step is not saved",
      );
  };
  const checkEachStep = params.reduce((n, [, t]) => n + t.size, 0) <= 1 << 24;
  const snapshot = (): Snapshot => {
    checkWeights();
    const state = optimizer.stateDict();
    const bad = firstNonFinite(
      Object.entries(state.buffers).flatMap(([p, bufs]) =>
        Object.entries(bufs).map(([b, d]) => [`${p}.${b}`, d] as [string, Float32Array]),
      ),
    );
    if (bad)
      throw new DivergedError(step, `the optimizer state ${bad} is not finite`, "this step is not saved");
    return {
      step,
      tokens,
      elapsedS: elapsed(),
      data: data.position,
      rng: opts.rng?.getState() ?? null,
      optimizer: state,
    };
  };

  if (step === 0) await evaluate();
  model.train();
  while (step < steps) {
    const stepStart = now();
    optimizer.lr = learningRate(schedule.kind, {
      base: baseLr,
      step,
      total: steps,
      warmup: schedule.warmup,
      minLr: schedule.minLr,
    });
    const batches = Array.from({ length: accum }, () => data.next());
    const stepTokens = batches.reduce((s, b) => s + b.tokens, 0);
    optimizer.zeroGrad();
    loss = 0;
    if (stepTokens > 0) {
      for (const batch of batches) {
        if (batch.tokens === 0) continue;
        const l = scale(lossFn(model, batch), 1 / stepTokens);
        loss += l.item();
        backward(l);
      }
    }
    if (!Number.isFinite(loss)) throw new DivergedError(step + 1, `the loss is ${loss}`);
    const gradNorm = clipGradNorm(params, opts.maxGradNorm ?? 0);
    if (!Number.isFinite(gradNorm)) throw new DivergedError(step + 1, `the gradient norm is ${gradNorm}`);
    optimizer.step();
    optimizer.zeroGrad();
    step++;
    if (checkEachStep) checkWeights();
    tokens += stepTokens;
    trainS += now() - stepStart;
    await opts.onStep?.({
      step,
      totalSteps: steps,
      loss,
      lr: optimizer.lr,
      stepTokens,
      tokens,
      gradNorm,
      elapsedS: elapsed(),
      trainS,
    });
    if (opts.evalEvery && step % opts.evalEvery === 0 && step < steps) await evaluate();
    if (opts.save && opts.saveEvery && step % opts.saveEvery === 0 && step < steps)
      await opts.save(snapshot());
    await nextTick(); // lets a progress bar draw, and a browser page stay responsive
    if (step < steps && opts.shouldStop?.()) {
      model.eval();
      // a step that was just checkpointed by --save-every is not written twice
      if (opts.save && !(opts.saveEvery && step % opts.saveEvery === 0)) await opts.save(snapshot());
      return { steps: step, tokens, elapsedS: elapsed(), loss, valLoss, trainS, stopped: true };
    }
  }
  await evaluate();
  model.eval();
  await opts.save?.(snapshot());
  return { steps: step, tokens, elapsedS: elapsed(), loss, valLoss, trainS };
}
