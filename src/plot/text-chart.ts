/**
 * A compact loss chart for a terminal (asciichart): the training loss of each run over a shared
 * step axis, binned to the width given, then each run's validation losses and its last values.
 */
import asciichart from "asciichart";
import type { RunMetrics, TrainPoint } from "./metrics.js";

/**
 * Each run's mean training loss in `columns` equal bins of the step range [1, lastStep] shared by
 * all runs; a run that ends early ends early in the chart. A bin holding no step (fewer steps than
 * columns) takes the nearest step before it, so a short run is drawn step by step.
 */
export function binLoss(runs: readonly RunMetrics[], columns: number): number[][] {
  const last = Math.max(...runs.flatMap((r) => r.train.map((p) => p.step)));
  const cols = Math.max(1, Math.min(columns, last));
  return runs.map((r) => {
    const sums = new Float64Array(cols);
    const counts = new Uint32Array(cols);
    const column = (p: TrainPoint) => Math.min(cols - 1, Math.floor(((p.step - 1) / last) * cols));
    for (const p of r.train) {
      sums[column(p)]! += p.loss;
      counts[column(p)]!++;
    }
    const end = r.train.length ? column(r.train[r.train.length - 1]!) : -1;
    const out: number[] = [];
    let prev = Number.NaN;
    for (let c = 0; c <= end; c++) {
      if (counts[c]) prev = sums[c]! / counts[c]!;
      out.push(prev);
    }
    return out.filter((v) => !Number.isNaN(v));
  });
}

const fixed = (v: number) => v.toFixed(4);

/** At most `n` items, evenly spread, the first and the last included. */
function spread<T>(items: readonly T[], n: number): T[] {
  if (items.length <= n) return [...items];
  return Array.from({ length: n }, (_, i) => items[Math.round((i * (items.length - 1)) / (n - 1))]!);
}

export interface TextChartOptions {
  /** Terminal columns (the chart's width, labels included). */
  width?: number;
  height?: number;
  /** ANSI colours, one per run, when the terminal shows them. */
  color?: boolean;
}

const COLORS = [asciichart.blue, asciichart.red, asciichart.green, asciichart.magenta, asciichart.cyan];

/** The chart and a summary line per run, as text. */
export function lossChartText(runs: readonly RunMetrics[], opts: TextChartOptions = {}): string {
  const withSteps = runs.filter((r) => r.train.length > 0);
  if (withSteps.length === 0) return "no training steps recorded yet";
  const labelWidth = 10;
  const series = binLoss(withSteps, Math.max(10, (opts.width ?? 80) - labelWidth - 2));
  const last = Math.max(...withSteps.map((r) => r.train[r.train.length - 1]!.step));
  const colors = opts.color ? withSteps.map((_, i) => COLORS[i % COLORS.length]!) : undefined;
  const chart = asciichart.plot(series, {
    height: opts.height ?? 12,
    colors,
    format: (x: number) => fixed(x).padStart(labelWidth - 1),
  });
  const paint = (i: number, s: string) => (colors ? `${colors[i]}${s}${asciichart.reset}` : s);
  const lines = [`training loss, steps 1-${last}`, chart];
  withSteps.forEach((r, i) => {
    const end = r.train[r.train.length - 1]!;
    const val = r.val.length ? r.val[r.val.length - 1]! : null;
    lines.push(
      `${paint(i, `── ${r.name}`)}: step ${end.step}, train loss ${fixed(end.loss)}, lr ${end.lr.toExponential(2)}` +
        (val ? `, validation loss ${fixed(val.loss)} at step ${val.step}` : ", no validation"),
    );
    if (r.val.length > 1)
      lines.push(
        `   validation: ${spread(r.val, 10)
          .map((v) => `${v.step}: ${v.loss.toFixed(3)}`)
          .join(", ")}`,
      );
  });
  return lines.join("\n");
}
