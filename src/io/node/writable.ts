/**
 * Whether a run can write where it is told to, checked before any training starts: a read-only
 * --out (a read-only mount, a folder without write permission) is refused while nothing has been
 * written and no time spent, rather than failing at the first checkpoint.
 */
import fs from "node:fs";
import { dirname, join, resolve } from "node:path";

/** The folder itself when it exists, else its nearest existing ancestor (where mkdir -p would create it). */
function existingFolder(path: string): string {
  let p = resolve(path);
  while (!fs.existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

const REASONS: Record<string, string> = {
  EROFS: "a read-only file system",
  EACCES: "no write permission",
  EPERM: "no write permission",
  ENOSPC: "the disk is full",
  EDQUOT: "the disk quota is used up",
};

/** Why `dir` cannot take a new entry (tried by making and removing an empty folder), or null when it can. */
export function cannotWrite(dir: string): string | null {
  try {
    fs.rmdirSync(fs.mkdtempSync(join(dir, ".lora-write-check-")));
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    return REASONS[code] ?? (err as Error).message;
  }
}

/**
 * Throws, naming the folder, unless a run can write `out`: the folder (or the nearest existing folder
 * it would be made in) and, with `sibling`, the folder beside it where an --overwrite run is staged.
 */
export function checkWritable(out: string, opts: { sibling: boolean; flag?: string }): void {
  const flag = opts.flag ?? "--out";
  const dirs = [existingFolder(out)];
  if (opts.sibling) dirs.push(existingFolder(dirname(resolve(out))));
  for (const dir of new Set(dirs)) {
    const why = cannotWrite(dir);
    if (why)
      throw new WritableError(
        `${flag} ${out}: cannot write in ${dir} (${why}); nothing was trained or written: make that folder writable or choose another ${flag}`,
      );
  }
}

export class WritableError extends Error {
  override name = "UsageError";
}
