/**
 * One training run of an experiment: the fine-tuning job (train/job.ts) on a fresh copy of the model,
 * in memory, reduced to what the reports need: the final held-out loss, the validation curve,
 * the trainable parameters, the speed, the memory, the size of the saved result, the A matrix of one
 * module for the subspace analysis, and Section 7.3's numbers for every adapted q_proj.
 */
import { loraLayers } from "../lora/inject.js";
import type { CausalLM } from "../models/index.js";
import type { TokenizedRow } from "../train/data.js";
import { planFineTune, runFineTune } from "../train/job.js";
import { MemoryRunStorage } from "../train/run-storage.js";
import { type SettingValues, settingsFrom } from "../train/settings.js";
import { type DeltaNorms, deltaNorms } from "./delta.js";

/**
 * The process's peak memory, measured by the shell (the CLI: the kernel's resident-set high-water
 * mark, reset at the start of each run); the core cannot read it.
 */
export interface PeakMemory {
  /** How it is measured, for the report. */
  method: string;
  /** Starts a new high-water mark; returns the resident bytes now. */
  reset(): number;
  /** The highest resident bytes since the last reset. */
  peak(): number;
}

export interface ExperimentInputs {
  /** A fresh, unadapted copy of the base model for each run. */
  loadModel: () => { model: CausalLM; config: Record<string, unknown> };
  train: readonly TokenizedRow[];
  valid: readonly TokenizedRow[];
  padId: number;
  /** Settings every run shares (steps, lr, batch size, seq-len, base dtype...), by their table names. */
  base: SettingValues;
  meter?: PeakMemory;
}

/** Section 7.3's numbers for one adapted q_proj. */
export interface LayerDelta extends DeltaNorms {
  path: string;
}

export interface RunOutcome {
  key: string;
  settings: SettingValues;
  /** The held-out loss at the end of the run. */
  valLoss: number;
  /** [step, held-out loss] at each evaluation. */
  valCurve: [number, number][];
  trainable: number;
  /** Seconds per optimizer step, and tokens per second, of the training steps alone. */
  stepS: number;
  tokensPerS: number;
  /** Bytes of the optimizer's state (AdamW: two moments per trainable parameter, f32). */
  optimizerBytes: number;
  /** The A [r, in] of `probe` (a module path), row-major, when the run adapted it. */
  probeA?: { path: string; r: number; k: number; values: number[] };
  /** Resident bytes at the start of training and their peak during it (absent without a meter). */
  memory?: { method: string; startBytes: number; peakBytes: number };
  /** Bytes of each file of the saved result (the adapter, or --full's model folder). */
  outputBytes?: Record<string, number>;
  /** Section 7.3's numbers for each adapted q_proj (the rank experiment's runs). */
  delta?: LayerDelta[];
}

/** How many random direction pairs the delta analysis averages over (seeded by the run's seed). */
export const RANDOM_DRAWS = 10;

/** Section 7.3's numbers for every LoRA layer on a q_proj of the trained model. */
function qDeltas(trained: CausalLM, seed: number): LayerDelta[] {
  return loraLayers(trained)
    .filter(([p]) => p.endsWith(".q_proj"))
    .map(([path, l]) => {
      const [out, inF] = l.base_layer.weight.shape as [number, number];
      const w0 = l.base_layer.weight.toFloat32().data;
      return {
        path,
        ...deltaNorms(w0, l.lora_B.data, l.lora_A.data, out, l.r, inF, l.scaling, {
          draws: RANDOM_DRAWS,
          seed,
        }),
      };
    });
}

const byteLength = (f: Uint8Array | string) =>
  typeof f === "string" ? new TextEncoder().encode(f).length : f.length;

/**
 * Trains one configuration and measures it. `probe` names a module whose A is kept; `delta` asks for
 * Section 7.3's numbers on every adapted q_proj.
 */
export async function runOne(
  inputs: ExperimentInputs,
  key: string,
  settings: SettingValues,
  analyse: { probe?: string; delta?: boolean } = {},
): Promise<RunOutcome> {
  const { probe } = analyse;
  const { model, config } = inputs.loadModel();
  const merged = { ...inputs.base, ...settings };
  const plan = planFineTune({
    settings: settingsFrom(merged),
    model,
    config,
    train: inputs.train,
    valid: inputs.valid,
    padId: inputs.padId,
    baseModelName: "experiment",
  });
  const storage = new MemoryRunStorage();
  const startBytes = inputs.meter?.reset();
  const result = (await runFineTune(plan, storage))!;
  const peakBytes = inputs.meter?.peak();
  const valCurve = storage.metrics
    .filter((m) => typeof m.val_loss === "number")
    .map((m) => [m.step as number, m.val_loss as number] as [number, number]);
  const trainable = plan.report.trainable;
  const layer = probe ? loraLayers(plan.trained).find(([p]) => p === probe)?.[1] : undefined;
  return {
    key,
    settings,
    valLoss: result.valLoss ?? Number.NaN,
    valCurve,
    trainable,
    stepS: result.trainS / Math.max(1, result.steps),
    tokensPerS: result.tokens / Math.max(result.trainS, 1e-9),
    optimizerBytes: trainable * 4 * (merged.optimizer === "sgd" ? 0 : 2),
    memory:
      inputs.meter && startBytes !== undefined && peakBytes !== undefined
        ? { method: inputs.meter.method, startBytes, peakBytes }
        : undefined,
    outputBytes: Object.fromEntries(
      Object.entries(storage.outputs ?? {}).map(([n, f]) => [n, byteLength(f)]),
    ),
    delta: analyse.delta ? qDeltas(plan.trained, Number(settings.seed ?? 0)) : undefined,
    probeA: layer
      ? {
          path: probe!,
          r: layer.lora_A.shape[0]!,
          k: layer.lora_A.shape[1]!,
          values: Array.from(layer.lora_A.data),
        }
      : undefined,
  };
}

/** mean and half the range (min to max) of the values: the spread over seeds the reports show. */
export function meanSpread(values: readonly number[]): {
  mean: number;
  spread: number;
  min: number;
  max: number;
} {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const min = Math.min(...values);
  const max = Math.max(...values);
  return { mean, spread: (max - min) / 2, min, max };
}
