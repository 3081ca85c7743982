/**
 * `lora train`'s storage of a fine-tuning job, over its run folder: metrics.jsonl, checkpoints
 * written atomically (older ones pruned), the outputs, and loss.svg redrawn at each checkpoint and at
 * the end. A checkpoint is also the moment an --overwrite run replaces the previous one.
 */
import fs from "node:fs";
import { basename, join, resolve } from "node:path";
import { writeCheckpoint } from "../io/node/checkpoint-folder.js";
import { type ModelFolder, writeTokenizerFiles } from "../io/node/model-folder.js";
import { readTextFile } from "../io/node/read-file.js";
import type { RunFolder } from "../io/node/run-folder.js";
import { writeFileAtomic } from "../io/node/safetensors-file.js";
import type { RunFiles, RunStorage } from "../train/run-storage.js";
import { writeLossSvg } from "./plot.js";

/** Keeps the metrics rows up to `step` (a resumed run rewrites what came after its checkpoint). */
function truncateMetrics(path: string, step: number): void {
  if (!fs.existsSync(path)) return;
  const keep = readTextFile(path)
    .split("\n")
    .filter((line) => {
      try {
        return line !== "" && (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, keep.map((l) => `${l}\n`).join(""));
}

export class RunFolderStorage implements RunStorage {
  /** The output files written, by name. */
  written: string[] = [];
  /** The newest checkpoint this run saved, as the user named the run folder. */
  lastCheckpoint: string | null = null;

  constructor(
    private readonly folder: RunFolder,
    /** The run folder as the user gave it (for messages). */
    private readonly out: string,
    private readonly opts: {
      keep: number;
      /** The checkpoint's step when resuming: metrics after it are dropped. */
      resumeStep: number | null;
      /** A --full run's outputs are a model folder: its tokenizer files come from the base model. */
      tokenizerFrom: (Pick<ModelFolder, "tokenizerFiles"> & { dir?: string }) | null;
    },
  ) {
    const metrics = this.metricsPath();
    if (opts.resumeStep !== null) truncateMetrics(metrics, opts.resumeStep);
    else fs.writeFileSync(metrics, "");
    folder.record(["metrics.jsonl"]);
  }

  private metricsPath(): string {
    return join(this.folder.dir, "metrics.jsonl");
  }

  appendMetrics(row: Record<string, unknown>): void {
    fs.appendFileSync(this.metricsPath(), `${JSON.stringify(row)}\n`);
  }

  async saveCheckpoint(step: number, files: RunFiles): Promise<void> {
    writeCheckpoint(this.folder.dir, step, files, { keep: this.opts.keep });
    this.folder.record(["checkpoints"]);
    await this.plotLoss();
    this.folder.commit(); // an --overwrite run replaces the previous one now that it has a checkpoint
    this.lastCheckpoint = join(this.out, "checkpoints", `step-${step}`);
  }

  saveOutputs(files: RunFiles): void {
    for (const [name, data] of Object.entries(files)) writeFileAtomic(join(this.folder.dir, name), data);
    const from = this.opts.tokenizerFrom;
    const names = [...Object.keys(files), ...(from ? writeTokenizerFiles(from, this.folder.dir) : [])];
    this.folder.record(names);
    this.written = names;
  }

  /** Redraws loss.svg from metrics.jsonl; a chart that cannot be drawn never stops the run. */
  async plotLoss(): Promise<string[]> {
    try {
      await writeLossSvg(this.folder.dir, basename(resolve(this.out)));
      this.folder.record(["loss.svg"]);
      return ["loss.svg"];
    } catch (e) {
      console.error(`warning: loss.svg not written: ${(e as Error).message}`);
      return [];
    }
  }
}
