/**
 * File names taken from a file (a shard index's weight_map, an adapter folder a client names) must stay
 * in their folder: a plain name, no `..`, no absolute path, and no symbolic link whose target lies
 * outside the folder. One exception keeps Hugging Face's hub cache working: a snapshot folder
 * (`<repo>/snapshots/<revision>/`) links every file to `<repo>/blobs/`, which counts as inside.
 */
import { existsSync, realpathSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, sep } from "node:path";
import { InputError } from "../input-error.js";

/** Whether path `p` is `root` or lies under it (both already resolved). */
export function isInside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/** The folders a file of `dir` may resolve into: its own, and the blobs of a hub snapshot. */
function allowedRoots(dir: string): string[] {
  const real = realpathSync(dir);
  const parent = dirname(real);
  return basename(parent) === "snapshots" ? [real, join(dirname(parent), "blobs")] : [real];
}

/**
 * The path of `name`, a file name that `source` (a file in `dir`) gives, after checking that it names a
 * file in `dir` and, where it exists, that it does not lead out of it. Throws an InputError naming
 * `source` otherwise.
 */
export function fileInFolder(dir: string, name: unknown, source: string, what: string): string {
  const refuse = (why: string): never => {
    throw new InputError(source, `${what} ${JSON.stringify(name)} is not a file name in this folder${why}`);
  };
  if (typeof name !== "string" || name === "" || name === "." || name === "..") return refuse("");
  if (name.includes("\0")) return refuse(" (it holds a NUL character)");
  if (isAbsolute(name) || /[/\\]/.test(name))
    return refuse(" (it is a path, and may lead out of the folder)");
  const path = join(dir, name);
  if (!existsSync(path)) return path; // the reader reports a missing file
  const real = realpathSync(path);
  if (!allowedRoots(dir).some((root) => isInside(root, real)))
    refuse(`: it is a symbolic link to ${real}, outside the folder`);
  return path;
}
