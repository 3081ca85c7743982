/**
 * `lora train`'s storage of a fine-tuning job, over its run folder: metrics.jsonl, checkpoints
 * written atomically (older ones pruned), the outputs, and loss.svg redrawn at checkpoints (no more
 * often than keeps drawing under a tenth of the run's time) and at the end. A checkpoint is also the
 * moment an --overwrite run replaces the previous one.
 */
import fs from "node:fs";
import { basename, join, resolve } from "node:path";
import { listCheckpoints, writeCheckpoint } from "../io/node/checkpoint-folder.js";
import { faultPoint } from "../io/node/faults.js";
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
  /** When loss.svg was last drawn, and how long that took (ms). */
  private plotted = { at: Number.NEGATIVE_INFINITY, ms: 0 };

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
    folder.record(["metrics.jsonl"]); // listed before it is written, as every file of the run
    if (opts.resumeStep !== null) truncateMetrics(metrics, opts.resumeStep);
    else fs.writeFileSync(metrics, "");
  }

  private metricsPath(): string {
    return join(this.folder.dir, "metrics.jsonl");
  }

  appendMetrics(row: Record<string, unknown>): void {
    try {
      faultPoint("metrics");
      fs.appendFileSync(this.metricsPath(), `${JSON.stringify(row)}\n`);
    } catch (err) {
      throw this.stopped(`${join(this.out, "metrics.jsonl")}: cannot append: ${(err as Error).message}`, err);
    }
  }

  /**
   * A write that stopped the run (a full disk, most often): says which checkpoint the run can go on
   * from, and how. A resume rewrites metrics.jsonl from that checkpoint's step, so nothing is lost.
   */
  private stopped(message: string, cause: unknown): Error {
    const last = listCheckpoints(this.folder.dir).at(-1);
    let code: unknown;
    for (
      let e = cause as { code?: unknown; cause?: unknown } | undefined;
      e && !code;
      e = e.cause as typeof e
    )
      code = e.code;
    const fix = code === "ENOSPC" || code === "EDQUOT" ? "free some space" : "fix that";
    const next = this.folder.staged
      ? "" // the shell says where the previous run and the new one are
      : last
        ? `; ${fix}, then continue the run from step ${last.step} with: lora train --resume ${this.out}`
        : `; no checkpoint was saved yet: ${fix} and start the run again`;
    // the write's own advice ("free some space ... then retry") gives way to this one
    const said = next ? message.replace("; free some space or write elsewhere, then retry", "") : message;
    return new Error(`${said}${next}`, { cause });
  }

  async saveCheckpoint(step: number, files: RunFiles): Promise<void> {
    try {
      // recorded first: a run killed while writing its first checkpoint is still ours to replace
      this.folder.record(["checkpoints"]);
      writeCheckpoint(this.folder.dir, step, files, { keep: this.opts.keep });
    } catch (err) {
      throw this.stopped((err as Error).message, err);
    }
    // with a checkpoint every step or two on a small model, drawing at each would take most of the run
    if (performance.now() - this.plotted.at >= 10 * this.plotted.ms) await this.plotLoss();
    this.folder.commit(); // an --overwrite run replaces the previous one now that it has a checkpoint
    this.lastCheckpoint = join(this.out, "checkpoints", `step-${step}`);
  }

  saveOutputs(files: RunFiles): void {
    // each name is listed in the run's marker before it is written: a run killed midway is still ours
    try {
      this.folder.record(Object.keys(files));
      for (const [name, data] of Object.entries(files)) {
        faultPoint("outputs");
        writeFileAtomic(join(this.folder.dir, name), data);
      }
    } catch (err) {
      throw this.stopped((err as Error).message, err);
    }
    const from = this.opts.tokenizerFrom;
    const tokenizer = from ? writeTokenizerFiles(from, this.folder.dir, (n) => this.folder.record(n)) : [];
    const names = [...Object.keys(files), ...tokenizer];
    this.written = names;
  }

  /** Redraws loss.svg from metrics.jsonl; a chart that cannot be drawn never stops the run. */
  async plotLoss(): Promise<string[]> {
    const t0 = performance.now();
    try {
      this.folder.record(["loss.svg"]);
      await writeLossSvg(this.folder.dir, basename(resolve(this.out)));
      this.plotted = { at: performance.now(), ms: performance.now() - t0 };
      return ["loss.svg"];
    } catch (e) {
      console.error(`warning: loss.svg not written: ${(e as Error).message}`);
      return [];
    }
  }
}
