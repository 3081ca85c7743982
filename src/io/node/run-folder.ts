/**
 * The folder a training run writes (`lora train --out`), kept safe for the user's files:
 * - a run leaves a marker (`.lora-run.json`) that lists the names it wrote, so a later `--overwrite`
 *   removes exactly those and never a file that `lora train` did not write;
 * - a folder that holds a model or adapter we did not write is never a run folder;
 * - `--out` may not hold (or be) a path the run reads;
 * - `--overwrite` trains into a hidden sibling folder and swaps it in only once the new run has a
 *   checkpoint: a run that fails before then leaves the previous one as it was.
 */
import fs from "node:fs";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { CHECKPOINT_FORMAT } from "../checkpoint.js";
import { listCheckpoints } from "./checkpoint-folder.js";
import { readTextFile } from "./read-file.js";

export const RUN_MARKER = ".lora-run.json";
const RUN_FORMAT = "lora-ts-run";

/** Names a run may write in its folder. */
export const RUN_FILES = [
  "adapter_config.json",
  "adapter_model.safetensors",
  "metrics.jsonl",
  "checkpoints",
  "loss.svg",
];
/** A model or adapter that someone else wrote: a folder holding one is never taken for a run. */
const FOREIGN_SIGNS = [
  "config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "adapter_config.json",
  "adapter_model.safetensors",
  "adapter_model.bin",
  "tokenizer.json",
];

interface Marker {
  format: typeof RUN_FORMAT;
  files: string[];
}

/** What an --out folder holds now. */
export type OutState =
  | { kind: "empty" }
  | { kind: "run"; files: string[] }
  | { kind: "foreign"; files: string[] };

function readMarker(dir: string): Marker | null {
  try {
    const m = JSON.parse(readTextFile(join(dir, RUN_MARKER))) as Marker;
    return m.format === RUN_FORMAT && Array.isArray(m.files) ? m : null;
  } catch {
    return null;
  }
}

/** A run written before the marker existed: it has one of our checkpoints. */
function isLegacyRun(dir: string): boolean {
  return listCheckpoints(dir).some(({ dir: c }) => {
    try {
      const s = JSON.parse(readTextFile(join(c, "trainer_state.json"))) as { format?: string };
      return s.format === CHECKPOINT_FORMAT;
    } catch {
      return false;
    }
  });
}

/** Reads an --out folder: empty (or absent), a run of ours (with the files it wrote), or someone else's. */
export function inspectOut(dir: string): OutState {
  if (!fs.existsSync(dir)) return { kind: "empty" };
  if (!fs.statSync(dir).isDirectory()) return { kind: "foreign", files: [basename(dir)] };
  const names = fs.readdirSync(dir);
  const marker = readMarker(dir);
  if (marker) return { kind: "run", files: marker.files.filter((f) => names.includes(f)) };
  if (isLegacyRun(dir)) return { kind: "run", files: RUN_FILES.filter((f) => names.includes(f)) };
  const clash = names.filter((n) => FOREIGN_SIGNS.includes(n) || RUN_FILES.includes(n));
  return clash.length > 0 ? { kind: "foreign", files: clash } : { kind: "empty" };
}

const real = (p: string) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return resolve(p);
  }
};
const within = (inner: string, outer: string) => {
  const rel = relative(outer, inner);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith(sep) && rel !== "..");
};

/**
 * Refuses an --out that is, or holds, one of the paths the run reads (the model folder, an adapter,
 * the data): writing there could replace what is being read.
 */
export function checkOutSeparate(out: string, reads: Record<string, string | null | undefined>): void {
  const o = real(out);
  for (const [flag, path] of Object.entries(reads)) {
    if (!path) continue;
    const p = real(path);
    if (within(p, o)) {
      const what = p === o ? `is the ${flag} folder` : `holds the --${flag} path ${path}`;
      throw new RunFolderError(
        `--out ${out} ${what}; lora train never writes where it reads: choose another --out (a new folder)`,
      );
    }
  }
}

export class RunFolderError extends Error {
  override name = "UsageError";
}

/**
 * A run's output folder. Writes go to `dir`; with a previous run to replace, `dir` is a hidden
 * sibling until `commit()` (called after the first checkpoint) moves the new files into `out`.
 */
export class RunFolder {
  private written = new Set<string>();
  private staging: string | null;

  private constructor(
    readonly out: string,
    private readonly previous: string[] | null,
  ) {
    this.staging = previous ? join(dirname(out), `.${basename(out)}.lora-new-${process.pid}`) : null;
  }

  /**
   * Opens `out` for a new run. A run of ours already there is replaced only with `overwrite`; a
   * folder holding someone else's model, adapter or files of the names we write is refused.
   */
  static create(out: string, overwrite: boolean): RunFolder {
    const state = RunFolder.check(out, overwrite);
    removeStaleStaging(out);
    const folder = new RunFolder(out, state.kind === "run" ? state.files : null);
    fs.mkdirSync(folder.dir, { recursive: true });
    folder.record([]);
    return folder;
  }

  /** Throws unless `out` may take a new run (see create); touches nothing. */
  static check(out: string, overwrite: boolean): OutState {
    const state = inspectOut(out);
    if (state.kind === "foreign") {
      throw new RunFolderError(
        `--out ${out} holds files that lora train did not write (${state.files.join(", ")}); it may be a model or adapter folder, which lora train never replaces: choose another --out (a new folder)`,
      );
    }
    if (state.kind === "run" && !overwrite) {
      throw new RunFolderError(
        `--out ${out} already holds a training run (${state.files.join(", ")}); pass --resume ${out} to continue it, --overwrite to replace it (the old run stays until the new one has its first checkpoint), or choose another --out`,
      );
    }
    return state;
  }

  /** Reopens the run folder that holds a checkpoint, for a resume: writes go straight there. */
  static resume(out: string): RunFolder {
    const folder = new RunFolder(out, null);
    const marker = readMarker(out);
    for (const f of marker?.files ?? RUN_FILES.filter((n) => fs.existsSync(join(out, n))))
      folder.written.add(f);
    folder.record([]);
    return folder;
  }

  /** Where files are written now. */
  get dir(): string {
    return this.staging ?? this.out;
  }

  /** True while the new run is kept aside (a previous run is still in `out`). */
  get staged(): boolean {
    return this.staging !== null;
  }

  /** Notes names written into the folder (top-level entries), in the marker. */
  record(names: string[]): void {
    for (const n of names) this.written.add(n);
    const marker: Marker = { format: RUN_FORMAT, files: [...this.written].sort() };
    fs.writeFileSync(join(this.dir, RUN_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
  }

  /**
   * Swaps the new run in: the previous run's files move aside, the new ones move into `out`, then
   * the old ones are deleted. Files in `out` that no run wrote stay where they are.
   */
  commit(): void {
    if (!this.staging) return;
    const staging = this.staging;
    const trash = join(dirname(this.out), `.${basename(this.out)}.lora-old-${process.pid}`);
    fs.mkdirSync(this.out, { recursive: true });
    fs.mkdirSync(trash, { recursive: true });
    for (const f of [...(this.previous ?? []), RUN_MARKER]) {
      if (fs.existsSync(join(this.out, f))) fs.renameSync(join(this.out, f), join(trash, f));
    }
    for (const f of fs.readdirSync(staging)) fs.renameSync(join(staging, f), join(this.out, f));
    this.staging = null;
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(trash, { recursive: true, force: true });
  }

  /** After a failure: drops a staged new run (the previous run was never touched). */
  abandon(): void {
    if (!this.staging) return;
    fs.rmSync(this.staging, { recursive: true, force: true });
    this.staging = null;
  }
}

/** Staging folders of runs that were killed before their first checkpoint (their process is gone). */
function removeStaleStaging(out: string): void {
  const parent = dirname(out);
  if (!fs.existsSync(parent)) return;
  const prefix = `.${basename(out)}.lora-`;
  for (const name of fs.readdirSync(parent)) {
    const m = /^(?:new|old)-(\d+)$/.exec(name.startsWith(prefix) ? name.slice(prefix.length) : "");
    if (!m || alive(Number(m[1])) || !readMarker(join(parent, name))) continue;
    fs.rmSync(join(parent, name), { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
