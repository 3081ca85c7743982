/**
 * Checkpoint folders on disk: <run>/checkpoints/step-N/. A checkpoint is written into a hidden
 * temporary folder, each file synced, and only then renamed to step-N, so a crash or a full disk at
 * any moment leaves every earlier checkpoint whole and no half-written step-N. Old ones are pruned
 * after the new one is in place, each first renamed to a temporary name, so that a crash midway
 * never leaves a step-N with some of its files deleted. Temporary folders (".tmp-...") are never
 * read as checkpoints; the next checkpoint, or a resume, deletes those of a process that is gone.
 */
import fs from "node:fs";
import { basename, join } from "node:path";
import { faultPoint } from "./faults.js";
import { writeFileAtomic } from "./safetensors-file.js";

export type Files = Record<string, Uint8Array | string>;

const STEP = /^step-(\d+)$/;
const COMPLETE_MARK = "trainer_state.json";

/** Complete checkpoints of a run folder, oldest first. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  const root = join(runDir, "checkpoints");
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((name) => ({ m: STEP.exec(name), dir: join(root, name) }))
    .filter(({ m, dir }) => m && fs.existsSync(join(dir, COMPLETE_MARK)))
    .map(({ m, dir }) => ({ step: Number(m![1]), dir }))
    .sort((a, b) => a.step - b.step);
}

/** A checkpoint folder itself, or the newest complete one of a run folder. */
export function resolveCheckpoint(path: string): string {
  if (fs.existsSync(join(path, COMPLETE_MARK))) return path;
  const all = listCheckpoints(path);
  if (all.length > 0) return all.at(-1)!.dir;
  throw new Error(
    `${path}: no checkpoint here; pass a checkpoint folder (<out>/checkpoints/step-N) or a run folder that has one`,
  );
}

/** The run folder a checkpoint folder belongs to (<run>/checkpoints/step-N -> <run>). */
export function runDirOf(checkpointDir: string): string {
  const parent = join(checkpointDir, "..");
  return basename(parent) === "checkpoints" ? join(parent, "..") : parent;
}

/**
 * Writes `files` as <runDir>/checkpoints/step-<step>, then keeps only the newest `keep` (0 keeps all).
 * `write` is injectable so tests can make the disk "fill up".
 */
export function writeCheckpoint(
  runDir: string,
  step: number,
  files: Files,
  opts: { keep?: number; write?: (path: string, data: Uint8Array | string) => void } = {},
): string {
  const root = join(runDir, "checkpoints");
  fs.mkdirSync(root, { recursive: true });
  removeTempCheckpoints(runDir, { all: true });
  const final = join(root, `step-${step}`);
  const tmp = join(root, `.tmp-step-${step}-${process.pid}`);
  const replaced = join(root, `.tmp-replaced-step-${step}-${process.pid}`);
  const write = opts.write ?? writeFileAtomic;
  try {
    fs.mkdirSync(tmp);
    // trainer_state.json marks a complete checkpoint, so it is written last.
    const names = Object.keys(files).sort(
      (a, b) => Number(a === COMPLETE_MARK) - Number(b === COMPLETE_MARK),
    );
    for (const name of names) {
      faultPoint("checkpoint-file");
      write(join(tmp, name), files[name]!);
    }
    faultPoint("checkpoint-rename");
    // a checkpoint of this step already there (a resume from an earlier one) is replaced whole
    if (fs.existsSync(final)) fs.renameSync(final, replaced);
    fs.renameSync(tmp, final);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (fs.existsSync(replaced) && !fs.existsSync(final)) fs.renameSync(replaced, final);
    const last = listCheckpoints(runDir).at(-1);
    throw new Error(
      `could not save the checkpoint of step ${step}: ${(err as Error).message}; ` +
        (last
          ? `the previous checkpoint, of step ${last.step} (${last.dir}), is intact`
          : "no earlier checkpoint of this run was saved"),
      { cause: err },
    );
  }
  fs.rmSync(replaced, { recursive: true, force: true });
  const keep = opts.keep ?? 0;
  if (keep > 0) {
    for (const old of listCheckpoints(runDir).slice(0, -keep)) {
      const gone = join(root, `.tmp-pruned-${basename(old.dir)}-${process.pid}`);
      fs.renameSync(old.dir, gone);
      faultPoint("prune");
      fs.rmSync(gone, { recursive: true });
    }
  }
  return final;
}

/**
 * Deletes the temporary folders in <runDir>/checkpoints: a checkpoint being written, an old one
 * being pruned or replaced. `all` deletes every one (the writer is about to make its own); without
 * it, only those of processes that are gone (a resume after a crash).
 */
export function removeTempCheckpoints(runDir: string, opts: { all: boolean }): string[] {
  const root = join(runDir, "checkpoints");
  if (!fs.existsSync(root)) return [];
  const removed: string[] = [];
  for (const name of fs.readdirSync(root)) {
    if (!name.startsWith(".tmp-")) continue;
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (!opts.all && pid !== process.pid && processAlive(pid)) continue;
    fs.rmSync(join(root, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Whether a process of this id runs now (so its temporary files may still be in use). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
