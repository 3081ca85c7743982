/**
 * The page's RunStorage over the browser's Origin Private File System, so that a reload or a closed
 * tab resumes where training stopped. One run lives in the folder `lora-run/`:
 *
 *   source.json                 what was trained (the demo, or a picked folder's name) and the settings
 *   metrics.jsonl               the job's metrics rows (written at each checkpoint and at the end)
 *   checkpoints/step-N/...      the newest checkpoint (weights, trainer_state.json, optimizer.safetensors)
 *   latest.json                 {"step": N}: written after step-N's files, so a torn checkpoint is never read
 *   outputs/...                 the trained adapter; with them, latest.json says {"step": N, "done": true}
 */
import type { RunFiles, RunStorage } from "../../src/index.js";

const RUN = "lora-run";

async function runDir(create: boolean): Promise<FileSystemDirectoryHandle | null> {
  const root = await navigator.storage.getDirectory();
  try {
    return await root.getDirectoryHandle(RUN, { create });
  } catch {
    return null;
  }
}

async function writeFile(dir: FileSystemDirectoryHandle, name: string, data: Uint8Array | string) {
  const handle = await dir.getFileHandle(name, { create: true });
  const w = await handle.createWritable();
  await w.write(typeof data === "string" ? data : new Uint8Array(data));
  await w.close();
}

async function readDir(dir: FileSystemDirectoryHandle): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for await (const [name, h] of (
    dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }
  ).entries())
    if (h.kind === "file")
      out[name] = new Uint8Array(await (await (h as FileSystemFileHandle).getFile()).arrayBuffer());
  return out;
}

export interface SavedRun {
  source: Record<string, unknown>;
  step: number;
  files: Record<string, Uint8Array>;
}

export class OpfsRunStorage implements RunStorage {
  private rows: string[] = [];

  private constructor(private readonly dir: FileSystemDirectoryHandle) {}

  /** A fresh run: the previous one is removed. */
  static async create(source: Record<string, unknown>): Promise<OpfsRunStorage> {
    await OpfsRunStorage.clear();
    const dir = (await runDir(true))!;
    await writeFile(dir, "source.json", JSON.stringify(source));
    return new OpfsRunStorage(dir);
  }

  /** The stored run, continued: metrics after its checkpoint's step are dropped. */
  static async resume(step: number): Promise<OpfsRunStorage> {
    const dir = (await runDir(true))!;
    const s = new OpfsRunStorage(dir);
    try {
      const text = await (await (await dir.getFileHandle("metrics.jsonl")).getFile()).text();
      s.rows = text.split("\n").filter((l) => l !== "" && (JSON.parse(l) as { step: number }).step <= step);
    } catch {
      s.rows = [];
    }
    return s;
  }

  static async clear(): Promise<void> {
    const root = await navigator.storage.getDirectory();
    await root.removeEntry(RUN, { recursive: true }).catch(() => {});
  }

  /** The stored run's source and newest complete checkpoint, or null (also when the run finished). */
  static async saved(): Promise<SavedRun | null> {
    const dir = await runDir(false);
    if (!dir) return null;
    try {
      const text = async (name: string) => (await (await dir.getFileHandle(name)).getFile()).text();
      const { step, done } = JSON.parse(await text("latest.json")) as { step: number; done?: boolean };
      if (done) return null;
      const source = JSON.parse(await text("source.json")) as Record<string, unknown>;
      const ckpts = await dir.getDirectoryHandle("checkpoints");
      return { source, step, files: await readDir(await ckpts.getDirectoryHandle(`step-${step}`)) };
    } catch {
      return null;
    }
  }

  /** The stored metrics rows (for redrawing the chart after a reload). */
  get metrics(): Record<string, unknown>[] {
    return this.rows.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  appendMetrics(row: Record<string, unknown>): void {
    this.rows.push(JSON.stringify(row));
  }

  private async flushMetrics(): Promise<void> {
    await writeFile(this.dir, "metrics.jsonl", this.rows.map((l) => `${l}\n`).join(""));
  }

  async saveCheckpoint(step: number, files: RunFiles): Promise<void> {
    const ckpts = await this.dir.getDirectoryHandle("checkpoints", { create: true });
    const name = `step-${step}`;
    await ckpts.removeEntry(name, { recursive: true }).catch(() => {});
    const d = await ckpts.getDirectoryHandle(name, { create: true });
    for (const [f, data] of Object.entries(files)) await writeFile(d, f, data);
    await this.flushMetrics();
    await writeFile(this.dir, "latest.json", JSON.stringify({ step }));
    // only the newest checkpoint is kept: a tab's storage quota is small
    for await (const key of (ckpts as unknown as { keys(): AsyncIterable<string> }).keys())
      if (key !== name) await ckpts.removeEntry(key, { recursive: true });
  }

  async saveOutputs(files: RunFiles): Promise<void> {
    const d = await this.dir.getDirectoryHandle("outputs", { create: true });
    for (const [f, data] of Object.entries(files)) await writeFile(d, f, data);
    await this.flushMetrics();
    // a finished run is not offered for resuming
    const latest = JSON.parse(await (await (await this.dir.getFileHandle("latest.json")).getFile()).text());
    await writeFile(this.dir, "latest.json", JSON.stringify({ ...latest, done: true }));
  }
}
