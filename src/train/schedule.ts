/**
 * Learning-rate schedules, as Hugging Face transformers' get_{constant,linear,cosine}_schedule_with_warmup:
 *
 *   warmup (step < warmup):  factor = step / max(1, warmup)            (so step 0 runs at lr 0)
 *   then constant:           factor = 1
 *        linear:             factor = max(0, (total - step) / max(1, total - warmup))
 *        cosine:             factor = max(0, 0.5 * (1 + cos(pi * progress))),
 *                            progress = (step - warmup) / max(1, total - warmup)
 *
 * lr = base * factor; after warmup it is floored at minLr (default 0). With warmup 0 the first
 * step runs at the full base lr. Pure.
 */

export type ScheduleKind = "constant" | "linear" | "cosine";
export const SCHEDULES: readonly ScheduleKind[] = ["constant", "linear", "cosine"];

export interface ScheduleArgs {
  /** The peak learning rate. */
  base: number;
  /** 0-based index of the step about to run. */
  step: number;
  /** Total number of optimizer steps. */
  total: number;
  /** Number of warmup steps (0 for none). */
  warmup: number;
  /** Floor of the decayed learning rate after warmup (default 0). */
  minLr?: number;
}

function fail(what: string): never {
  throw new Error(`learning-rate schedule: ${what}`);
}

/** The learning rate of step `a.step` (0-based). Steps past `total` stay at the final value. */
export function learningRate(kind: ScheduleKind, a: ScheduleArgs): number {
  const { base, step, total, warmup } = a;
  const minLr = a.minLr ?? 0;
  if (!SCHEDULES.includes(kind))
    fail(`unknown schedule "${String(kind)}"; available: ${SCHEDULES.join(", ")}`);
  if (typeof base !== "number" || !Number.isFinite(base) || base <= 0) {
    fail(`base lr must be a finite number > 0, got ${base}`);
  }
  if (!Number.isInteger(total) || total < 1) fail(`total steps must be an integer >= 1, got ${total}`);
  if (!Number.isInteger(warmup) || warmup < 0) fail(`warmup steps must be an integer >= 0, got ${warmup}`);
  if (warmup > total) fail(`warmup steps (${warmup}) exceed total steps (${total})`);
  if (!Number.isInteger(step) || step < 0) fail(`step must be an integer >= 0, got ${step}`);
  if (typeof minLr !== "number" || !Number.isFinite(minLr) || minLr < 0) {
    fail(`minLr must be a finite number >= 0, got ${minLr}`);
  }
  if (minLr > base) fail(`minLr (${minLr}) exceeds the base lr (${base})`);

  if (step < warmup) return base * (step / Math.max(1, warmup));
  let factor: number;
  switch (kind) {
    case "constant":
      factor = 1;
      break;
    case "linear":
      factor = Math.max(0, (total - step) / Math.max(1, total - warmup));
      break;
    case "cosine": {
      const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
      factor = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
      break;
    }
  }
  return Math.max(base * factor, minLr);
}
