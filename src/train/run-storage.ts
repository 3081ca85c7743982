/**
 * Where a fine-tuning job stores what it makes: metrics rows, checkpoints and the final outputs.
 * The shells implement it over their storage (the CLI over a run folder on disk, the web page over
 * the browser's Origin Private File System); `MemoryRunStorage` keeps everything in memory, for tests
 * and for runs that are never written anywhere.
 */

/** A checkpoint's or an output's files: name -> bytes or text. */
export type RunFiles = Record<string, Uint8Array | string>;

export interface RunStorage {
  /** One row of metrics.jsonl: a step's {step, loss, lr, tokens, ...} or an evaluation's {step, val_loss, ...}. */
  appendMetrics(row: Record<string, unknown>): void | Promise<void>;
  /** The checkpoint of `step`: the weights plus trainer_state.json and optimizer.safetensors. */
  saveCheckpoint(step: number, files: RunFiles): void | Promise<void>;
  /** The trained adapter (or, --full, model folder) at the end of the run. */
  saveOutputs(files: RunFiles): void | Promise<void>;
}

export class MemoryRunStorage implements RunStorage {
  readonly metrics: Record<string, unknown>[] = [];
  readonly checkpoints = new Map<number, RunFiles>();
  outputs: RunFiles | null = null;

  appendMetrics(row: Record<string, unknown>): void {
    this.metrics.push(structuredClone(row));
  }

  saveCheckpoint(step: number, files: RunFiles): void {
    this.checkpoints.set(step, { ...files });
  }

  saveOutputs(files: RunFiles): void {
    this.outputs = { ...files };
  }

  /** The newest checkpoint, or null before the first. */
  latest(): { step: number; files: RunFiles } | null {
    const step = Math.max(...this.checkpoints.keys());
    return Number.isFinite(step) ? { step, files: this.checkpoints.get(step)! } : null;
  }
}
