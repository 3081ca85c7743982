/**
 * `lora experiment`: the paper's experiments on the user's model and data (src/experiment/), each run
 * through the fine-tuning job in memory. Results are stored after every run, so a rerun skips what is
 * done; the report, its charts (SVG and PNG) and results.json go into --out/NAME/.
 */
import fs from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { EXPERIMENTS, type ExperimentName, planRuns } from "../experiment/experiments.js";
import { experimentReport } from "../experiment/report.js";
import type { RunOutcome } from "../experiment/runs.js";
import { runOne } from "../experiment/runs.js";
import { readJson } from "../io/node/json-file.js";
import { loadModelFolder } from "../io/node/model-folder.js";
import { writeFileAtomic } from "../io/node/safetensors-file.js";
import { backend } from "../kernels/index.js";
import { nativeIsa } from "../kernels/node/index.js";
import { type BaseDType, resolveBaseDtype } from "../nn/base-dtype.js";
import { type Command, num, required, str, UsageError, type Values } from "./command.js";
import { loadModel, readRows, tokenizeRows } from "./load.js";
import { peakMemoryMeter } from "./peak-memory.js";

/** What this machine is, for the report: the CPU, its cores, and the kernels that ran. */
function machine(): string {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  const b = backend().name;
  return `${cpu}, ${cpus().length} cores, ${b === "native" ? `native ${nativeIsa()}` : b} kernels, Node ${process.versions.node}`;
}

async function runExperiment(v: Values): Promise<void> {
  const name = (v._ as string[])[0]!;
  if (name !== "all" && !EXPERIMENTS.includes(name as ExperimentName))
    throw new UsageError(`unknown experiment "${name}"; experiments: ${EXPERIMENTS.join(", ")}, all`);
  const names: ExperimentName[] = name === "all" ? [...EXPERIMENTS] : [name as ExperimentName];
  const modelDir = required(v, "model", "experiment");
  const dataPath = required(v, "data", "experiment");
  const out = required(v, "out", "experiment");
  const seeds = num(v, "seeds", 3, { int: true, min: 1 });
  const steps = num(v, "steps", 100, { int: true, min: 1 });
  const seqLen = num(v, "seq-len", 128, { int: true, min: 2 });
  const baseDtype: BaseDType = resolveBaseDtype((str(v, "base-dtype") ?? "f32") as "f32");
  const loaded = loadModel(modelDir, undefined, { baseDtype });
  const tokenize = (rows: ReturnType<typeof readRows>) =>
    tokenizeRows(rows, loaded.tokenizer, {
      maskPrompt: false,
      maxLen: seqLen,
      source: dataPath,
      vocabSize: loaded.model.vocabSize,
    }).rows.filter((r) => r.ids.length >= 2);
  // held-out rows: the data's valid split, else its last tenth (at most 64 rows)
  let train = tokenize(readRows(dataPath, "train", ["train"]));
  let valid: typeof train;
  let heldOut: string;
  try {
    valid = tokenize(readRows(dataPath, "valid")).slice(0, 64);
    heldOut = "the first 64 rows of its valid split";
  } catch {
    const n = Math.min(64, Math.max(1, Math.floor(train.length / 10)));
    valid = train.slice(train.length - n);
    train = train.slice(0, train.length - n);
    heldOut = `its last ${n} rows, held out`;
  }
  if (train.length === 0) throw new UsageError(`${dataPath}: no training rows of 2 tokens or more`);
  const inputs = {
    loadModel: () => {
      const f = loadModelFolder(modelDir, { baseDtype });
      return { model: f.model, config: f.config };
    },
    train,
    valid,
    padId: loaded.tokenizer?.padId ?? 0,
    base: {
      steps: String(steps),
      lr: str(v, "lr") ?? "2e-3",
      "batch-size": str(v, "batch-size") ?? "8",
      "eval-every": "0",
      "save-every": String(steps),
      "val-batches": "0",
      "base-dtype": baseDtype,
    },
    meter: peakMemoryMeter(),
  };
  const readRuns = (path: string) =>
    (fs.existsSync(path) ? (readJson(path)!.runs as Record<string, RunOutcome>) : {}) ?? {};
  // out/NAME is rewritten on every run (that is how a run resumes), so only a folder this command made
  // is taken: refused before anything trains, rather than a user's report.md or chart replaced
  for (const exp of names) {
    const dir = join(out, exp);
    if (!fs.existsSync(dir)) continue;
    const results = join(dir, "results.json");
    const mine =
      fs.statSync(dir).isDirectory() &&
      (fs.readdirSync(dir).length === 0 || (fs.existsSync(results) && readJson(results)?.experiment === exp));
    if (!mine)
      throw new UsageError(
        `${dir} holds files that lora experiment ${exp} did not write (it has no results.json of "${exp}"); give another --out, or move them away`,
      );
  }
  let warm = false;
  for (const exp of names) {
    const dir = join(out, exp);
    fs.mkdirSync(dir, { recursive: true });
    const resultsPath = join(dir, "results.json");
    const stored = readRuns(resultsPath);
    const planned = planRuns(exp, loaded.model, seeds);
    // delta analyses the rank experiment's adapters: take them from rank/results.json where it has them
    const shared = exp === "delta" ? readRuns(join(out, "rank", "results.json")) : {};
    for (const p of planned)
      if (!stored[p.key]?.delta && shared[p.key]?.delta) stored[p.key] = shared[p.key]!;
    const isDone = (p: (typeof planned)[number]) => !!stored[p.key] && (!p.delta || !!stored[p.key]!.delta);
    const done = planned.filter(isDone).length;
    if (done > 0)
      console.error(
        `${exp}: ${done} of ${planned.length} runs already done in ${resultsPath}${exp === "delta" ? " or the rank experiment's" : ""}; skipping them`,
      );
    for (const [i, p] of planned.entries()) {
      if (isDone(p)) continue;
      if (exp === "full" && !warm) {
        // one unrecorded step first, so the first measured run's memory and time leave out one-time costs
        await runOne({ ...inputs, meter: undefined }, "warm-up", {
          ...p.settings,
          steps: "1",
          "save-every": "1",
        });
      }
      warm = true;
      const t = performance.now();
      process.stderr.write(`[${exp} ${i + 1}/${planned.length}] ${p.key} ... `);
      stored[p.key] = await runOne(inputs, p.key, p.settings, { probe: p.probe, delta: p.delta });
      process.stderr.write(
        `held-out loss ${stored[p.key]!.valLoss.toFixed(4)} (${((performance.now() - t) / 1000).toFixed(1)} s)\n`,
      );
      writeFileAtomic(resultsPath, `${JSON.stringify({ experiment: exp, runs: stored }, null, 1)}\n`);
    }
    const note = str(v, "machine-note");
    const extra = ["lr", "batch-size", "seq-len", "base-dtype"].filter((f) => str(v, f) !== undefined);
    const command = `lora experiment ${name} --model ${modelDir} --data ${dataPath} --out ${out} --seeds ${seeds} --steps ${steps}${extra.map((f) => ` --${f} ${str(v, f)}`).join("")}${note ? ` --machine-note "${note}"` : ""}`;
    const report = experimentReport(
      exp,
      planned.map((p) => stored[p.key]!),
      {
        command,
        machine: note ? `${machine()} (${note})` : machine(),
        model: modelDir,
        data: `${dataPath} (${train.length} training rows; held out: ${heldOut}, ${valid.length} rows; seq-len ${seqLen})`,
        steps,
        seeds,
        baseDtype,
      },
    );
    const [{ chartSvg }, { svgToPng }] = [
      await import("../plot/render.js"),
      await import("../plot/node/png.js"),
    ];
    for (const c of report.charts) {
      const svg = await chartSvg(c.spec);
      writeFileAtomic(join(dir, `${c.name}.svg`), svg);
      writeFileAtomic(join(dir, `${c.name}.png`), svgToPng(svg));
    }
    writeFileAtomic(join(dir, "report.md"), report.markdown);
    writeFileAtomic(
      resultsPath,
      `${JSON.stringify({ experiment: exp, summary: report.results, runs: stored }, null, 1)}\n`,
    );
    console.log(
      `wrote ${join(dir, "report.md")} (${report.charts.map((c) => `${c.name}.svg`).join(", ")}, results.json)`,
    );
  }
}

export const experimentCommand: Command = {
  name: "experiment",
  summary:
    "Reproduce the LoRA paper's experiments (targets: Table 5; rank: Table 6 and subspaces; full: against full fine-tuning; delta: Table 7) on a model and data.",
  usage:
    "lora experiment targets|rank|full|delta|all --model DIR --data PATH --out DIR [--seeds 3] [--steps 100]",
  positionals: { valueName: "NAME (targets, rank, full, delta or all)", min: 1, max: 1 },
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description: "model folder (Llama-style: separate q, k, v, o)",
    },
    data: {
      type: "string",
      valueName: "PATH",
      description: "data: .txt, .jsonl or a folder (valid.jsonl is held out)",
    },
    out: {
      type: "string",
      valueName: "DIR",
      description: "folder for NAME/report.md, charts and results.json",
    },
    seeds: { type: "string", valueName: "N", description: "seeds per configuration (default 3)" },
    steps: { type: "string", valueName: "N", description: "optimizer steps per run (default 100)" },
    lr: { type: "string", valueName: "LR", description: "learning rate (default 2e-3)" },
    "batch-size": { type: "string", valueName: "N", description: "rows per step (default 8)" },
    "seq-len": { type: "string", valueName: "N", description: "tokens per row (default 128)" },
    "base-dtype": {
      type: "string",
      valueName: "DTYPE",
      description: "base weights: f32 (default), bf16, f16",
    },
    "machine-note": {
      type: "string",
      valueName: "TEXT",
      description: "what the reports add about the machine (its CPU's generation, other load on it)",
    },
  },
  examples: [
    "lora experiment targets --model assets/base-model --data assets/task --out docs/experiments/base-model",
    "lora experiment all --model ../shared/data/stories260K-hf --data ../shared/data/tinyshakespeare/input.txt --out exp",
  ],
  run: runExperiment,
};
