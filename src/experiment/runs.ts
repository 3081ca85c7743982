/**
 * One training run of an experiment: the fine-tuning job (train/job.ts) on a fresh copy of the model,
 * in memory, reduced to what the reports need: the final held-out loss, the validation curve,
 * the trainable parameters, the speed, and the A matrix of one module for the subspace analysis.
 */
import { loraLayers } from "../lora/inject.js";
import type { CausalLM } from "../models/index.js";
import type { TokenizedRow } from "../train/data.js";
import { planFineTune, runFineTune } from "../train/job.js";
import { MemoryRunStorage } from "../train/run-storage.js";
import { type SettingValues, settingsFrom } from "../train/settings.js";

export interface ExperimentInputs {
  /** A fresh, unadapted copy of the base model for each run. */
  loadModel: () => { model: CausalLM; config: Record<string, unknown> };
  train: readonly TokenizedRow[];
  valid: readonly TokenizedRow[];
  padId: number;
  /** Settings every run shares (steps, lr, batch size, seq-len, base dtype...), by their table names. */
  base: SettingValues;
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
}

/** Trains one configuration and measures it. `probe` names a module whose A is kept. */
export async function runOne(
  inputs: ExperimentInputs,
  key: string,
  settings: SettingValues,
  probe?: string,
): Promise<RunOutcome> {
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
  const result = (await runFineTune(plan, storage))!;
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
