/**
 * The folder a training run writes (`lora train --out`), kept safe for the user's files:
 * - a run leaves a marker (`.lora-run.json`) that lists the names it wrote, so a later `--overwrite`
 *   removes exactly those and never a file that `lora train` did not write;
 * - a folder that holds a model or adapter we did not write is never a run folder;
 * - `--out` may not hold (or be) a path the run reads;
 * - `--overwrite` trains into a hidden sibling folder and swaps it in only once the new run has a
 *   checkpoint: a run that fails before then leaves the previous one as it was. The swap is journaled
 *   (`.lora-commit.json` in the run folder): a swap that fails is undone, and one cut short by a crash
 *   is finished by the next `lora train` on that folder, so neither run is ever lost.
 */

import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { CHECKPOINT_FORMAT } from "../checkpoint.js";
import { listCheckpoints, removeTempCheckpoints } from "./checkpoint-folder.js";
import { readTextFile } from "./read-file.js";
import { writeFileAtomic } from "./safetensors-file.js";

export const RUN_MARKER = ".lora-run.json";
const JOURNAL = ".lora-commit.json";
const RUN_FORMAT = "lora-ts-run";

/** Names a run may write in its folder. */
export const RUN_FILES = [
  "adapter_config.json",
  "adapter_model.safetensors",
  "metrics.jsonl",
  "loss.svg",
  "checkpoints",
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
  recoverCommit(dir);
  const names = fs.readdirSync(dir);
  const ours = (n: string) => FOREIGN_SIGNS.includes(n) || RUN_FILES.includes(n);
  const marker = readMarker(dir);
  if (marker) {
    // a model, adapter or run file the marker does not list is someone else's: never replaced
    const unlisted = names.filter((n) => ours(n) && !marker.files.includes(n));
    if (unlisted.length > 0) return { kind: "foreign", files: unlisted };
    return { kind: "run", files: marker.files.filter((f) => names.includes(f)) };
  }
  if (isLegacyRun(dir)) {
    const files = RUN_FILES.filter((f) => names.includes(f));
    const unlisted = names.filter((n) => ours(n) && !files.includes(n));
    return unlisted.length > 0 ? { kind: "foreign", files: unlisted } : { kind: "run", files };
  }
  const clash = names.filter(ours);
  return clash.length > 0 ? { kind: "foreign", files: clash } : { kind: "empty" };
}

/**
 * The folder a path names, through symlinks (as given, made absolute, when it does not exist yet):
 * siblings are made beside it, on its filesystem, and paths are compared by it.
 */
const target = (p: string) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return resolve(p);
  }
};
/** A hidden sibling of `out` for a swap: unique even when process ids repeat (containers). */
const sibling = (out: string, kind: "new" | "old") =>
  join(
    dirname(target(out)),
    `.${basename(target(out))}.lora-${kind}-${process.pid}-${randomBytes(4).toString("hex")}`,
  );

interface Journal {
  staging: string;
  trash: string;
  previous: string[];
}

/**
 * Finishes a swap that a crash cut short (a journal in `dir`): the new run had its checkpoint, so it
 * goes in; the previous run's files go to the trash folder, which is removed last.
 */
function recoverCommit(dir: string): void {
  if (!fs.existsSync(join(dir, JOURNAL))) return;
  const j = JSON.parse(readTextFile(join(dir, JOURNAL))) as Journal;
  moveAll(dir, j.trash, [...j.previous, RUN_MARKER]);
  if (fs.existsSync(j.staging)) moveAll(j.staging, dir, fs.readdirSync(j.staging));
  fs.rmSync(join(dir, JOURNAL), { force: true });
  fs.rmSync(j.staging, { recursive: true, force: true });
  fs.rmSync(j.trash, { recursive: true, force: true });
}

/**
 * Moves the `names` that exist in `from` into `to`, noting each in `moved` as it goes (so that a
 * failure midway still says what moved, for the undo); returns `moved`.
 */
function moveAll(from: string, to: string, names: string[], moved: string[] = []): string[] {
  fs.mkdirSync(to, { recursive: true });
  for (const n of names) {
    if (!fs.existsSync(join(from, n))) continue;
    fs.renameSync(join(from, n), join(to, n));
    moved.push(n);
  }
  return moved;
}

const within = (inner: string, outer: string) => {
  const rel = relative(outer, inner);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith(sep) && rel !== "..");
};

/**
 * Refuses an --out that is, or holds, one of the paths the run reads (the model folder, an adapter,
 * the data): writing there could replace what is being read.
 */
export function checkOutSeparate(
  out: string,
  reads: Record<string, string | null | undefined>,
  command = "lora train",
): void {
  const o = target(out);
  for (const [flag, path] of Object.entries(reads)) {
    if (!path) continue;
    const p = target(path);
    if (within(p, o)) {
      const what = p === o ? `is the ${flag} folder` : `holds the --${flag} path ${path}`;
      throw new RunFolderError(
        `--out ${out} ${what}; ${command} never writes where it reads: choose another --out (a new folder)`,
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
    this.staging = previous ? sibling(out, "new") : null;
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
      const resumable = listCheckpoints(out).length > 0;
      throw new RunFolderError(
        resumable
          ? `--out ${out} already holds a training run (${state.files.join(", ")}); pass --resume ${out} to continue it, --overwrite to replace it (the old run stays until the new one has its first checkpoint), or choose another --out`
          : `--out ${out} holds a run that stopped before its first checkpoint (${state.files.join(", ")}), so it cannot be resumed; pass --overwrite to replace it, or choose another --out`,
      );
    }
    return state;
  }

  /**
   * Reopens the run folder that holds a checkpoint, for a resume: writes go straight there. It must be
   * a run of ours (a checkpoint copied into someone's folder does not make that folder a run).
   */
  static resume(out: string): RunFolder {
    const state = inspectOut(out);
    if (state.kind !== "run")
      throw new RunFolderError(
        `--resume: ${out} is not a run folder of lora train${state.kind === "foreign" ? ` (it holds ${state.files.join(", ")}, which no run wrote)` : ""}; resume a run folder or a checkpoint inside its checkpoints/`,
      );
    removeLeftovers(out);
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
    // atomic: a crash while it is written must not leave a marker that no longer reads
    writeFileAtomic(join(this.dir, RUN_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
  }

  /**
   * Swaps the new run in: the previous run's files move aside, the new ones move into `out`, then the
   * old ones are deleted. Files in `out` that no run wrote stay where they are. The swap is journaled:
   * if a move fails, what moved is moved back and the previous run is whole again; if the process
   * dies midway, the next inspectOut of `out` finishes it.
   */
  commit(): void {
    if (!this.staging) return;
    const staging = this.staging;
    const dir = target(this.out);
    const trash = sibling(this.out, "old");
    const previous = this.previous ?? [];
    const incoming = fs.readdirSync(staging);
    const clash = incoming.filter(
      (n) => n !== RUN_MARKER && !previous.includes(n) && fs.existsSync(join(dir, n)),
    );
    if (clash.length > 0)
      throw new RunFolderError(
        `--out ${this.out}: ${clash.join(", ")} appeared there during the run; it is not replaced`,
      );
    fs.mkdirSync(dir, { recursive: true });
    writeFileAtomic(join(dir, JOURNAL), JSON.stringify({ staging, trash, previous } satisfies Journal));
    const away: string[] = [];
    const moved: string[] = [];
    try {
      moveAll(dir, trash, [...previous, RUN_MARKER], away);
      moveAll(staging, dir, incoming, moved);
    } catch (err) {
      // undo: the new run back to staging, the previous run back in place
      moveAll(dir, staging, moved);
      moveAll(trash, dir, away);
      fs.rmSync(join(dir, JOURNAL), { force: true });
      fs.rmSync(trash, { recursive: true, force: true });
      throw err;
    }
    this.staging = null;
    fs.rmSync(join(dir, JOURNAL), { force: true });
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(trash, { recursive: true, force: true });
  }

  /**
   * After a failure: drops a staged new run that has no checkpoint (the previous run was never
   * touched). One with a checkpoint is kept, and its folder returned, so that it can be resumed.
   */
  abandon(): string | null {
    const staging = this.staging;
    if (!staging) return null;
    this.staging = null;
    if (listCheckpoints(staging).length > 0) return staging;
    fs.rmSync(staging, { recursive: true, force: true });
    return null;
  }
}

/**
 * What a run killed mid-write left in its folder, for a resume: the temporary checkpoint folders and
 * the temporary files of atomic writes (NAME.tmp-PID-HEX) of processes that are gone.
 */
function removeLeftovers(dir: string): void {
  removeTempCheckpoints(dir, { all: false });
  for (const name of fs.readdirSync(dir)) {
    const m = /\.tmp-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || (Number(m[1]) !== process.pid && alive(Number(m[1])))) continue;
    fs.rmSync(join(dir, name), { force: true });
  }
}

/**
 * Staging folders of runs that were killed before their first checkpoint (their process is gone, and
 * no journal of a swap names them). A trash folder is only ever removed by the swap that made it.
 */
function removeStaleStaging(out: string): void {
  const dir = target(out);
  const parent = dirname(dir);
  if (!fs.existsSync(parent)) return;
  const prefix = `.${basename(dir)}.lora-new-`;
  for (const name of fs.readdirSync(parent)) {
    const m = /^(\d+)-[0-9a-f]+$/.exec(name.startsWith(prefix) ? name.slice(prefix.length) : "");
    // our own id on a folder we have not made yet: a process of an earlier run (ids repeat)
    const pid = Number(m?.[1]);
    if (!m || (pid !== process.pid && alive(pid)) || !readMarker(join(parent, name))) continue;
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
