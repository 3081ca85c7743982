/**
 * The loss chart of one or more runs, as a Vega-Lite spec rendered to SVG by Vega (both
 * browser-safe): training and validation loss against step and against tokens, and the learning
 * rate against step. Runs are told apart by colour, training and validation by dash.
 */
import { parse, View } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { RunMetrics } from "./metrics.js";

/** One plotted point: the rows Vega-Lite reads. */
interface Row {
  run: string;
  split: "train" | "validation";
  step: number;
  tokens: number;
  loss: number;
  lr?: number;
}

function rows(runs: readonly RunMetrics[]): Row[] {
  return runs.flatMap((r) => [
    ...r.train.map((p) => ({ run: r.name, split: "train" as const, ...p })),
    ...r.val.map((p) => ({ run: r.name, split: "validation" as const, ...p })),
  ]);
}

const WIDTH = 360;
const HEIGHT = 220;

/** Loss against `x`: the training curve as a thin line, the validation curve as a line with points. */
function lossPanel(x: "step" | "tokens", title: string) {
  const color = { field: "run", type: "nominal", title: "run" } as const;
  const dash = { field: "split", type: "nominal", title: null } as const;
  const y = { field: "loss", type: "quantitative", title: "loss", scale: { zero: false } } as const;
  const xEnc = { field: x, type: "quantitative", title: x } as const;
  return {
    title,
    width: WIDTH,
    height: HEIGHT,
    layer: [
      {
        name: `train_loss_by_${x}`,
        transform: [{ filter: "datum.split === 'train'" }],
        mark: { type: "line", strokeWidth: 1.2, opacity: 0.75 },
        encoding: { x: xEnc, y, color, strokeDash: dash, detail: { field: "run" } },
      },
      {
        name: `val_loss_by_${x}`,
        transform: [{ filter: "datum.split === 'validation'" }],
        mark: { type: "line", strokeWidth: 2, point: true },
        encoding: { x: xEnc, y, color, strokeDash: dash, detail: { field: "run" } },
      },
    ],
  };
}

/** The Vega-Lite spec of the chart. */
export function lossChartSpec(runs: readonly RunMetrics[]): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    data: { values: rows(runs) as unknown as Record<string, unknown>[] },
    columns: 2,
    concat: [
      lossPanel("step", "loss by step"),
      lossPanel("tokens", "loss by tokens trained"),
      {
        name: "lr_by_step",
        title: "learning rate",
        width: WIDTH,
        height: HEIGHT / 2,
        transform: [{ filter: "datum.split === 'train'" }],
        mark: { type: "line", strokeWidth: 1.2 },
        encoding: {
          x: { field: "step", type: "quantitative", title: "step" },
          y: { field: "lr", type: "quantitative", title: "lr", axis: { format: ".1e" } },
          color: { field: "run", type: "nominal", title: "run" },
        },
      },
    ],
    config: { font: "DejaVu Sans, Helvetica, Arial, sans-serif", background: "white" },
  } as TopLevelSpec;
}

/** The chart as an SVG document. */
export async function lossChartSvg(runs: readonly RunMetrics[]): Promise<string> {
  const view = new View(parse(compile(lossChartSpec(runs)).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
