/** `lora plot`: the loss curves of one or more training runs, as SVG, PNG or a chart in the terminal. */
import fs from "node:fs";
import { basename, extname, join, relative, resolve } from "node:path";
import { readTextFile } from "../io/node/read-file.js";
import { writeFileAtomic } from "../io/node/safetensors-file.js";
import { parseMetrics, type RunMetrics } from "../plot/metrics.js";
import { lossChartText } from "../plot/text-chart.js";
import { type Command, str, UsageError, type Values } from "./command.js";

/** Vega and resvg load only when a chart is drawn: they add a second to every command's start. */
const chartSvg = async (runs: readonly RunMetrics[]) =>
  (await import("../plot/loss-chart.js")).lossChartSvg(runs);

/** The metrics file of a run folder, or the file itself when given one. */
function metricsFile(path: string): string {
  const stat = fs.statSync(path, { throwIfNoEntry: false });
  if (!stat)
    throw new UsageError(`${path}: not found; give a run folder of 'lora train' (it holds metrics.jsonl)`);
  const file = stat.isDirectory() ? join(path, "metrics.jsonl") : path;
  if (!fs.existsSync(file))
    throw new UsageError(`${path}: no metrics.jsonl here; give the --out folder of a 'lora train' run`);
  return file;
}

/** Each run's metrics, named by its folder (by its path where two folders share a name). */
export function readRuns(paths: readonly string[]): RunMetrics[] {
  const dirs = paths.map((p) => (extname(p) === ".jsonl" ? resolve(p, "..") : resolve(p)));
  const names = dirs.map((d) => basename(d));
  const unique = new Set(names).size === names.length;
  return paths.map((p, i) => {
    const file = metricsFile(p);
    const name = unique ? names[i]! : relative(process.cwd(), dirs[i]!) || ".";
    const { skipped, ...run } = parseMetrics(readTextFile(file), name);
    if (skipped > 0) console.error(`warning: ${file}: skipped ${skipped} line(s) that are not metrics rows`);
    return run;
  });
}

/** Writes `loss.svg` of a run folder from its metrics.jsonl (`lora train` does, at each checkpoint). */
export async function writeLossSvg(runDir: string, name = basename(resolve(runDir))): Promise<void> {
  const run = parseMetrics(readTextFile(join(runDir, "metrics.jsonl")), name);
  writeFileAtomic(join(runDir, "loss.svg"), await chartSvg([run]));
}

export const plotCommand: Command = {
  name: "plot",
  summary: "Plot training and validation loss (and the learning rate) of one or more runs.",
  usage: "lora plot RUN_DIR... [--out FILE.svg|FILE.png [--overwrite]]",
  positionals: { valueName: "RUN_DIR (a 'lora train' --out folder, or its metrics.jsonl)", min: 1 },
  flags: {
    out: {
      type: "string",
      valueName: "FILE",
      description: "write the chart to FILE.svg or FILE.png (default: a text chart on the terminal)",
    },
    overwrite: { type: "boolean", description: "replace an existing --out file" },
  },
  examples: [
    "lora plot ./run",
    "lora plot ./run-r4 ./run-r16 --out compare.svg",
    "lora plot ./run --out loss.png",
  ],
  async run(v: Values) {
    const runs = readRuns(v._ as string[]);
    const out = str(v, "out");
    if (out === undefined) {
      const width = process.stdout.columns ?? 80;
      console.log(lossChartText(runs, { width, color: process.stdout.isTTY === true }));
      return;
    }
    const kind = extname(out).toLowerCase();
    if (kind !== ".svg" && kind !== ".png")
      throw new UsageError(`--out ${out}: give a file ending in .svg or .png`);
    if (fs.existsSync(out) && !v.overwrite)
      throw new UsageError(`--out ${out} already exists; pass --overwrite to replace it`);
    const svg = await chartSvg(runs);
    writeFileAtomic(out, kind === ".svg" ? svg : (await import("../plot/node/png.js")).svgToPng(svg));
    const points = runs.reduce((n, r) => n + r.train.length + r.val.length, 0);
    console.log(`wrote ${out}: ${runs.length} run(s), ${points} points`);
  },
};
